"""`hubploy up`: everything on one machine — a local Prefect server (loopback, HTTP basic auth; on SQLite,
or on a PostgreSQL server of its own, see hubploy/triggers/database.py), the sandbox, the blocks, the
deployments of prefect.yaml with one or more process workers, and the GitHub webhook receiver. Each piece
is a detached process with a PID file under HUBPLOY_HOME (default ~/.hubploy), so `up` is idempotent and
`down` stops exactly what `up` started.

Why basic auth: the open-source API hands every stored credential to any client that asks
(`include_secrets=true`), so the server only listens on 127.0.0.1 and requires the auth string kept
in HUBPLOY_HOME/prefect-auth (0600). Only the webhook receiver is meant to face the outside.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import yaml

from hubploy.errors import HubployError
from hubploy.processes import read_pid, spawn, stop
from hubploy.runner import child_env, run
from hubploy.triggers import database
from hubploy.triggers.database import Database
from hubploy.triggers.project_files import (
    PREFECT_YAML,
    ProjectFiles,
    copy_example_repo,
    find_project_files,
    prepare_project_dir,
)

POOL = "hubploy-process"
BLOCK_MODULES = ("blocks.gcp", "blocks.aws", "blocks.azure", "blocks.kubeconfig")
Say = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class StackPaths:
    home: Path

    @classmethod
    def from_env(cls) -> StackPaths:
        return cls(Path(os.environ.get("HUBPLOY_HOME", Path.home() / ".hubploy")))

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def auth_file(self) -> Path:
        return self.home / "prefect-auth"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"

    @property
    def postgres(self) -> database.PostgresFiles:
        return database.PostgresFiles(self.home)

    def pid(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    @property
    def project(self) -> Path:
        """prefect.yaml and the installed flows: where deployments are registered from and flows run
        (hubploy/triggers/project_files.py)."""
        return self.home / "project"

    @property
    def demo_origin(self) -> Path:
        return self.home / "demo" / "origin.git"

    @property
    def demo_work(self) -> Path:
        return self.home / "demo" / "work"


@dataclass(frozen=True)
class Stack:
    paths: StackPaths
    api_url: str
    ui_url: str
    webhook_url: str
    webhook_secret: str
    repo_url: str
    env: dict[str, str]  # what a client of this stack needs (Prefect URL and auth, sandbox tools)
    started: tuple[str, ...] = ()  # what this call of `up` started ("sandbox" included), for `down(only=)`
    database: str = "SQLite"  # where the server keeps its data, for people

    def login_url(self, then: str = "") -> str:
        """The UI's log-in page; after logging in, the browser goes on to the UI path ``then``."""
        return f"{self.ui_url}/login" + (f"?redirect={then}" if then else "")

    def run_path(self, run_id: str) -> str:
        return f"/runs/flow-run/{run_id}"

    def how_to_log_in(self, then: str = "") -> str:
        """Where to log in and where the auth string is (never the auth string itself)."""
        return f"{self.login_url(then)} with the auth string (user:password) in {self.paths.auth_file}"


