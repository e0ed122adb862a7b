"""What `hubploy init` writes about the cluster and the registry of its hub: the `cluster:` section of the
chosen provider, the `images.registry` section the registry's host calls for, and the key file encrypted
into the hub's secrets/ from the file the operator gives (a kubeconfig's context with every file it
names read in, a GCP service-account key, AWS keys, an Azure service principal)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from hubploy.cloud.aws import keys_from_mapping
from hubploy.cloud.azure import service_principal_from_mapping
from hubploy.cloud.base import load_kubeconfig
from hubploy.cloud.kubeconfig import build_kubeconfig, fields_from_kubeconfig
from hubploy.config.models import split_repository
from hubploy.errors import CredentialsError, HubployError, SecretsError
from hubploy.runner import register_secret
from hubploy.secrets import decrypt_to_mapping

Provider = Literal["kubeconfig", "gcloud", "aws", "azure"]
PROVIDERS: tuple[Provider, ...] = ("kubeconfig", "gcloud", "aws", "azure")
GOOGLE_REGISTRY = re.compile(r"^([a-z0-9-]+-docker\.pkg\.dev|([a-z]+\.)?gcr\.io)$")
ECR_REGISTRY = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com$")
ACR_REGISTRY = re.compile(r"^([a-z0-9]+)\.azurecr\.io$")
KEY_FILE_KEYS: dict[Provider, str] = {
    "kubeconfig": "filename",
    "gcloud": "service_key",
    "aws": "service_key",
    "azure": "auth_file",
}
KEY_FILE_NAMES: dict[Provider, str] = {
    "kubeconfig": "kubeconfig.yaml",
    "gcloud": "gcloud-service-key.json",
    "aws": "aws-credentials.yaml",
    "azure": "azure-service-principal.yaml",
}
# The options each provider reads (the others are refused, not silently dropped).
PROVIDER_OPTIONS: dict[Provider, frozenset[str]] = {
    "kubeconfig": frozenset({"kubeconfig", "context", "credentials_block"}),
    "gcloud": frozenset({"project", "cluster", "zone", "region", "credentials_file", "credentials_block"}),
    "aws": frozenset({"cluster", "region", "role_arn", "credentials_file", "credentials_block"}),
    "azure": frozenset({"resource_group", "cluster", "credentials_file", "credentials_block"}),
}


@dataclass(frozen=True)
class ClusterInput:
    """Where the hub runs and how hubploy gets its credentials, as the `hubploy init` flags give them."""

    provider: Provider = "kubeconfig"
    kubeconfig: Path | None = None
    context: str | None = None
    project: str | None = None
    cluster: str | None = None
    zone: str | None = None
    region: str | None = None
    resource_group: str | None = None
    role_arn: str | None = None
    credentials_file: Path | None = None
    credentials_block: str | None = None

    def given(self) -> set[str]:
        return {f.name for f in fields(self) if f.name != "provider" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Missing:
    """A value the chosen provider needs that no flag gave: the flag, the field, the question to ask."""

    flag: str
    field: str
    question: str


@dataclass(frozen=True)
class KeyFile:
    """A key file for the hub's secrets/, in clear (encrypted before anything is written)."""

    name: str
    text: str = field(repr=False)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def missing_values(cluster: ClusterInput, registry: str | None) -> list[Missing]:
    """The values ``cluster``'s provider (and the registry of the image ``registry``) still need."""
    needed: list[Missing] = []

    def need(name: str, question: str) -> None:
        if getattr(cluster, name) is None:
            needed.append(Missing(flag(name), name, question))

    if cluster.provider == "gcloud":
        need("project", "GCP project of the GKE cluster")
        need("cluster", "name of the GKE cluster")
        if cluster.zone is None and cluster.region is None:
            needed.append(Missing("--zone", "zone", "zone (or region) of the GKE cluster"))
    elif cluster.provider == "aws":
        need("cluster", "name of the EKS cluster")
        need("region", "AWS region of the EKS cluster")
        if not {"role_arn", "credentials_file", "credentials_block"} & cluster.given():
            needed.append(
                Missing(
                    "--role-arn",
                    "role_arn",
                    "IAM role hubploy assumes to reach the cluster (arn:aws:iam::ACCOUNT:role/NAME)",
                )
            )
    elif cluster.provider == "azure":
        need("resource_group", "Azure resource group of the AKS cluster")
        need("cluster", "name of the AKS cluster")
        if not {"credentials_file", "credentials_block"} & cluster.given():
            needed.append(
                Missing(
                    "--credentials-file",
                    "credentials_file",
                    "service principal file (the output of `az ad sp create-for-rbac`)",
                )
            )
    if registry and ACR_REGISTRY.match(split_repository(registry)[0]) and cluster.provider != "azure":
        need("resource_group", "Azure resource group of the container registry")
    return needed


def check_options(cluster: ClusterInput, registry: str | None) -> None:
    """Refuse options the provider does not read, and two ways of giving one thing."""
    host = split_repository(registry)[0] if registry else ""
    allowed = set(PROVIDER_OPTIONS[cluster.provider])
    if GOOGLE_REGISTRY.match(host):
        allowed.add("project")
    if ACR_REGISTRY.match(host):
        allowed.add("resource_group")
    unread = sorted(cluster.given() - allowed)
    if unread:
        raise HubployError(
            f"{', '.join(flag(n) for n in unread)} not read with --provider {cluster.provider}",
            hint="leave it out, or choose the provider it belongs to",
        )
    if {"zone", "region"} <= cluster.given():
        raise HubployError("give --zone or --region for a GKE cluster, not both")
    if cluster.context is not None and cluster.kubeconfig is None:
        raise HubployError("--context picks the context of --kubeconfig: give both")
    sources = sorted({"role_arn", "credentials_file", "credentials_block", "kubeconfig"} & cluster.given())
    if len(sources) > 1:
        raise HubployError(
            f"give only one of {', '.join(flag(s) for s in sources)}: each is a way to get "
            "the cluster's credentials"
        )


