"""Which credentials a hub uses: the Prefect block its hubploy.yaml names, or its classic key files.

``credentials(repo, base_env)`` is the one way the CLI, the tasks and the flows get them: cluster access
for deploys, rollbacks and drift checks, registry logins for deploys and builds. Prefect and the block
classes are imported only when a hub names a block, so ``hubploy deploy`` and ``hubploy build`` of a
classic repository never load Prefect.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from hubploy import cloud
from hubploy.cloud import ClusterAccess, fill_context
from hubploy.config.models import AwsRegistry, AzureRegistry, DockerconfigRegistry, GcloudRegistry
from hubploy.deploy import sops_env
from hubploy.errors import CredentialsError
from hubploy.layout import DeploymentRepo, Hub
from hubploy.registry import RegistryCredentials
from hubploy.registry_login import (
    aws_login,
    azure_login,
    credentials_from_env,
    credentials_from_key_files,
    fetch_credentials,
    gcloud_login,
)

if TYPE_CHECKING:
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from blocks.kubeconfig import KubeconfigCredentials

    ClusterCredentials = (
        GcpClusterCredentials | AwsClusterCredentials | AzureClusterCredentials | KubeconfigCredentials
    )


@dataclasses.dataclass(frozen=True)
class BlockCredentials:
    """The credentials of a repository's hubs (``hubploy.deploy.Credentials``): a hub's block, else its
    key files (decrypted with ``env``), else the ambient KUBECONFIG and HUBPLOY_REGISTRY_*."""

    env: Mapping[str, str]

    def cluster_access(self, hub: Hub, env_name: str) -> AbstractContextManager[ClusterAccess]:
        return cluster_access_for(hub, env_name, base_env=self.env)

    def registry(self, hub: Hub, host: str) -> RegistryCredentials | None:
        return hub_registry_credentials(hub, host, self.env)


def credentials(repo: DeploymentRepo, base_env: Mapping[str, str]) -> BlockCredentials:
    """Cluster and registry credentials for the hubs of ``repo``, for children of ``base_env``."""
    return BlockCredentials(sops_env(repo, base_env))


def block_types() -> dict[str, type[ClusterCredentials]]:
    """The block class that serves each cluster provider (importing Prefect)."""
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from blocks.kubeconfig import KubeconfigCredentials

    return {
        "gcloud": GcpClusterCredentials,
        "aws": AwsClusterCredentials,
        "azure": AzureClusterCredentials,
        "kubeconfig": KubeconfigCredentials,
    }


def load_block(provider: str, name: str) -> ClusterCredentials:
    """Load the credentials block ``name`` of the type that serves ``provider``."""
    types = block_types()
    block_type = types.get(provider)
    if block_type is None:
        raise CredentialsError(
            f"no hubploy credentials block serves provider {provider!r}",
            hint=f"the block types are for: {', '.join(types)}",
        )
    try:
        # load is sync here (called outside any event loop): the block, never a coroutine
        return block_type.load(name)  # type: ignore[return-value]
    except ValueError as exc:
        raise CredentialsError(
            f"cannot load {block_type.get_block_type_name()} block {name!r}: {exc}",
            hint=f"create it in the Prefect UI, or with {block_type.__name__}(...)"
            f".save({name!r}); `prefect block ls` lists the saved blocks",
        ) from None


@contextlib.contextmanager
def cluster_access_for(hub: Hub, env_name: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
    """Cluster access for deploying ``hub`` to ``env_name``: through the `credentials_block` of its
    `cluster:` section if it names one, else through hubploy.cloud.cluster_access (key files, or the
    ambient KUBECONFIG). `cluster.kubeconfig.context` in hubploy.yaml wins over the block's context."""
    cluster = hub.config.cluster
    block_name = cluster.settings.credentials_block if cluster else None
    if cluster is None or not block_name:
        with cloud.cluster_access(hub, env_name, base_env=base_env) as access:
            yield access
        return
    from blocks.kubeconfig import KubeconfigCredentials

    namespace = hub.namespace(env_name)
    block = load_block(cluster.provider, block_name)
    template = cluster.context_template
    if template and isinstance(block, KubeconfigCredentials):
        block = block.model_copy(update={"context": template})  # the built kubeconfig carries that name
    with block.cluster_access(namespace, base_env=base_env) as access:
        context = fill_context(template, namespace)
        yield dataclasses.replace(access, context=context) if context else access


