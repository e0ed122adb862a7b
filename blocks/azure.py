"""AKS cluster credentials: a service principal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr

from hubploy.cloud import ClusterAccess, azure


class AzureClusterCredentials(Block):
    """Access to an AKS cluster: `az login` as a service principal in a private AZURE_CONFIG_DIR (the
    password is read from a 0600 file, never the command line), then `az aks get-credentials`.

    Example:
        ```python
        import os
        from blocks.azure import AzureClusterCredentials
        credentials = AzureClusterCredentials.load("BLOCK_NAME")
        with credentials.cluster_access("hub-staging", base_env=dict(os.environ)) as access:
            print(access.kubeconfig)  # run helm/kubectl with env=access.env
        ```
    """

    _block_type_name = "Azure Cluster Credentials"
    _description = "An AKS cluster and the service principal hubploy deploys to it with."
    _documentation_url = HttpUrl("https://learn.microsoft.com/cli/azure/aks#az-aks-get-credentials")

    client_id: str = Field(description="Application (client) id of the service principal (appId).")
    tenant_id: str = Field(description="Tenant of the service principal.")
    client_secret: SecretStr = Field(description="Password (client secret) of the service principal.")
    subscription_id: str | None = Field(
        None, description="Subscription of the cluster, if the principal sees several."
    )
    resource_group: str = Field(description="Resource group of the AKS cluster.")
    cluster: str = Field(description="AKS cluster name.")

    @contextlib.contextmanager
    def cluster_access(self, namespace: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
        """A temp kubeconfig and child env for one run (``namespace`` is unused: AKS has one context)."""
        with azure.cluster_access(
            client_id=self.client_id,
            tenant_id=self.tenant_id,
            client_secret=self.client_secret.get_secret_value(),
            subscription_id=self.subscription_id,
            resource_group=self.resource_group,
            cluster=self.cluster,
            base_env=base_env,
        ) as access:
            yield access