def key_file(cluster: ClusterInput, env: Mapping[str, str]) -> KeyFile | None:
    """The key file of the credentials the operator gave, read and checked; None when there is none."""
    name = KEY_FILE_NAMES[cluster.provider]
    if cluster.provider == "kubeconfig":
        if cluster.kubeconfig is None:
            return None
        return KeyFile(name, _kubeconfig_text(cluster.kubeconfig, cluster.context))
    path = cluster.credentials_file
    if path is None:
        return None
    try:
        if cluster.provider == "gcloud":
            return KeyFile(name, _service_account_key(path))
        data = decrypt_to_mapping(path, env=env, allow_plaintext=True)
        if cluster.provider == "aws":
            key_id, secret = keys_from_mapping(data)
            return KeyFile(
                name,
                yaml.safe_dump({"creds": {"aws_access_key_id": key_id, "aws_secret_access_key": secret}}),
            )
        app_id, tenant, password = service_principal_from_mapping(data)
        return KeyFile(name, yaml.safe_dump({"appId": app_id, "tenant": tenant, "password": password}))
    except (CredentialsError, SecretsError) as exc:
        raise HubployError(
            f"--credentials-file {path}: {exc.message.removeprefix(f'{path}: ')}", hint=exc.hint
        ) from None


def _kubeconfig_text(path: Path, context: str | None) -> str:
    """The context (default: the current one) of the kubeconfig at ``path`` as a kubeconfig of its own,
    with the certificate and key files it names read in, so that it works on any machine."""
    try:
        found = fields_from_kubeconfig(load_kubeconfig(path), context, base_dir=path.parent)
    except CredentialsError as exc:
        raise HubployError(
            f"--kubeconfig {path}: {exc.message.removeprefix(f'{path}: ')}",
            hint=exc.hint
            or "give a kubeconfig whose context has a token or a client "
            "certificate, or choose the cloud provider",
        ) from None
    for secret in (found.token, found.client_key_data):
        register_secret(secret)
    kubeconfig = build_kubeconfig(
        server=found.server,
        certificate_authority_data=found.certificate_authority_data,
        insecure_skip_tls_verify=found.insecure_skip_tls_verify,
        token=found.token,
        client_certificate_data=found.client_certificate_data,
        client_key_data=found.client_key_data,
        context=found.context,
    )
    return str(yaml.safe_dump(kubeconfig, sort_keys=False))


def _service_account_key(path: Path) -> str:
    try:
        text = path.read_text()
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CredentialsError(f"not a readable JSON key file: {type(exc).__name__}") from None
    if not isinstance(data, dict) or "type" not in data:
        raise CredentialsError(
            "not a Google credentials file (a JSON object with `type`)",
            hint="give the JSON key of a service account, or leave the flag out to use "
            "application default credentials",
        )
    register_secret(data.get("private_key"))
    return text


def _credentials(cluster: ClusterInput, key: KeyFile | None) -> dict[str, str]:
    """The credentials keys of a provider section: the key file, the block or the role given."""
    found = {KEY_FILE_KEYS[cluster.provider]: key.name} if key else {}
    if cluster.credentials_block:
        found["credentials_block"] = cluster.credentials_block
    if cluster.role_arn:
        found["role_arn"] = cluster.role_arn
    return found


def cluster_section(cluster: ClusterInput, key: KeyFile | None) -> dict[str, Any] | None:
    """The `cluster:` section, or None for a kubeconfig cluster without a file or block (deploys then
    use the caller's KUBECONFIG)."""
    settings: dict[str, Any]
    if cluster.provider == "kubeconfig":
        settings = _credentials(cluster, key)
        if not settings:
            return None
    elif cluster.provider == "gcloud":
        settings = {
            "project": cluster.project,
            "cluster": cluster.cluster,
            "zone": cluster.zone or cluster.region,
        }
    elif cluster.provider == "aws":
        settings = {"cluster": cluster.cluster, "region": cluster.region}
    else:
        settings = {"resource_group": cluster.resource_group, "cluster": cluster.cluster}
    return {"provider": cluster.provider, cluster.provider: {**settings, **_credentials(cluster, key)}}


def registry_section(image: str, cluster: ClusterInput, key: KeyFile | None) -> dict[str, Any] | None:
    """The `images.registry` section for the image repository ``image``: a login through the cloud whose
    registry its host is (with the cluster's credentials when the cluster is on that cloud); None for any
    other registry (its login comes from HUBPLOY_REGISTRY_USERNAME/PASSWORD or a dockerconfig key file)."""
    host = split_repository(image)[0]
    same_cloud: dict[str, Any] = {}
    if GOOGLE_REGISTRY.match(host):
        settings: dict[str, Any] = {"host": host}
        if cluster.project:
            settings["project"] = cluster.project
        provider: Provider = "gcloud"
    elif match := ECR_REGISTRY.match(host):
        settings, provider = {"account_id": match.group(1), "region": match.group(2)}, "aws"
    elif match := ACR_REGISTRY.match(host):
        settings, provider = {"resource_group": cluster.resource_group, "registry": match.group(1)}, "azure"
    else:
        return None
    if cluster.provider == provider:
        same_cloud = _credentials(cluster, key)
    return {"provider": provider, provider: {**settings, **same_cloud}}