def hub_registry_credentials(hub: Hub, host: str, base_env: Mapping[str, str]) -> RegistryCredentials | None:
    """Credentials for ``hub``'s images on ``host``: the hub's credentials block
    (DockerRegistryCredentials for dockerconfig, a cloud block otherwise), else its key files, else
    HUBPLOY_REGISTRY_USERNAME/PASSWORD; None for a hub with no registry config and no such env."""
    registry = hub.config.images.registry if hub.config.images else None
    if registry is None:
        return credentials_from_env(host, base_env)
    settings = registry.settings
    if settings is None or not settings.credentials_block:
        return credentials_from_key_files(hub, host, base_env)
    if isinstance(settings, DockerconfigRegistry):
        return credentials_from_docker_block(settings.credentials_block, host)
    return credentials_from_cloud_block(settings, host, base_env)


def credentials_from_docker_block(block_name: str, host: str) -> RegistryCredentials:
    """Username/password from a prefect-docker DockerRegistryCredentials block."""
    from prefect_docker.credentials import DockerRegistryCredentials

    try:
        block = DockerRegistryCredentials.load(block_name)
    except ValueError as exc:
        raise CredentialsError(
            f"cannot load the DockerRegistryCredentials block {block_name!r}: {exc}",
            hint="create it in the Prefect UI or with DockerRegistryCredentials(...).save()",
        ) from None
    block_host = re.sub(r"^https?://", "", block.registry_url).rstrip("/")
    if block_host != host:
        raise CredentialsError(f"block {block_name!r} holds credentials for {block_host}, not for {host}")
    return RegistryCredentials(host, block.username, block.password.get_secret_value())


def credentials_from_cloud_block(
    settings: GcloudRegistry | AwsRegistry | AzureRegistry, host: str, base_env: Mapping[str, str]
) -> RegistryCredentials:
    """A registry login with the identity of the per-cloud credentials block that ``settings`` name,
    in private config dirs (hubploy.cloud)."""
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from hubploy.cloud import aws, azure, gcloud

    assert settings.credentials_block is not None
    block = load_block(settings.provider, settings.credentials_block)
    match settings, block:
        case GcloudRegistry(), GcpClusterCredentials():
            info = block.service_account_info.get_secret_value() if block.service_account_info else None
            with gcloud.gcloud_env(info, base_env=base_env) as env:
                return fetch_credentials(gcloud_login(Path(env["CLOUDSDK_CONFIG"])), host, base_env=env)
        case AwsRegistry(account_id=account_id, region=region), AwsClusterCredentials():
            secret = block.aws_secret_access_key.get_secret_value() if block.aws_secret_access_key else None
            with aws.aws_env(
                region=region,
                access_key_id=block.aws_access_key_id,
                secret_access_key=secret,
                role_arn=block.role_arn,
                session_name="hubploy-registry-auth",
                base_env=base_env,
            ) as env:
                command = aws_login(Path(env["AWS_SHARED_CREDENTIALS_FILE"]).parent, account_id, region)
                return fetch_credentials(command, base_env=env)
        case AzureRegistry(registry=name), AzureClusterCredentials():
            with azure.az_env(
                client_id=block.client_id,
                tenant_id=block.tenant_id,
                client_secret=block.client_secret.get_secret_value(),
                subscription_id=block.subscription_id,
                base_env=base_env,
            ) as env:
                return fetch_credentials(azure_login(name, env), base_env=env)
    raise CredentialsError(f"a {type(block).__name__} block gives no {settings.provider} registry login")
