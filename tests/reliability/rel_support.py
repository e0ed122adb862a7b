"""Helpers of the reliability suite shared by its conftest and test modules (import as
`rel_support`; this directory is on sys.path while its tests run)."""

from __future__ import annotations

import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from helpers.example_repo import copy_example_repo

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Verbs that reach a cluster (helm and kubectl). `helm version`, `helm template`, `helm dependency`
# and `kubectl version --client` do not.
CLUSTER_VERBS = {
    "upgrade",
    "install",
    "get",
    "history",
    "apply",
    "create",
    "delete",
    "rollback",
    "uninstall",
    "status",
    "list",
    "ls",
    "patch",
    "replace",
    "wait",
    "rollout",
    "test",
    "cluster-info",
    "auth",
    "describe",
    "logs",
    "exec",
    "scale",
    "label",
    "annotate",
}


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Shims:
    """helm and kubectl shims that log every call, then run the real tool (which cannot reach a
    cluster: KUBECONFIG points at a closed port)."""

    dir: Path
    log: Path
    kubeconfig: Path
    env: dict[str, str]

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split("\t") for line in self.log.read_text().splitlines() if line]

    def cluster_calls(self) -> list[list[str]]:
        """Logged calls whose arguments include a cluster-touching verb."""
        return [c for c in self.calls() if CLUSTER_VERBS & set(c[1:])]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


def _write_shim(path: Path, name: str, real: str, log: Path) -> None:
    path.write_text(
        "#!/bin/sh\n"
        f"printf '%s' '{name}' >> '{log}'\n"
        f"for a in \"$@\"; do printf '\\t%s' \"$a\" >> '{log}'; done\n"
        f"printf '\\n' >> '{log}'\n"
        f"exec '{real}' \"$@\"\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


GOOD_HUB = "h"


def copy_good_repo(root: Path, hub: str = GOOD_HUB) -> Path:
    """This project's example layout with one hub ``hub`` (a copy of deployments/minimal): the chart,
    repo settings (with a 30 s health check), sops rules and the example age key."""
    return copy_example_repo(root, {hub: "minimal"}, settings_extra="health_check_timeout: 30\n")
