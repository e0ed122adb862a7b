"""Which credentials a hub's deploy uses: the block named in hubploy.yaml, or its classic key files."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Mapping

from blocks.aws import AwsClusterCredentials
from blocks.azure import AzureClusterCredentials
from blocks.gcp import GcpClusterCredentials
from blocks.kubeconfig import KubeconfigCredentials
from hubploy import cloud
from hubploy.cloud import ClusterAccess, fill_context
from hubploy.errors import CredentialsError
from hubploy.layout import Hub

ClusterCredentials = GcpClusterCredentials | AwsClusterCredentials | AzureClusterCredentials | KubeconfigCredentials
BLOCK_TYPES: dict[str, type[ClusterCredentials]] = {
    "gcloud": GcpClusterCredentials,
    "aws": AwsClusterCredentials,
    "azure": AzureClusterCredentials,
    "kubeconfig": KubeconfigCredentials,
}


def load_block(provider: str, name: str) -> ClusterCredentials:
    """Load the credentials block ``name`` of the type that serves ``provider``."""
    block_type = BLOCK_TYPES.get(provider)
    if block_type is None:
        raise CredentialsError(f"no hubploy credentials block serves provider {provider!r}",
                               hint=f"the block types are for: {', '.join(BLOCK_TYPES)}")
    try:
        return block_type.load(name)
    except ValueError as exc:
        raise CredentialsError(f"cannot load {block_type.get_block_type_name()} block {name!r}: {exc}",
                               hint=f"create it in the Prefect UI, or with {block_type.__name__}(...)"
                                    f".save({name!r}); `prefect block ls` lists the saved blocks") from None


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
    namespace = hub.namespace(env_name)
    block = load_block(cluster.provider, block_name)
    template = cluster.context_template
    if template and isinstance(block, KubeconfigCredentials):
        block = block.model_copy(update={"context": template})  # the built kubeconfig carries that name
    with block.cluster_access(namespace, base_env=base_env) as access:
        context = fill_context(template, namespace)
        yield dataclasses.replace(access, context=context) if context else access
