"""The sandbox's long-running processes: how each starts, where it logs, and when it is ready.

The registry is shared; every cluster has its own etcd, API server, controller manager, scheduler and
agent, named with the cluster's suffix (``etcd``, ``etcd-2``, ...).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubploy.processes import read_pid
from hubploy_sandbox import k8s, network, registry
from hubploy_sandbox.paths import (
    APISERVER_PORT,
    ETCD_CLIENT_PORT,
    KUBELET_PORT,
    ClusterPaths,
    SandboxPaths,
)


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[], list[str]]
    ready: Callable[[], bool]
    pid_file: Path
    log: Path
    timeout: float
    where: str = ""  # address shown by `up` and `status`

    def pid(self) -> int | None:
        return read_pid(self.pid_file)


def _component(
    paths: SandboxPaths,
    name: str,
    argv: Callable[[], list[str]],
    ready: Callable[[], bool],
    timeout: float,
    where: str = "",
) -> Component:
    return Component(
        name, argv, ready, paths.pids / f"{name}.pid", paths.logs / f"{name}.log", timeout, where
    )


def registry_component(paths: SandboxPaths) -> Component:
    return _component(
        paths,
        "registry",
        lambda: registry.argv(paths),
        lambda: registry.ready(paths),
        30,
        f"127.0.0.1:{paths.ports.registry}",
    )


def agent_argv(paths: SandboxPaths, cluster: ClusterPaths) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hubploy_sandbox.agent",
        "--cache-dir",
        str(paths.cache),
        "--cluster-dir",
        str(cluster.root),
        "--cluster-index",
        str(cluster.index),
    ]


def agent_ready(cluster: ClusterPaths, pid_file: Path) -> bool:
    """The running agent wrote its PID to the ready file (one left by an earlier agent does not count)."""
    try:
        return int((cluster.agent_state / "ready").read_text()) == read_pid(pid_file)
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class ClusterComponents:
    etcd: Component
    apiserver: Component
    controller_manager: Component
    scheduler: Component
    agent: Component

    def all(self) -> list[Component]:
        return [self.etcd, self.apiserver, self.controller_manager, self.scheduler, self.agent]

    def stop_order(self) -> list[Component]:
        """The agent first (it stops its pods), etcd last."""
        return list(reversed(self.all()))


def cluster_components(paths: SandboxPaths, cluster: ClusterPaths) -> ClusterComponents:
    s = cluster.suffix

    def addr(port: int) -> str:
        found = network.load(cluster)
        return f"{found.node_ip}:{port}" if found else ""

    agent_pid = paths.pids / f"agent{s}.pid"
    return ClusterComponents(
        etcd=_component(
            paths,
            f"etcd{s}",
            lambda: k8s.etcd_argv(paths, cluster),
            lambda: k8s.etcd_ready(paths, cluster),
            30,
            addr(ETCD_CLIENT_PORT),
        ),
        apiserver=_component(
            paths,
            f"kube-apiserver{s}",
            lambda: k8s.apiserver_argv(paths, cluster),
            lambda: k8s.apiserver_ready(paths, cluster),
            90,
            addr(APISERVER_PORT),
        ),
        controller_manager=_component(
            paths,
            f"kube-controller-manager{s}",
            lambda: k8s.controller_manager_argv(paths, cluster),
            lambda: k8s.controller_manager_ready(paths, cluster),
            60,
        ),
        scheduler=_component(
            paths, f"kube-scheduler{s}", lambda: k8s.scheduler_argv(paths, cluster), lambda: True, 10
        ),
        agent=Component(
            f"agent{s}",
            lambda: agent_argv(paths, cluster),
            lambda: agent_ready(cluster, agent_pid),
            agent_pid,
            paths.logs / f"agent{s}.log",
            60,
            addr(KUBELET_PORT),
        ),
    )
