"""`up`, `down` and `status` of the sandbox. `up` is idempotent and prints how long each part took."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hubploy.errors import SandboxError
from hubploy.runner import child_env
from hubploy_sandbox import images, k8s, registry, tools
from hubploy_sandbox.components import (
    AGENT,
    ALL,
    APISERVER,
    CONTROLLER_MANAGER,
    ETCD,
    REGISTRY,
    SCHEDULER,
    STOP_ORDER,
    Component,
)
from hubploy_sandbox.health import wait_for
from hubploy_sandbox.hubs import PROXY_PID_FILE
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.procs import read_pid, runs, spawn, stop, stop_recorded

Say = Callable[[str], None]


@contextlib.contextmanager
def locked(paths: SandboxPaths) -> Iterator[None]:
    """Serialise `up` and `down` of one sandbox across processes (test sessions run concurrently)."""
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def external_kubeconfig(paths: SandboxPaths) -> Path | None:
    """The user's own cluster, if this sandbox was started with one (or HUBPLOY_SANDBOX_KUBECONFIG is set)."""
    if os.environ.get("HUBPLOY_SANDBOX_KUBECONFIG"):
        return Path(os.environ["HUBPLOY_SANDBOX_KUBECONFIG"]).expanduser().resolve()
    try:
        return Path(paths.external_kubeconfig_file.read_text().strip())
    except OSError:
        return None


def wanted(paths: SandboxPaths) -> list[Component]:
    external = external_kubeconfig(paths) is not None
    return [c for c in ALL if not (external and c.kubernetes)]


class _Starter:
    """Starts components unless already running (restarting one whose command line changed, e.g. after
    an upgrade of hubploy), and waits for them, printing the time taken."""

    def __init__(self, paths: SandboxPaths, say: Say) -> None:
        self.paths, self.say = paths, say
        self.started: dict[str, float] = {}
        self.env = child_env()

    def start(self, comp: Component, env: dict[str, str] | None = None) -> None:
        argv = comp.argv(self.paths)
        pid = comp.pid(self.paths)
        if pid is not None:
            if runs(pid, argv):
                return
            self.say(f"{comp.name}: restarting (pid {pid} runs an older command line)")
            stop(comp.pid_file(self.paths))
        self.started[comp.name] = time.monotonic()
        spawn(
            argv,
            pid_file=comp.pid_file(self.paths),
            log=comp.log(self.paths),
            env=env or self.env,
            cwd=self.paths.runtime,
        )

    def wait(self, comp: Component) -> None:
        since = self.started.get(comp.name)
        wait_for(
            comp.name,
            lambda: comp.ready(self.paths),
            timeout=comp.timeout,
            log=comp.log(self.paths),
            alive=lambda: comp.pid(self.paths) is not None,
        )
        port = comp.port(self.paths)
        where = f" on 127.0.0.1:{port}" if port else ""
        if since is None:
            self.say(f"{comp.name}: already running (pid {comp.pid(self.paths)}){where}")
        else:
            self.say(
                f"{comp.name}: ready in {time.monotonic() - since:.1f} s (pid {comp.pid(self.paths)}){where}"
            )

    def step(self, name: str, func: Callable[[], object]) -> object:
        start = time.monotonic()
        result = func()
        self.say(f"{name}: {time.monotonic() - start:.1f} s")
        return result


