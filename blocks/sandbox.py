"""The Prefect blocks the example hubs name when they run on the local sandbox."""

from __future__ import annotations

from collections.abc import Mapping

from prefect_docker.credentials import DockerRegistryCredentials

SANDBOX_REGISTRY_BLOCK = "sandbox-registry"


def save_sandbox_blocks(env: Mapping[str, str]) -> None:
    """Save the sandbox registry's login as the DockerRegistryCredentials block the examples use."""
    DockerRegistryCredentials(
        username=env["HUBPLOY_REGISTRY_USERNAME"],
        password=env["HUBPLOY_REGISTRY_PASSWORD"],
        registry_url=env["HUBPLOY_REGISTRY"],
    ).save(SANDBOX_REGISTRY_BLOCK, overwrite=True)
