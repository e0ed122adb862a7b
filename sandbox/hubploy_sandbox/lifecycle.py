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

from hubploy.processes import read_pid, runs, spawn, stop
from hubploy.runner import child_env
from hubploy_sandbox import images, k8s, network, registry, tools
from hubploy_sandbox.components import Component, cluster_components, registry_component
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.health import wait_for
from hubploy_sandbox.paths import ClusterPaths, SandboxPaths
from hubploy_sandbox.versions import KUBERNETES_VERSION

Say = Callable[[str], None]
AGENT_PODS_DIR = "pod-pids"  # the agent records each container process here (stopped by `down` too)


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


class _Starter:
    """Starts components unless already running (restarting one whose command line changed, e.g. after
    an upgrade of hubploy), and waits for them, printing the time taken."""

    def __init__(self, paths: SandboxPaths, say: Say) -> None:
        self.paths, self.say = paths, say
        self.started: dict[str, float] = {}
        self.env = child_env()

    def start(self, comp: Component, env: dict[str, str] | None = None) -> None:
        argv = comp.argv()
        pid = comp.pid()
        if pid is not None:
            if runs(pid, argv):
                return
            self.say(f"{comp.name}: restarting (pid {pid} runs an older command line)")
            stop(comp.pid_file)
        self.started[comp.name] = time.monotonic()
        spawn(argv, pid_file=comp.pid_file, log=comp.log, env=env or self.env, cwd=self.paths.runtime)

    def wait(self, comp: Component) -> None:
        since = self.started.get(comp.name)
        wait_for(
            comp.name, comp.ready, timeout=comp.timeout, log=comp.log, alive=lambda: comp.pid() is not None
        )
        where = f" on {comp.where}" if comp.where else ""
        if since is None:
            self.say(f"{comp.name}: already running (pid {comp.pid()}){where}")
        else:
            self.say(f"{comp.name}: ready in {time.monotonic() - since:.1f} s (pid {comp.pid()}){where}")

    def step(self, name: str, func: Callable[[], object]) -> object:
        start = time.monotonic()
        result = func()
        self.say(f"{name}: {time.monotonic() - start:.1f} s")
        return result


def up(
    paths: SandboxPaths, *, clusters: int = 1, use_kubeconfig: Path | None = None, say: Say = print
) -> None:
    """Start every part that is not running yet (``clusters`` Kubernetes clusters, at least as many as
    already run) and wait until all are ready."""
    t0 = time.monotonic()
    if clusters < 1:
        raise SandboxError(f"--clusters must be at least 1 (got {clusters})")
    with locked(paths):
        paths.runtime.mkdir(parents=True, exist_ok=True)
        paths.runtime.chmod(0o700)
        for d in (paths.pids, paths.logs):
            d.mkdir(parents=True, exist_ok=True)
        if use_kubeconfig is not None:
            if not use_kubeconfig.is_file():
                raise SandboxError(f"kubeconfig {use_kubeconfig} does not exist")
            paths.external_kubeconfig_file.write_text(str(use_kubeconfig.resolve()) + "\n")
        external = external_kubeconfig(paths)
        s = _Starter(paths, say)
        wanted: list[ClusterPaths] = []
        if external is None:
            if not k8s.binaries_present(paths):
                raise SandboxError(
                    f"Kubernetes {KUBERNETES_VERSION} binaries are missing in {paths.cache}",
                    hint="run `hubploy sandbox install`",
                )
            count = max(clusters, len(paths.clusters()))
            wanted = [paths.cluster(i) for i in range(1, count + 1)]
            for cluster in wanted:
                net = network.ensure(cluster)
                say(
                    f"{cluster.name}: network {net.pod_cidr} (pods), {net.service_cidr} (services), "
                    f"bridge {net.bridge}"
                )
                k8s.ensure_pki(cluster, s.env)
                s.start(cluster_components(paths, cluster).etcd)
        reg = registry_component(paths)
        registry.configure(paths, s.env)
        s.start(reg)
        s.step("tools (helm, kubectl, sops, buildah)", lambda: tools.write_bin(paths, tools.helm_major()))
        s.step("age key", lambda: tools.ensure_age_key(paths, s.env))
        for cluster in wanted:
            comps = cluster_components(paths, cluster)
            s.wait(comps.etcd)
            s.start(comps.apiserver)
        s.wait(reg)
        built = s.step("base image", lambda: images.ensure_base_image(paths, s.env))
        say(f"base image {images.base_image(paths)}: {'built and pushed' if built else 'already present'}")
        s.step(
            "stand-in images (names of the charts' images)",
            lambda: images.ensure_stand_in_images(paths, s.env),
        )
        for cluster in wanted:
            comps = cluster_components(paths, cluster)
            s.wait(comps.apiserver)
            k8s.write_kubeconfig(cluster.kubeconfig, [cluster])
            for comp in (comps.controller_manager, comps.scheduler, comps.agent):
                s.start(comp)
        if wanted:
            k8s.write_kubeconfig(paths.kubeconfig, wanted)
        for cluster in wanted:
            comps = cluster_components(paths, cluster)
            for comp in (comps.controller_manager, comps.scheduler, comps.agent):
                s.wait(comp)
        if external is not None:
            say(f"kubernetes: using the existing cluster of {external} (no local control plane, no agent)")
        elif len(wanted) > 1:
            say(f"kubeconfig contexts: {', '.join(c.name for c in wanted)} (current: {wanted[0].name})")
    say(
        f"sandbox ready in {time.monotonic() - t0:.1f} s (Kubernetes {KUBERNETES_VERSION}); "
        'run `eval "$(hubploy sandbox env)"`'
    )


