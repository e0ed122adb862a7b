"""Shared helpers of the benchmarks: the sandbox env, generated hub repos, a Prefect server and worker
of our own, process-tree memory sampling, timing and table printing. Nothing here runs on import."""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "tests"):  # the project, and tests/helpers (copies of the example repo)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from helpers.example_repo import copy_example_repo  # noqa: E402 (found through the sys.path entry above)
from helpers.fleet_repo import LEAN_VALUES, SANDBOX_REGISTRY  # noqa: E402
from helpers.fleet_repo import commit as git_commit_all  # noqa: E402

BENCH_DIR = Path(os.environ.get("HUBPLOY_BENCH_DIR", "/var/cache/hubploy/bench"))
CLASSIC_VENV = Path(os.environ.get("HUBPLOY_BENCH_CLASSIC_VENV", BENCH_DIR / "classic-venv"))
PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "hubploy-process"


def say(*parts: object) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time as helm or Prefect print it (nanoseconds and a trailing Z allowed)."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(ch for ch in rest if ch.isdigit())
        tz = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tz}"
    value = datetime.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


# --- sandbox ----------------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    paths: Any
    env: dict[str, str]

    @property
    def registry(self) -> str:
        return self.env["HUBPLOY_REGISTRY"]

    @property
    def helm(self) -> str:
        return self.env["HELM_EXECUTABLE"]

    def base_image(self) -> str:
        from hubploy_sandbox.images import BASE_REPOSITORY, BASE_TAG

        return f"{self.registry}/{BASE_REPOSITORY}:{BASE_TAG}"

    def contexts(self) -> tuple[str, ...]:
        """The kube context of each of the sandbox's clusters: sandbox, sandbox-2, ..."""
        return tuple(cluster.name for cluster in self.paths.clusters())

    def placement(self) -> Placement:
        """Hubs spread over every cluster of the sandbox."""
        return Placement(self.contexts(), Path(self.env["KUBECONFIG"]))

    def process_groups(self) -> dict[str, list[int]]:
        """The sandbox's processes: each cluster's agent (with the pods' processes it runs: JupyterHub, CHP),
        and the control planes (etcd, API server, controller manager, scheduler)."""
        from hubploy_sandbox import lifecycle

        groups: dict[str, list[int]] = {"sandbox agents and pods": [], "sandbox control planes": []}
        for component in lifecycle.status(self.paths):
            if component.pid is not None and component.name != "registry":
                agent = component.name.startswith("agent")
                groups["sandbox agents and pods" if agent else "sandbox control planes"].append(component.pid)
        return groups


def sandbox(helm_major: int = 3) -> Sandbox:
    """The running sandbox's environment; ``helm_major`` picks the helm both tools run (hubploy through
    HELM_EXECUTABLE, classic hubploy as ``helm`` on PATH)."""
    from hubploy.runner import child_env
    from hubploy_sandbox import lifecycle
    from hubploy_sandbox.env import sandbox_env
    from hubploy_sandbox.images import ensure_base_image
    from hubploy_sandbox.paths import SandboxPaths

    paths = SandboxPaths.from_env()
    if not lifecycle.healthy(paths):
        sys.exit("the sandbox is not running: `.venv/bin/hubploy sandbox up` first")
    env = child_env(sandbox_env(paths))
    if helm_major != 3:
        chosen = Path(env["HELM_EXECUTABLE"]).with_name(f"helm{helm_major}")
        on_path = BENCH_DIR / f"helm{helm_major}-as-helm"
        on_path.mkdir(parents=True, exist_ok=True)
        if not (on_path / "helm").exists():
            (on_path / "helm").symlink_to(chosen)
        env = {**env, "HELM_EXECUTABLE": str(chosen), "PATH": f"{on_path}:{env['PATH']}"}
    ensure_base_image(paths, env)
    return Sandbox(paths, env)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        list(argv),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        )
    return out


# --- classic hubploy ------------------------------------------------------------------------------------

