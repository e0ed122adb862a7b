"""Where a deploy's credentials come from: ``Credentials`` gives the cluster access for a hub in an
environment and the login for a registry host. The CLI, the tasks and the flows all take theirs from
``blocks.resolve.credentials`` (a hub's Prefect block, else what is here); without it a deploy uses
``KeyFileCredentials``: the classic key files named in hubploy.yaml, without Prefect."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from hubploy import cloud
from hubploy.deploy.model import ClusterAccessLike
from hubploy.layout import Hub
from hubploy.registry import RegistryCredentials
from hubploy.registry_login import credentials_from_key_files


class Credentials(Protocol):
    def cluster_access(self, hub: Hub, env_name: str) -> AbstractContextManager[ClusterAccessLike]:
        """A kubeconfig and child env for deploying ``hub`` to ``env_name``, while the block lasts."""

    def registry(self, hub: Hub, host: str) -> RegistryCredentials | None:
        """A login for ``host``, asked only when the registry refuses anonymous access; None: none."""


@dataclass(frozen=True)
class KeyFileCredentials:
    """The hub's classic key files (sops-decrypted with ``env``), or the ambient KUBECONFIG for a hub
    without a ``cluster:`` section; no registry login for a registry configured with a block."""

    env: Mapping[str, str]

    def cluster_access(self, hub: Hub, env_name: str) -> AbstractContextManager[ClusterAccessLike]:
        return cloud.cluster_access(hub, env_name, base_env=self.env)

    def registry(self, hub: Hub, host: str) -> RegistryCredentials | None:
        registry = hub.config.images.registry if hub.config.images else None
        if registry is None or registry.settings is not None and registry.settings.credentials_block:
            return None
        return credentials_from_key_files(hub, host, self.env)