def up(paths: SandboxPaths, *, use_kubeconfig: Path | None = None, say: Say = print) -> None:
    """Start every part that is not running yet and wait until all are ready."""
    t0 = time.monotonic()
    with locked(paths):
        paths.runtime.mkdir(parents=True, exist_ok=True)
        paths.runtime.chmod(0o700)
        for d in (paths.pids, paths.logs, paths.agent_state):
            d.mkdir(parents=True, exist_ok=True)
        if use_kubeconfig is not None:
            if not use_kubeconfig.is_file():
                raise SandboxError(f"kubeconfig {use_kubeconfig} does not exist")
            paths.external_kubeconfig_file.write_text(str(use_kubeconfig.resolve()) + "\n")
        external = external_kubeconfig(paths)
        s = _Starter(paths, say)
        if external is None:
            if not k8s.binaries_present(paths):
                raise SandboxError(
                    f"Kubernetes binaries are missing in {paths.k8s_bin}",
                    hint="run `hubploy sandbox install`",
                )
            if not paths.hub_python.exists():
                raise SandboxError(
                    f"JupyterHub's virtualenv {paths.hub_venv} is missing",
                    hint="run `hubploy sandbox install`",
                )
            s.start(ETCD)
        registry.configure(paths, s.env)
        s.start(REGISTRY)
        s.step("tools (helm, kubectl, sops, buildah)", lambda: tools.write_bin(paths, tools.helm_major()))
        s.step("age key", lambda: tools.ensure_age_key(paths, s.env))
        if external is None:
            s.wait(ETCD)
            k8s.ensure_pki(paths, s.env)
            s.start(APISERVER)
        s.wait(REGISTRY)
        build_env = s.env
        built = s.step("base image", lambda: images.ensure_base_image(paths, build_env))
        say(f"base image {images.base_image(paths)}: {'built and pushed' if built else 'already present'}")
        s.step("stand-in hub, proxy and user images", lambda: images.ensure_stand_in_images(paths, build_env))
        if external is None:
            s.wait(APISERVER)
            k8s.write_kubeconfig(paths)
            s.start(CONTROLLER_MANAGER)
            s.start(SCHEDULER)
            s.start(AGENT, child_env({"PATH": f"{paths.chp_bin}{os.pathsep}{os.environ.get('PATH', '')}"}))
            s.wait(CONTROLLER_MANAGER)
            s.wait(SCHEDULER)
            s.wait(AGENT)
        else:
            say(f"kubernetes: using the existing cluster of {external} (no local control plane, no agent)")
    say(f'sandbox ready in {time.monotonic() - t0:.1f} s; run `eval "$(hubploy sandbox env)"`')


def down(paths: SandboxPaths, *, say: Say = print) -> None:
    """Stop exactly the processes `up` started (by their PID files) and remove the runtime dir."""
    with locked(paths):
        if not paths.runtime.exists():
            say("sandbox: not running")
            return
        for comp in STOP_ORDER[:1]:
            _stop(comp.name, comp.pid_file(paths), say)
        for pid_file in sorted(paths.pids.glob("hubs/*.pid")):  # JupyterHubs the agent started
            _stop(f"hub {pid_file.stem}", pid_file, say)
        for proxy_pid in sorted(paths.agent_state.glob(f"hubs/*/{PROXY_PID_FILE}")):  # and their proxies
            if stop_recorded(proxy_pid, must_contain="configurable-http-proxy"):
                say(f"proxy of hub {proxy_pid.parent.name}: stopped")
        for comp in STOP_ORDER[1:]:
            _stop(comp.name, comp.pid_file(paths), say)
        for pid_file in sorted(paths.pids.rglob("*.pid")):  # anything else recorded
            _stop(pid_file.stem, pid_file, say)
        shutil.rmtree(paths.runtime, ignore_errors=True)
        say(f"removed {paths.runtime}")


def _stop(name: str, pid_file: Path, say: Say) -> None:
    pid = read_pid(pid_file)
    if stop(pid_file):
        say(f"{name}: stopped (pid {pid})")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    port: int | None
    detail: str = ""


def status(paths: SandboxPaths) -> list[ComponentStatus]:
    """Each component of this sandbox: running (with pid and port) or stopped."""
    result = []
    external = external_kubeconfig(paths)
    for comp in ALL:
        if external is not None and comp.kubernetes:
            result.append(ComponentStatus(comp.name, True, None, None, f"external cluster {external}"))
            continue
        pid = comp.pid(paths)
        running = pid is not None and _safe_ready(comp, paths)
        detail = "" if running else ("not ready" if pid is not None else "")
        result.append(ComponentStatus(comp.name, running, pid, comp.port(paths), detail))
    return result


def healthy(paths: SandboxPaths) -> bool:
    return paths.runtime.exists() and all(c.running for c in status(paths))


def _safe_ready(comp: Component, paths: SandboxPaths) -> bool:
    try:
        return comp.ready(paths)
    except SandboxError:
        return False
