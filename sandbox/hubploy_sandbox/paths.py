"""Where the sandbox keeps things: a cache that survives `down`, and a runtime dir that does not.

The runtime dir holds what is shared by the sandbox (registry, tools, age key, the kubeconfig with one
context per cluster) and one directory per Kubernetes cluster (``clusters/<n>``: etcd data, PKI, agent
state, logs, volumes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hubploy_sandbox.versions import ETCD_VERSION, HELM_VERSIONS, KUBERNETES_VERSION

NODE_NAME = "sandbox-node"
REGISTRY_USER = "hubploy"
CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the parts shared by the sandbox; shifted by HUBPLOY_SANDBOX_PORT_OFFSET so two
    sandboxes can coexist. (Each cluster's etcd, API server and kubelet listen on the cluster's own node
    address, see :mod:`hubploy_sandbox.network`, so they need no offset.)"""

    registry: int = 5000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        env = os.environ if environ is None else environ
        off = int(env.get("HUBPLOY_SANDBOX_PORT_OFFSET", "0") or 0)
        return cls(cls().registry + off)


# The ports each cluster's parts listen on, at its node address.
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
APISERVER_PORT = 6443
KUBELET_PORT = 10250


def cluster_name(index: int) -> str:
    """The kubeconfig context of cluster ``index`` (1-based): ``sandbox``, ``sandbox-2``, ..."""
    return "sandbox" if index == 1 else f"sandbox-{index}"


@dataclass(frozen=True)
class ClusterPaths:
    """The files of one cluster of a sandbox."""

    index: int
    root: Path

    @property
    def name(self) -> str:
        return cluster_name(self.index)

    @property
    def suffix(self) -> str:
        """Appended to the names of this cluster's processes: "" for the first, "-2" for the second..."""
        return "" if self.index == 1 else f"-{self.index}"

    @property
    def network_file(self) -> Path:
        return self.root / "network.json"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def serving_cert(self) -> Path:
        return self.pki / "serving" / "apiserver.crt"

    @property
    def token_file(self) -> Path:
        return self.pki / "tokens.csv"

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig for this cluster alone (its controllers and agent use it)."""
        return self.root / "kubeconfig"

    @property
    def agent_state(self) -> Path:
        return self.root / "agent"

    @property
    def volumes(self) -> Path:
        """Host directories of the PersistentVolumes the agent provisions."""
        return self.root / "volumes"


@dataclass(frozen=True)
class SandboxPaths:
    """All files of one sandbox. ``cache`` survives `down`; ``runtime`` is removed by it."""

    cache: Path
    runtime: Path
    ports: Ports

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxPaths:
        env = os.environ if environ is None else environ
        return cls(
            Path(env.get("HUBPLOY_CACHE_DIR") or "/var/cache/hubploy"),
            Path(env.get("HUBPLOY_SANDBOX_DIR") or "/tmp/hubploy-sandbox"),
            Ports.from_env(env),
        )

    # cache ---------------------------------------------------------------
    @property
    def k8s_bin(self) -> Path:
        return self.cache / f"kubernetes-{KUBERNETES_VERSION}"

    @property
    def etcd_bin(self) -> Path:
        return self.cache / f"etcd-{ETCD_VERSION}"

    def helm_dir(self, major: str) -> Path:
        return self.cache / f"helm-v{HELM_VERSIONS[major]}"

    @property
    def image_envs(self) -> Path:
        """The environments standing in for container images (see :mod:`hubploy_sandbox.image_envs`)."""
        return self.cache / "images"

    # runtime -------------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.runtime.with_name(self.runtime.name + ".lock")

    @property
    def kubeconfig(self) -> Path:
        """One context per cluster; the first cluster's is current."""
        return self.runtime / "kubeconfig"

    def cluster(self, index: int) -> ClusterPaths:
        return ClusterPaths(index, self.runtime / "clusters" / str(index))

    def clusters(self) -> list[ClusterPaths]:
        """The clusters this sandbox has (directories under ``runtime/clusters``), in order."""
        root = self.runtime / "clusters"
        found = sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []
        return [self.cluster(i) for i in found]

    @property
    def external_kubeconfig_file(self) -> Path:
        """Holds the path of a user's own cluster kubeconfig when the sandbox uses one."""
        return self.runtime / "external-kubeconfig"

    @property
    def pids(self) -> Path:
        return self.runtime / "pids"

    @property
    def logs(self) -> Path:
        return self.runtime / "logs"

    @property
    def bin(self) -> Path:
        return self.runtime / "bin"

    @property
    def registry_dir(self) -> Path:
        return self.runtime / "registry"

    @property
    def registry_password(self) -> Path:
        return self.registry_dir / "password"

    @property
    def containers(self) -> Path:
        return self.runtime / "containers"

    @property
    def age_key(self) -> Path:
        return self.runtime / "age" / "key.txt"

    @property
    def registry_host(self) -> str:
        return f"localhost:{self.ports.registry}"
