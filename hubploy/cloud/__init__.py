"""Cluster credentials for one run, per cloud, without global side effects.

`cluster_access(hub, env_name, base_env=...)` yields a :class:`ClusterAccess`: a temporary
kubeconfig and the env for helm/kubectl. Nothing here mutates ``os.environ`` or the user's gcloud,
az or aws config: CLOUDSDK_CONFIG, AZURE_CONFIG_DIR and the AWS_* files point at private temp dirs
in the child env only, and those dirs are deleted when the context exits, also on an exception. No
secret is ever on a command line; every secret is registered with the runner for redaction.

This module reads the classic key files named in hubploy.yaml (sops-decrypted just in time); a
`credentials_block` is resolved by ``blocks.resolve.cluster_access_for``, which falls back to this.
The provider modules (gcloud, aws, azure, kubeconfig) take plain credential values, so the Prefect
blocks reuse them, and each offers a `*_env` context (a logged-in CLI env) for registry logins.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

from hubploy.cloud import aws, azure, gcloud, kubeconfig
from hubploy.cloud.base import ClusterAccess, fill_context, verify_access
from hubploy.config.models import AwsCluster, AzureCluster, ClusterSettings, GcloudCluster, KubeconfigCluster
from hubploy.errors import CredentialsError
from hubploy.layout import Hub
from hubploy.secrets import decrypt_to_mapping, with_age_key

__all__ = ["ClusterAccess", "cluster_access", "fill_context", "verify_access"]


@contextlib.contextmanager
def cluster_access(hub: Hub, env_name: str, *, base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
    """Credentials from the key files of ``hub``'s hubploy.yaml; without a ``cluster:`` section, the
    ambient KUBECONFIG (or the pod's service account). ``cluster.kubeconfig.context`` applies to every
    provider."""
    namespace = hub.namespace(env_name)
    cluster = hub.config.cluster
    if cluster is None:
        with kubeconfig.ambient_access(base_env) as access:
            yield access
        return
    settings = cluster.settings
    if settings.credentials_block:
        raise CredentialsError(
            f"hub {hub.name!r} names credentials block {settings.credentials_block!r}",
            hint="resolve it with blocks.resolve.cluster_access_for",
        )
    context = fill_context(cluster.context_template, namespace)
    policy = hub.repo.settings.secrets
    sops_env = with_age_key(base_env, hub.repo.age_key_file)

    def read(filename: str) -> dict[str, Any]:
        return decrypt_to_mapping(
            hub.secret_file(filename), env=sops_env, allow_plaintext=policy.allow_plaintext
        )

    with _key_file_access(settings, read, base_env, context) as access:
        yield access


def _key_file_access(
    settings: ClusterSettings,
    read: Callable[[str], dict[str, Any]],
    base_env: Mapping[str, str],
    context: str | None,
) -> AbstractContextManager[ClusterAccess]:
    """The provider module's cluster access for these settings, with the key files they name."""
    match settings:
        case GcloudCluster(project=project, cluster=name, zone=zone, service_key=key):
            return gcloud.cluster_access(
                project=project,
                cluster=name,
                location=zone,
                base_env=base_env,
                service_account_info=read(key) if key else None,
                context=context,
            )
        case AwsCluster(cluster=name, region=region, service_key=key, role_arn=role_arn):
            key_id, secret = aws.keys_from_mapping(read(key)) if key else (None, None)
            return aws.cluster_access(
                cluster=name,
                region=region,
                access_key_id=key_id,
                role_arn=role_arn,
                secret_access_key=secret,
                base_env=base_env,
                context=context,
            )
        case AzureCluster(resource_group=group, cluster=name, auth_file=str(auth_file)):
            app_id, tenant, password = azure.service_principal_from_mapping(read(auth_file))
            return azure.cluster_access(
                client_id=app_id,
                tenant_id=tenant,
                client_secret=password,
                resource_group=group,
                cluster=name,
                base_env=base_env,
                context=context,
            )
        case KubeconfigCluster(filename=str(filename)):
            return kubeconfig.kubeconfig_access(read(filename), base_env=base_env, context=context)
    raise CredentialsError(f"{settings.provider}: no key file to get cluster credentials from")