# PyPI hubploy 0.4 declares no versions, and imports at module load kubernetes, ruamel.yaml, boto3, docker
# and repo2docker. Resolved freely, pip backtracks for minutes through botocore's releases: the newest
# kubernetes (37.x) asks for python-dateutil >= 3.0, botocore for < 3.0. kubernetes < 33 does not.
CLASSIC_PACKAGES = ("kubernetes<33", "ruamel.yaml", "boto3", "docker", "jupyter-repo2docker")


def ensure_classic_venv() -> Path:
    """Classic hubploy 0.4 in its own venv (CLASSIC_VENV), installed once; its `hubploy` program."""
    exe = CLASSIC_VENV / "bin" / "hubploy"
    if exe.is_file():
        return exe
    say(f"classic hubploy: installing hubploy==0.4 into {CLASSIC_VENV}")
    start = time.monotonic()
    shutil.rmtree(CLASSIC_VENV, ignore_errors=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run([sys.executable, "-m", "venv", str(CLASSIC_VENV)], env=env)
    pip = [str(CLASSIC_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    run([*pip, "--no-deps", "hubploy==0.4"], env=env, timeout=600)
    run([*pip, *CLASSIC_PACKAGES], env=env, timeout=600)
    say(f"classic hubploy: installed in {time.monotonic() - start:.0f} s")
    return exe


# --- generated repos -------------------------------------------------------------------------------------


def token() -> str:
    return secrets.token_hex(2)


# Every generated hub is lean (helpers.fleet_repo.LEAN_VALUES): it leaves out what a bench does not measure
# and a small machine cannot carry many times over. LAZY_START is the sandbox agent's opt-in: a pod so
# annotated is Ready at once and starts its processes on the first connection to one of its ports (hubs
# that nobody visits cost no CPU).
LAZY_START = {"hubploy-sandbox/lazy-start": "true"}


@dataclass(frozen=True)
class Placement:
    """Which cluster each generated hub deploys to: hub ``i`` to ``contexts[i % len(contexts)]`` of
    ``kubeconfig`` (the sandbox's, one context per cluster)."""

    contexts: tuple[str, ...]
    kubeconfig: Path

    def context(self, index: int) -> str:
        return self.contexts[index % len(self.contexts)]


def _kubeconfig_for(placement: Placement, context: str, dest: Path) -> None:
    """A plaintext copy of the placement's kubeconfig whose current context is ``context`` (classic)."""
    config = yaml.safe_load(placement.kubeconfig.read_text())
    config["current-context"] = context
    dest.write_text(yaml.safe_dump(config))


def _encrypted_kubeconfig(root: Path, hub: str, placement: Placement, env: dict[str, str]) -> bytes:
    """The placement's kubeconfig as ``deployments/<hub>/secrets/kubeconfig.yaml``, encrypted with sops
    to the repo's recipient (.sops.yaml), as an operator keeps a cluster key file; its bytes."""
    target = root / "deployments" / hub / "secrets" / "kubeconfig.yaml"
    shutil.copy2(placement.kubeconfig, target)
    run(["sops", "--encrypt", "--in-place", str(target.relative_to(root))], env=env, cwd=root)
    return target.read_bytes()


def make_repo(
    root: Path,
    hubs: Sequence[str],
    image: str | None,
    *,
    classic: bool = False,
    placement: Placement | None = None,
    env: dict[str, str] | None = None,
    settings_extra: str = "",
    lazy: bool = False,
) -> Path:
    """A git repo (branch staging) of copies of the minimal example hub, one per name, pinned to ``image``,
    with LEAN_VALUES.

    Ours: ``images: {images: [{name: <image>}]}`` in hubploy.yaml (injected at jupyterhub.singleuser.image);
    with a ``placement``, also ``cluster.kubeconfig`` naming a sops-encrypted key file and the hub's context
    (``env`` runs sops), else the ambient KUBECONFIG. Classic (``classic``, needs a placement): hubploy 0.4
    derives image tags from git history, so the same image is set in config/common.yaml instead, and
    hubploy.yaml names a plaintext kubeconfig in secrets/ whose current context is the hub's cluster.
    Either way helm gets the same merged values. ``lazy``: the hub and proxy pods carry LAZY_START.
    ``image`` None: the minimal hub's hubploy.yaml unchanged.
    """
    copy_example_repo(root, dict.fromkeys(hubs, "minimal"), settings_extra=settings_extra, helm_timeout=None)
    repository, tag = image.rsplit(":", 1) if image else ("", "")
    if image:  # the chart's images from the registry of ``image`` (a private sandbox's has another port)
        chart_values = root / "hub" / "values.yaml"
        registry = image.split("/", 1)[0]
        chart_values.write_text(chart_values.read_text().replace(f"{SANDBOX_REGISTRY}/", f"{registry}/"))
    encrypted = b""
    for index, hub in enumerate(hubs):
        hub_dir = root / "deployments" / hub
        if image is None:
            continue
        common = hub_dir / "config" / "common.yaml"
        values = yaml.safe_load(common.read_text())
        values["jupyterhub"].update(LEAN_VALUES)
        if lazy:
            values["jupyterhub"].setdefault("hub", {})["annotations"] = LAZY_START
            values["jupyterhub"].setdefault("proxy", {})["annotations"] = LAZY_START
        config: dict[str, Any] = {}
        if classic:
            assert placement is not None, "classic hubs name their cluster's kubeconfig"
            shutil.rmtree(hub_dir / "image")
            config["cluster"] = {"provider": "kubeconfig", "kubeconfig": {"filename": "kubeconfig.yaml"}}
            _kubeconfig_for(placement, placement.context(index), hub_dir / "secrets" / "kubeconfig.yaml")
            values["jupyterhub"]["singleuser"]["image"] = {"name": repository, "tag": tag}
        else:
            config["images"] = {"images": [{"name": image}]}
            if placement is not None:
                assert env is not None, "a placement needs env (sops)"
                if not encrypted:
                    encrypted = _encrypted_kubeconfig(root, hub, placement, env)
                (hub_dir / "secrets" / "kubeconfig.yaml").write_bytes(encrypted)
                config["cluster"] = {
                    "provider": "kubeconfig",
                    "kubeconfig": {"filename": "kubeconfig.yaml", "context": placement.context(index)},
                }
        (hub_dir / "hubploy.yaml").write_text(yaml.safe_dump(config))
        common.write_text(yaml.safe_dump(values))
    subprocess.run(["git", "init", "-q", "-b", "staging", str(root)], check=True)
    git_commit_all(root, "bench hubs")
    return root


# --- cleanup ---------------------------------------------------------------------------------------------


def cleanup_releases(sb: Sandbox, prefix: str, wait: bool = False) -> int:
    """helm uninstall every release whose name starts with ``prefix``, in every cluster of the sandbox;
    delete its namespace (``wait``: until it is gone, so its pods' processes no longer cost CPU)."""
    removed = 0
    for context in sb.contexts():
        out = run(
            [sb.helm, "--kube-context", context, "list", "-A", "-a", "-o", "json"], env=sb.env, check=False
        )
        releases = [
            r
            for r in (json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else [])
            if r["name"].startswith(prefix)
        ]
        for r in releases:
            run(
                [sb.helm, "--kube-context", context, "uninstall", r["name"], "-n", r["namespace"]],
                env=sb.env,
                check=False,
            )
        removed += len(releases)
        out = run(["kubectl", "--context", context, "get", "ns", "-o", "name"], env=sb.env, check=False)
        names = [n.split("/", 1)[-1] for n in out.stdout.split()]
        namespaces = [n for n in names if n.startswith(prefix)]
        if namespaces:
            run(
                [
                    "kubectl",
                    "--context",
                    context,
                    "delete",
                    "ns",
                    *namespaces,
                    f"--wait={str(wait).lower()}",
                    "--timeout=600s",
                ],
                env=sb.env,
                check=False,
                timeout=900,
            )
    return removed


# --- memory ----------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return ""


class TreeMemory:
    """Samples the RSS of processes and all their descendants every ``interval`` s (a thread).

    ``peak_tree_kb``: the largest sum of VmRSS over the trees at one sample; ``peak_by_proc``: the largest
    VmHWM seen per process (worker, flow-run process, helm/kubectl children are reported grouped);
    ``flow_run_cpu``: per flow-run process (``prefect.engine``), its own CPU seconds (Prefect's engine and
    hubploy's Python) and those of its children it has waited for (helm, sops, git), at the last sample."""

    def __init__(self, roots: Sequence[int], interval: float = 0.1) -> None:
        self.roots, self.interval = list(roots), interval
        self.peak_tree_kb = 0
        self.peak_by_proc: dict[int, tuple[int, str]] = {}
        self.flow_run_cpu: dict[int, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list[int]:
        kids = _children()
        out, todo = [], list(self.roots)
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += kids.get(pid, [])
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._tree():
                total += _status_kb(pid, "VmRSS")
                hwm = _status_kb(pid, "VmHWM")
                if hwm > self.peak_by_proc.get(pid, (0, ""))[0]:
                    self.peak_by_proc[pid] = (hwm, _cmdline(pid))
                sample = (
                    _own_and_children_cpu(pid)
                    if "prefect.engine" in self.peak_by_proc.get(pid, (0, ""))[1]
                    else None
                )
                if sample is not None:
                    self.flow_run_cpu[pid] = sample
            self.peak_tree_kb = max(self.peak_tree_kb, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 4) -> list[tuple[int, str]]:
        return sorted(self.peak_by_proc.values(), reverse=True)[:n]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _own_and_children_cpu(pid: int) -> tuple[float, float] | None:
    """(utime + stime, cutime + cstime) of ``pid`` in seconds, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU time (user + system) of the processes under ``roots`` and of their children already waited for."""
    kids = _children()
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        cpu = _own_and_children_cpu(pid)
        if cpu is None:
            continue
        total += sum(cpu)
        todo += kids.get(pid, [])
    return total


@contextmanager
def cpu_spent(groups: dict[str, list[int]], into: dict[str, float]) -> Iterator[None]:
    """CPU seconds each group of process trees spends during the block, into ``into``."""
    before = {name: tree_cpu_seconds(roots) for name, roots in groups.items()}
    try:
        yield
    finally:
        into.update({name: tree_cpu_seconds(roots) - before[name] for name, roots in groups.items()})


# --- Prefect server and worker of the bench --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class PrefectStack:
    """A Prefect server (own PREFECT_HOME, loopback; on SQLite, or on a PostgreSQL server of its own, as
    `hubploy up --database postgres` runs it) and ``workers`` process workers with the sandbox env."""

    sb: Sandbox
    database: str = "sqlite"
    workers: int = 1
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prefect-", dir=BENCH_DIR)))
    api_url: str = ""
    server: subprocess.Popen | None = None
    worker_procs: list[subprocess.Popen] = field(default_factory=list)
    worker_env: dict[str, str] = field(default_factory=dict)
    _settings: Any = None

    @property
    def postgres(self) -> Any:
        from hubploy.triggers.database import PostgresFiles

        return PostgresFiles(self.home)

    def server_pids(self) -> list[int]:
        """The Prefect server's process, and the PostgreSQL server's when it runs on one."""
        from hubploy.processes import read_pid

        assert self.server is not None
        postgres = read_pid(self.postgres.pid_file) if self.database == "postgres" else None
        return [self.server.pid, *([postgres] if postgres else [])]

    def worker_pids(self) -> list[int]:
        return [proc.pid for proc in self.worker_procs]

    def start_server(self) -> None:
        from hubploy.triggers.database import start

        port = _free_port()
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.api_url,
        }
        if self.database == "postgres":
            server, _ = start(self.postgres, say=say)
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = server.url
        log = open(self.home / "server.log", "w")  # noqa: SIM115 - the server's, for its lifetime
        self.server = subprocess.Popen(
            [PREFECT, "server", "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while not _healthy(self.api_url):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {self.home / 'server.log'}")
            time.sleep(0.5)
        os.environ["PREFECT_API_URL"] = self.api_url  # child processes (prefect CLI) use it too
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._settings = temporary_settings(updates={PREFECT_API_URL: self.api_url})
        self._settings.__enter__()  # for the rest of this process (settings are read at import)

    def prefect(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([PREFECT, "--no-prompt", *args], env=self.worker_env, cwd=ROOT, timeout=300)

    def deploy(self, repo_url: str) -> None:
        """prefect.yaml's deployments, plus `deploy-hubs/bench` (the fleet flow) on the same pool."""
        from blocks.sandbox import save_sandbox_blocks

        self.worker_env = {
            **self.sb.env,
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "HUBPLOY_REPO_URL": repo_url,
            "HUBPLOY_WORKSPACE_DIR": str(self.home / "workspaces"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "hubploy",
            "PYTHONUNBUFFERED": "1",
        }
        save_sandbox_blocks(self.sb.env)
        self.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
        self.prefect("deploy", "--all")
        from flows.deploy_hubs import deploy_hubs

        deploy_hubs.from_source(source=str(ROOT), entrypoint="flows/deploy_hubs.py:deploy_hubs").deploy(
            name="bench", work_pool_name=POOL, print_next_steps=False
        )

    def start_workers(self) -> None:
        for n in range(1, self.workers + 1):
            log = open(self.home / f"worker-{n}.log", "a")  # noqa: SIM115 - the worker's, for its lifetime
            self.worker_procs.append(
                subprocess.Popen(
                    [PREFECT, "worker", "start", "--pool", POOL, "--limit", "6", "--name", f"bench-{n}"],
                    env=self.worker_env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        """Kill the workers, the flow-run processes they started (each in a session of its own), the
        server; remove the PostgreSQL server and its data."""
        from hubploy.processes import child_pids

        for proc in [*self.worker_procs, self.server]:
            if proc is not None and proc.poll() is None:
                for group in [proc.pid, *(child_pids(proc.pid) if proc is not self.server else [])]:
                    with suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                proc.wait()
        if self.database == "postgres":
            from hubploy.triggers.database import remove

            remove(self.postgres)


def flow_run_states(run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)


def wait_run(run_id: Any, predicate: Any, *, timeout: float = 600, interval: float = 0.1) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(run_id)
            if predicate(flow_run):
                return flow_run
            if flow_run.state is not None and flow_run.state.is_final():
                raise RuntimeError(
                    f"run {flow_run.name} ended {flow_run.state.name}: {flow_run.state.message}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"run {flow_run.name} still {flow_run.state.name if flow_run.state else None}"
                )
            time.sleep(interval)


def first_state(states: Sequence[Any], type_name: str, after: datetime.datetime | None = None) -> Any:
    for s in states:
        if s.type.value == type_name and (after is None or s.timestamp >= after):
            return s
    raise LookupError(f"no {type_name} state")


# --- timing and output -----------------------------------------------------------------------------------


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        into[key] = time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in cells[1:]
    ]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    def out(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
        try:
            return subprocess.run(
                list(argv), capture_output=True, text=True, timeout=30, env=env, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    import prefect

    helm = os.environ.get("HELM_EXECUTABLE") or "/tmp/hubploy-sandbox/bin/helm3"
    return {
        "date": now_utc().isoformat(timespec="seconds"),
        "nproc": out(["nproc"]),
        "cpu": out(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]).strip(),
        "free -g": out(["free", "-g"]).replace("\n", " / "),
        "python": sys.version.split()[0],
        "prefect": prefect.__version__,
        "helm": out([helm, "version", "--short"]),
        "classic hubploy": out([str(CLASSIC_VENV / "bin" / "pip"), "show", "hubploy"]).split("\n")[1]
        if (CLASSIC_VENV / "bin" / "pip").exists()
        else "not installed",
    }
