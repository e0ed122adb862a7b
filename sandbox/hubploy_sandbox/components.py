"""The sandbox's long-running processes: how each starts, where it logs, and when it is ready."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubploy_sandbox import k8s, registry
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.procs import read_pid


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[SandboxPaths], list[str]]
    ready: Callable[[SandboxPaths], bool]
    port: Callable[[SandboxPaths], int | None] = lambda p: None
    timeout: float = 60.0
    kubernetes: bool = True  # skipped when the sandbox uses an existing cluster

    def pid_file(self, paths: SandboxPaths) -> Path:
        return paths.pids / f"{self.name}.pid"

    def log(self, paths: SandboxPaths) -> Path:
        return paths.logs / f"{self.name}.log"

    def pid(self, paths: SandboxPaths) -> int | None:
        return read_pid(self.pid_file(paths))


def agent_argv(paths: SandboxPaths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hubploy_sandbox.agent",
        "--kubeconfig",
        str(paths.kubeconfig),
        "--state-dir",
        str(paths.agent_state),
        "--hub-python",
        str(paths.hub_python),
        "--hub-urls",
        str(paths.hub_urls),
        "--pid-dir",
        str(paths.pids / "hubs"),
        "--log-dir",
        str(paths.logs / "hubs"),
    ]


def agent_ready(paths: SandboxPaths) -> bool:
    """The running agent wrote its PID to the ready file (one left by an earlier agent does not count)."""
    try:
        return int((paths.agent_state / "ready").read_text()) == AGENT.pid(paths)
    except (OSError, ValueError):
        return False


ETCD = Component("etcd", k8s.etcd_argv, k8s.etcd_ready, lambda p: p.ports.etcd_client, 30)
APISERVER = Component(
    "kube-apiserver", k8s.apiserver_argv, k8s.apiserver_ready, lambda p: p.ports.apiserver, 90
)
CONTROLLER_MANAGER = Component(
    "kube-controller-manager", k8s.controller_manager_argv, k8s.controller_manager_ready, timeout=60
)
SCHEDULER = Component("kube-scheduler", k8s.scheduler_argv, lambda p: True, timeout=10)
REGISTRY = Component(
    "registry", registry.argv, registry.ready, lambda p: p.ports.registry, 30, kubernetes=False
)
AGENT = Component("agent", agent_argv, agent_ready, timeout=60)

ALL = [ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, REGISTRY, AGENT]
STOP_ORDER = [AGENT, SCHEDULER, CONTROLLER_MANAGER, APISERVER, ETCD, REGISTRY]