def auth_string(paths: StackPaths) -> str:
    """`user:password` for the server's basic auth, generated once and kept 0600."""
    if paths.auth_file.is_file():
        return paths.auth_file.read_text().strip()
    paths.home.mkdir(parents=True, exist_ok=True)
    value = f"hubploy:{secrets.token_urlsafe(24)}"
    fd = os.open(paths.auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def server_healthy(api_url: str, auth: str) -> bool:
    user, _, password = auth.partition(":")
    try:
        return httpx.get(f"{api_url}/health", auth=(user, password), timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(
    ready: Callable[[], bool], timeout: float, what: str, log: Path, pid_file: Path | None = None
) -> None:
    """Wait for ``ready``; fail at once when the process of ``pid_file`` has exited."""
    deadline = time.monotonic() + timeout
    while not ready():
        if pid_file is not None and read_pid(pid_file) is None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
            raise HubployError(f"{what} exited: {tail[0] if tail else 'no output'}", hint=f"see {log}")
        if time.monotonic() > deadline:
            raise HubployError(f"{what} did not become ready in {timeout:.0f} s", hint=f"see {log}")
        time.sleep(0.5)


def _require_sandbox() -> None:
    """hubploy-sandbox is a separate distribution, which only `up` without --no-sandbox needs (and `down`
    when such an `up` started the sandbox): checked before anything starts."""
    try:
        importlib.import_module("hubploy_sandbox.lifecycle")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("hubploy_sandbox"):
            raise
        raise HubployError(
            "`hubploy up` starts the local sandbox platform, and hubploy-sandbox is not installed",
            hint="install it (pip install ./sandbox in hubploy's repository), or use your own cluster: "
            "hubploy up --no-sandbox",
        ) from exc


def _python_m(module: str, *args: str) -> list[str]:
    """``module``'s command with this interpreter: found wherever the packages are installed (a virtualenv,
    --user, a --target directory on PYTHONPATH), unlike a console script next to the interpreter."""
    return [sys.executable, "-m", module, *args]


def _prefect(env: Mapping[str, str], *args: str, cwd: Path) -> None:
    run(_python_m("prefect", "--no-prompt", *args), env=env, cwd=cwd, timeout=600)


def _start(
    paths: StackPaths, name: str, argv: list[str], env: Mapping[str, str], say: Say, started: list[str]
) -> None:
    if read_pid(paths.pid(name)) is not None:
        say(f"{name}: already running")
        return
    pid = spawn(argv, pid_file=paths.pid(name), log=paths.log(name), env=env, cwd=paths.project)
    started.append(name)
    say(f"{name}: started (pid {pid}, log {paths.log(name)})")


def ensure_demo_repo(paths: StackPaths, env: Mapping[str, str], files: ProjectFiles) -> str:
    """A deployment repository for the demo: the project's example hubs in a bare origin with
    staging and prod branches, plus a work clone to push changes from. Created once."""
    if (paths.demo_origin / "HEAD").is_file():
        return str(paths.demo_origin)
    work = paths.demo_work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy_example_repo(files, work)
    git_env = {
        **env,
        "GIT_AUTHOR_NAME": "hubploy demo",
        "GIT_AUTHOR_EMAIL": "demo@hubploy.invalid",
        "GIT_COMMITTER_NAME": "hubploy demo",
        "GIT_COMMITTER_EMAIL": "demo@hubploy.invalid",
    }
    for args in (
        ["init", "-q", "-b", "staging"],
        ["add", "-A"],
        ["commit", "-q", "-m", "Example hubs"],
        ["branch", "prod"],
        ["init", "-q", "--bare", str(paths.demo_origin)],
        ["remote", "add", "origin", str(paths.demo_origin)],
        ["push", "-q", "origin", "staging", "prod"],
    ):
        run(["git", *args], env=git_env, cwd=work)
    return str(paths.demo_origin)


def up(
    *,
    port: int = 4200,
    webhook_port: int = 8787,
    repo_url: str | None = None,
    with_sandbox: bool = True,
    db: Database = Database.sqlite,
    workers: int = 1,
    say: Say = print,
    started: list[str] | None = None,
) -> Stack:
    """Start whatever is not running yet and return how to reach it. ``started`` (if given) receives
    the name of each part as soon as this call starts it, so that an interrupted start can be undone.
    ``db`` is the Prefect server's database (when the server is already running, the one it runs on);
    ``workers`` process workers poll the pool (each run goes to one of them)."""
    if with_sandbox:
        _require_sandbox()
    started = [] if started is None else started
    names = worker_names(workers)
    paths = StackPaths.from_env()
    files = find_project_files()
    prepare_project_dir(paths.project, files)
    auth = auth_string(paths)
    api_url = f"http://127.0.0.1:{port}/api"
    state = json.loads(paths.state_file.read_text()) if paths.state_file.is_file() else {}
    base = {
        **child_env(),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_AUTH_STRING": auth,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "hubploy",
    }
    server_env = {
        **base,
        "PREFECT_HOME": str(paths.prefect_home),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
    }
    start = time.monotonic()
    where = _start_server(paths, server_env, state, db, say, started)
    if with_sandbox:
        from hubploy_sandbox import lifecycle as sandbox
        from hubploy_sandbox.env import sandbox_env
        from hubploy_sandbox.paths import SandboxPaths

        sandbox_paths = SandboxPaths.from_env()
        if not sandbox.healthy(sandbox_paths):
            started.append("sandbox")
            state["sandbox_started"] = True
            paths.state_file.write_text(json.dumps(state))
            sandbox.up(sandbox_paths, say=lambda line: say(f"sandbox: {line}"))
        base.update(sandbox_env(sandbox_paths))
    _wait_until(
        lambda: server_healthy(api_url, auth),
        180,
        "the Prefect server",
        paths.log("prefect-server"),
        paths.pid("prefect-server"),
    )
    say(f"prefect server: healthy at {api_url} ({time.monotonic() - start:.1f} s)")
    repo_url = repo_url or state.get("repo_url") or ensure_demo_repo(paths, base, files)
    env = {**base, "HUBPLOY_REPO_URL": repo_url}
    for module in BLOCK_MODULES:
        _prefect(env, "block", "register", "-m", module, cwd=paths.project)
    secret = _save_blocks(env, with_sandbox)
    registry = "sandbox registry; " if with_sandbox else ""
    say(f"blocks: registered (GCP, AWS, Azure, kubeconfig credentials; {registry}webhook secret)")
    _prefect(env, "work-pool", "create", POOL, "--type", "process", "--overwrite", cwd=paths.project)
    _prefect(env, "deploy", "--all", cwd=paths.project)
    say(f"deployments: {', '.join(deployment_names(paths.project))} (from {paths.project / PREFECT_YAML})")
    from hubploy.triggers.recovery import (
        ensure_recovery_automations,  # imports Prefect: not for `hubploy down`
    )

    _with_server(env, ensure_recovery_automations)
    say("automations: a fleet run whose process died is crashed and retried (hubploy/triggers/recovery.py)")
    for name in names:
        worker = _python_m("prefect", "worker", "start", "--pool", POOL, "--name", f"{POOL}-{name}")
        _start(paths, name, worker, {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, say, started)
    webhook = _python_m("hubploy.cli.main", "webhook", "serve", "--port", str(webhook_port))
    _start(paths, "webhook", webhook, env, say, started)
    _wait_until(
        lambda: _answers(f"http://127.0.0.1:{webhook_port}/health"),
        60,
        "the webhook receiver",
        paths.log("webhook"),
        paths.pid("webhook"),
    )
    state.update(repo_url=repo_url, port=port, webhook_port=webhook_port)
    paths.state_file.write_text(json.dumps(state))
    return Stack(
        paths,
        api_url,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{webhook_port}/webhook",
        secret,
        repo_url,
        env,
        tuple(started),
        where,
    )


def _start_server(
    paths: StackPaths,
    server_env: dict[str, str],
    state: dict[str, object],
    db: Database,
    say: Say,
    started: list[str],
) -> str:
    """The Prefect server on ``db`` (and its PostgreSQL server first), unless it runs (on ``db``); where it
    keeps its data, for people."""
    running_on = state.get("database", Database.sqlite.value)
    if read_pid(paths.pid("prefect-server")) is not None and running_on != db:
        raise HubployError(
            f"the Prefect server of {paths.home} already runs on {running_on}",
            hint="`hubploy down` first to move it to another database",
        )
    if db is Database.postgres:
        server, postgres_started = database.start(paths.postgres, say=say)
        if postgres_started:
            started.append("postgres")
        server_env = {**server_env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": server.url}
    _start(paths, "prefect-server", _python_m("prefect", "server", "start"), server_env, say, started)
    state["database"] = db.value
    paths.state_file.write_text(json.dumps(state))
    if db is Database.postgres:
        return f"PostgreSQL on 127.0.0.1:{server.port} (data {paths.postgres.data})"
    return f"SQLite ({paths.prefect_home / 'prefect.db'})"


def deployment_names(project_dir: Path) -> list[str]:
    """The deployments `prefect deploy --all` registers from ``project_dir``, in prefect.yaml's order."""
    declared = yaml.safe_load((project_dir / PREFECT_YAML).read_text())
    return [deployment["name"] for deployment in declared["deployments"]]


def worker_names(count: int) -> list[str]:
    """The names (PID files, logs) of ``count`` process workers: worker, worker-2, ..."""
    if count < 1:
        raise HubployError(f"--workers must be at least 1 (got {count})")
    return ["worker", *(f"worker-{n}" for n in range(2, count + 1))]


def _with_server(env: Mapping[str, str], call: Callable[[], T]) -> T:
    """``call()`` with this stack's server as the Prefect API."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(
        updates={
            PREFECT_API_URL: env["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"],
        }
    ):
        return call()


def _save_blocks(env: Mapping[str, str], with_sandbox: bool) -> str:
    """Save the sandbox registry block and return the webhook secret, through this stack's server."""
    from blocks.sandbox import save_sandbox_blocks
    from hubploy.triggers.webhook import ensure_webhook_secret

    def save() -> str:
        if with_sandbox:
            save_sandbox_blocks(env)
        return ensure_webhook_secret()

    return _with_server(env, save)


def down(*, say: Say = print, only: tuple[str, ...] | list[str] | None = None) -> None:
    """Stop the worker, the webhook receiver and the server, and the sandbox if `up` started it;
    with ``only``, just those of them (what one call of `up` started: Stack.started)."""
    paths = StackPaths.from_env()
    running_workers = sorted(p.stem for p in (paths.home / "pids").glob("worker*.pid"))
    for name in (*running_workers, "webhook", "prefect-server"):
        workers = name.startswith("worker")  # and the flow-run processes they started
        if (only is None or name in only) and stop(paths.pid(name), timeout=10, children=workers):
            say(f"{name}: stopped")
    if (only is None or "postgres" in only) and database.stop(paths.postgres):
        say(f"postgres: stopped (its data is kept in {paths.postgres.data})")
    state = json.loads(paths.state_file.read_text()) if paths.state_file.is_file() else {}
    if (only is None or "sandbox" in only) and state.pop("sandbox_started", False):
        _require_sandbox()
        from hubploy_sandbox import lifecycle as sandbox
        from hubploy_sandbox.paths import SandboxPaths

        sandbox.down(SandboxPaths.from_env(), say=lambda line: say(f"sandbox: {line}"))
    if paths.state_file.parent.is_dir():
        paths.state_file.write_text(json.dumps(state))


def client_settings() -> dict[str, str] | None:
    """PREFECT_API_URL and PREFECT_API_AUTH_STRING of the server `hubploy up` runs, if it runs."""
    paths = StackPaths.from_env()
    if read_pid(paths.pid("prefect-server")) is None or not paths.state_file.is_file():
        return None
    port = json.loads(paths.state_file.read_text()).get("port")
    if not port or not paths.auth_file.is_file():
        return None
    return {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_API_AUTH_STRING": auth_string(paths)}
