"""Kubeconfig credentials kept as secret fields, for clusters reached with a token or client cert.

prefect-kubernetes' `KubernetesClusterConfig` stores the whole kubeconfig, tokens included, in a
plain dict field that the API and UI return in clear; `from_cluster_config` takes one as input and
moves its credentials into `SecretStr` fields. The kubeconfig is rebuilt at run time, in a 0600 file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from prefect.blocks.core import Block
from pydantic import Field, HttpUrl, SecretStr, model_validator

from hubploy.cloud import ClusterAccess, fill_context, kubeconfig
from hubploy.errors import CredentialsError

if TYPE_CHECKING:
    from prefect_kubernetes.credentials import KubernetesClusterConfig


class KubeconfigCredentials(Block):
    """A Kubernetes API server and a token or client certificate, stored as secret fields.

    Example:
        ```python
        import os
        from blocks.kubeconfig import KubeconfigCredentials
        KubeconfigCredentials.from_kubeconfig("~/.kube/config", context="nrp").save("nrp", overwrite=True)
        credentials = KubeconfigCredentials.load("BLOCK_NAME")
        with credentials.cluster_access("hub-staging", base_env=dict(os.environ)) as access:
            print(access.kubeconfig, access.context)  # run helm/kubectl with env=access.env
        ```
    """

    _block_type_name = "Kubeconfig Credentials"
    _description = "A Kubernetes API server and a token or client certificate, kept in secret fields."
    _documentation_url = HttpUrl(
        "https://kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/"
    )

    server: str = Field(description="API server URL, e.g. https://k8s.example.org:6443.")
    certificate_authority_data: str | None = Field(
        None, description="Base64 PEM of the CA that signed the API server's certificate (public)."
    )
    insecure_skip_tls_verify: bool = Field(False, description="Skip TLS verification of the API server.")
    token: SecretStr | None = Field(None, description="Bearer token (e.g. a service-account token).")
    client_certificate_data: str | None = Field(None, description="Base64 PEM client certificate (public).")
    client_key_data: SecretStr | None = Field(
        None, description="Base64 PEM private key of the client certificate."
    )
    context: str | None = Field(
        None,
        description="Context name for the run; `{namespace}` is replaced "
        "by the release namespace. Default: hubploy.",
    )
    namespace: str | None = Field(None, description="Default namespace of the context.")

    @model_validator(mode="after")
    def _has_credentials(self) -> KubeconfigCredentials:
        if not self.token and not (self.client_certificate_data and self.client_key_data):
            raise ValueError("set a token, or a client certificate and key")
        return self

    @classmethod
    def from_kubeconfig(
        cls, source: str | Path | Mapping[str, Any], context: str | None = None
    ) -> KubeconfigCredentials:
        """Take the credentials of one context (default: the current one) of a kubeconfig file or dict;
        files it names (CA, certificate, key, tokenFile) are read in."""
        if isinstance(source, Mapping):
            data, base_dir = source, None
        else:
            path = Path(source).expanduser()
            try:
                data = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise CredentialsError(f"{path}: not a readable kubeconfig: {type(exc).__name__}") from None
            base_dir = path.parent
        if not isinstance(data, Mapping):
            raise CredentialsError("not a kubeconfig (expected a mapping)")
        fields = kubeconfig.fields_from_kubeconfig(data, context, base_dir=base_dir)
        return cls(
            server=fields.server,
            certificate_authority_data=fields.certificate_authority_data,
            insecure_skip_tls_verify=fields.insecure_skip_tls_verify,
            token=SecretStr(fields.token) if fields.token else None,
            client_certificate_data=fields.client_certificate_data,
            client_key_data=SecretStr(fields.client_key_data) if fields.client_key_data else None,
            context=fields.context,
            namespace=fields.namespace,
        )

    @classmethod
    def from_cluster_config(cls, config: KubernetesClusterConfig) -> KubeconfigCredentials:
        """Convert a prefect-kubernetes `KubernetesClusterConfig`, keeping its credentials secret."""
        return cls.from_kubeconfig(config.config, context=config.context_name)

    @contextlib.contextmanager
    def cluster_access(self, namespace: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
        """A temp kubeconfig (0600, rebuilt from the fields) and child env for one run."""
        context = fill_context(self.context, namespace) or kubeconfig.DEFAULT_CONTEXT
        data = kubeconfig.build_kubeconfig(
            server=self.server,
            certificate_authority_data=self.certificate_authority_data,
            insecure_skip_tls_verify=self.insecure_skip_tls_verify,
            token=self.token.get_secret_value() if self.token else None,
            client_certificate_data=self.client_certificate_data,
            client_key_data=self.client_key_data.get_secret_value() if self.client_key_data else None,
            context=context,
            namespace=self.namespace,
        )
        with kubeconfig.kubeconfig_access(data, base_env=base_env, context=context) as access:
            yield access