def down(paths: SandboxPaths, *, say: Say = print) -> None:
    """Stop exactly the processes `up` started (by their PID files), remove each cluster's network and
    the runtime dir."""
    with locked(paths):
        if not paths.runtime.exists():
            say("sandbox: not running")
            return
        for cluster in paths.clusters():
            comps = cluster_components(paths, cluster)
            _stop(comps.agent, say)
            for pid_file in sorted((cluster.agent_state / AGENT_PODS_DIR).glob("*.pid")):  # a killed agent's
                if stop(pid_file, timeout=5):
                    say(f"pod process {pid_file.stem}: stopped")
        for cluster in paths.clusters():
            for comp in cluster_components(paths, cluster).stop_order()[1:]:
                _stop(comp, say)
            net = network.load(cluster)
            if net is not None:
                network.remove(net)
                say(f"{cluster.name}: removed bridge {net.bridge} and its pod namespaces")
        _stop(registry_component(paths), say)
        for pid_file in sorted(paths.pids.rglob("*.pid")):  # anything else recorded
            if stop(pid_file):
                say(f"{pid_file.stem}: stopped")
        shutil.rmtree(paths.runtime, ignore_errors=True)
        say(f"removed {paths.runtime}")


def _stop(comp: Component, say: Say) -> None:
    pid = read_pid(comp.pid_file)
    if stop(comp.pid_file):
        say(f"{comp.name}: stopped (pid {pid})")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    pid: int | None
    where: str
    detail: str = ""


def status(paths: SandboxPaths) -> list[ComponentStatus]:
    """Each component of this sandbox: running (with pid and address) or stopped."""
    external = external_kubeconfig(paths)
    comps = [registry_component(paths)]
    if external is None:
        for cluster in paths.clusters() or [paths.cluster(1)]:
            comps += cluster_components(paths, cluster).all()
    result = []
    for comp in comps:
        pid = comp.pid()
        running = pid is not None and _safe_ready(comp)
        detail = "" if running else ("not ready" if pid is not None else "")
        result.append(ComponentStatus(comp.name, running, pid, comp.where, detail))
    if external is not None:
        result.append(ComponentStatus("kubernetes", True, None, "", f"external cluster {external}"))
    return result


def healthy(paths: SandboxPaths) -> bool:
    return paths.runtime.exists() and all(c.running for c in status(paths))


def _safe_ready(comp: Component) -> bool:
    try:
        return comp.ready()
    except SandboxError:
        return False
