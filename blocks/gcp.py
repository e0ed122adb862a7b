"""GKE cluster credentials: a service-account JSON key, or application default credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field, HttpUrl, field_validator

from hubploy.cloud import ClusterAccess, gcloud
from hubploy.errors import CredentialsError


class GcpClusterCredentials(Block):
    """Access to a GKE cluster: `gcloud container clusters get-credentials` in a private gcloud
    config, with a kubeconfig whose gke-gcloud-auth-plugin refreshes tokens during long deploys.

    Example:
        ```python
        import os
        from blocks.gcp import GcpClusterCredentials
        credentials = GcpClusterCredentials.load("BLOCK_NAME")
        with credentials.cluster_access("hub-staging", base_env=dict(os.environ)) as access:
            print(access.kubeconfig, access.context)  # run helm/kubectl with env=access.env
        ```
    """

    _block_type_name = "GCP Cluster Credentials"
    _description = "A GKE cluster and the service-account key (or ADC) hubploy deploys to it with."
    _documentation_url = HttpUrl(
        "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl"
    )

    service_account_info: SecretDict | None = Field(
        None,
        description="Contents of the service-account JSON key; empty means application default "
        "credentials (GOOGLE_APPLICATION_CREDENTIALS, the ADC file, or the metadata "
        "server).",
    )
    project: str = Field(description="GCP project of the GKE cluster.")
    cluster: str = Field(description="GKE cluster name.")
    location: str = Field(description="Zone (us-central1-a) or region (us-central1) of the cluster.")

    @field_validator("service_account_info")
    @classmethod
    def _is_key(cls, value: SecretDict | None) -> SecretDict | None:
        if value is not None:
            try:
                gcloud.check_service_account_info(value.get_secret_value())
            except CredentialsError as exc:
                raise ValueError(exc.message) from None
        return value

    @contextlib.contextmanager
    def cluster_access(self, namespace: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
        """A temp kubeconfig and child env for one run (``namespace`` is unused: GKE has one context)."""
        info: dict[str, Any] | None = (
            self.service_account_info.get_secret_value() if self.service_account_info is not None else None
        )
        with gcloud.cluster_access(
            project=self.project,
            cluster=self.cluster,
            location=self.location,
            service_account_info=info,
            base_env=base_env,
        ) as access:
            yield access
