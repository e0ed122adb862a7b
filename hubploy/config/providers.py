"""Registry and cluster sections of hubploy.yaml, per provider.

A section names its provider and keeps the provider's settings under a key of that name
(`provider: aws` + `aws: {...}`), as classic hubploy files do; as in hubploy, only the chosen
provider's section is read (another provider's is dropped unread, but for ``kubeconfig.context``).
Code reads them through ``Registry.settings`` and ``Cluster.settings``: one typed value of the union
``RegistrySettings`` or ``ClusterSettings``, told apart by its class (each declares its ``provider``),
never by probing for attributes. The aws `project` -> `account_id` and `zone` -> `region` aliases are
read as hubploy reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from hubploy.config.base import Strict

_BLOCK_DOC = "Name of a Prefect credentials block to use instead of a key file in secrets/."


def _rename_legacy_aws(data: Any) -> Any:
    """hubploy's legacy aws keys: `project` means `account_id`, `zone` means `region`."""
    if isinstance(data, dict):
        data = dict(data)
        for old, new in (("project", "account_id"), ("zone", "region")):
            if old in data and new not in data:
                data[new] = data.pop(old)
    return data


def _account_id(value: Any) -> Any:
    """An AWS account id written as a YAML number (hubploy formats it into the ECR host as it is): its
    digits, when they are the 12 an account id has (a number with leading zeros lost them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if len(str(value)) != 12:
            raise ValueError(
                f"account id {value} has {len(str(value))} digits, not 12: YAML read it as a "
                "number (and dropped any leading zeros); quote it"
            )
        return str(value)
    return value


AccountId = Annotated[str, BeforeValidator(_account_id), WithJsonSchema({"type": ["string", "integer"]})]


def _chosen_section_only(
    data: Any, providers: tuple[str, ...], *, keep: Mapping[str, tuple[str, ...]]
) -> Any:
    """hubploy reads only the section of the chosen provider: the others are dropped unread (a repository
    may keep another provider's settings around), except the keys in ``keep`` (the kubeconfig section's
    ``context`` applies to every provider)."""
    if not isinstance(data, dict) or data.get("provider") not in providers:
        return data
    chosen = data["provider"]
    kept = {}
    for key, value in data.items():
        if key not in providers or key == chosen:
            kept[key] = value
        elif key in keep and isinstance(value, dict) and any(k in value for k in keep[key]):
            kept[key] = {k: value[k] for k in keep[key] if k in value}
    return kept


class ProviderSettings(Strict):
    """What every provider's settings have: an optional credentials block, and key files in secrets/.
    Each class declares its own fields (``credentials_block`` among them) in the order the JSON Schema
    of hubploy.yaml lists them."""

    provider: ClassVar[str]
    if TYPE_CHECKING:
        credentials_block: str | None

    def key_files(self) -> dict[str, str]:
        """The key files these settings name in the hub's secrets/ dir: key -> file name."""
        return {}

    @staticmethod
    def _given(**files: str | None) -> dict[str, str]:
        return {key: name for key, name in files.items() if name}


class _AwsSettings(ProviderSettings):
    """Shared rules of the aws sections: the legacy keys, and exactly one way to get credentials."""

    if TYPE_CHECKING:
        service_key: str | None
        role_arn: str | None

    _legacy = model_validator(mode="before")(_rename_legacy_aws)

    @model_validator(mode="after")
    def _one_source(self) -> _AwsSettings:
        given = {
            "service_key": self.service_key,
            "role_arn": self.role_arn,
            "credentials_block": self.credentials_block,
        }
        sources = [key for key, value in given.items() if value]
        if len(sources) > 1:
            raise ValueError(
                f"set only one of service_key, role_arn or credentials_block (found {', '.join(sources)})"
            )
        return self

    def key_files(self) -> dict[str, str]:
        return self._given(service_key=self.service_key)


# ---------------------------------------------------------------- registries (classic `build`)


class GcloudRegistry(ProviderSettings):
    provider: ClassVar[str] = "gcloud"
    project: str | None = Field(
        None, description="GCP project of the registry (accepted, unused by classic hubploy)."
    )
    service_key: str | None = Field(
        None, description="Service-account key file in secrets/, usually sops-encrypted."
    )
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)
    host: str | None = Field(
        None,
        description="Registry host to log in to, e.g. us-central1-docker.pkg.dev "
        "(classic hubploy only configured gcr.io).",
    )

    def key_files(self) -> dict[str, str]:
        return self._given(service_key=self.service_key)


class AwsRegistry(_AwsSettings):
    provider: ClassVar[str] = "aws"
    account_id: AccountId = Field(
        description="12-digit AWS account id owning the ECR registry (legacy key: project)."
    )
    region: str = Field(description="AWS region of the ECR registry (legacy key: zone).")
    service_key: str | None = Field(None, description="AWS credentials file in secrets/.")
    role_arn: str | None = Field(None, description="IAM role to assume for registry access.")
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)


class AzureRegistry(ProviderSettings):
    provider: ClassVar[str] = "azure"
    resource_group: str = Field(description="Azure resource group of the container registry.")
    registry: str = Field(description="Azure Container Registry name (without .azurecr.io).")
    auth_file: str | None = Field(
        None, description="Service principal JSON/YAML (appId, tenant, password) in secrets/."
    )
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def key_files(self) -> dict[str, str]:
        return self._given(auth_file=self.auth_file)


class DockerconfigRegistry(ProviderSettings):
    provider: ClassVar[str] = "dockerconfig"
    filename: str | None = Field(
        None, description="A docker config.json in secrets/, usually sops-encrypted."
    )
    credentials_block: str | None = Field(
        None,
        description="Name of a prefect-docker DockerRegistryCredentials block (username/password "
        "registries).",
    )

    def key_files(self) -> dict[str, str]:
        return self._given(filename=self.filename)


RegistrySettings = GcloudRegistry | AwsRegistry | AzureRegistry | DockerconfigRegistry


class Registry(Strict):
    provider: Literal["gcloud", "aws", "azure", "dockerconfig"] = Field(
        description="How to log in to the registry."
    )
    gcloud: GcloudRegistry | None = Field(None, description="Settings when provider is gcloud.")
    aws: AwsRegistry | None = Field(None, description="Settings when provider is aws.")
    azure: AzureRegistry | None = Field(None, description="Settings when provider is azure.")
    dockerconfig: DockerconfigRegistry | None = Field(
        None, description="Settings when provider is dockerconfig."
    )

    @model_validator(mode="before")
    @classmethod
    def _only_the_chosen_section(cls, data: Any) -> Any:
        return _chosen_section_only(data, ("gcloud", "aws", "azure", "dockerconfig"), keep={})

    @model_validator(mode="after")
    def _section_present(self) -> Registry:
        if self.provider != "gcloud" and self.settings is None:
            raise ValueError(f"provider is {self.provider!r} but there is no `{self.provider}:` section")
        return self

    @property
    def settings(self) -> RegistrySettings | None:
        """The settings of ``provider`` (None only for gcloud without a section)."""
        sections: dict[str, RegistrySettings | None] = {
            "gcloud": self.gcloud,
            "aws": self.aws,
            "azure": self.azure,
            "dockerconfig": self.dockerconfig,
        }
        return sections[self.provider]


# ---------------------------------------------------------------- clusters


class GcloudCluster(ProviderSettings):
    provider: ClassVar[str] = "gcloud"
    project: str = Field(description="GCP project of the GKE cluster.")
    cluster: str = Field(description="GKE cluster name.")
    zone: str = Field(description="Zone or region of the cluster.")
    service_key: str | None = Field(
        None,
        description="Service-account key file in secrets/ (classic); "
        "without it application default credentials are used.",
    )
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def key_files(self) -> dict[str, str]:
        return self._given(service_key=self.service_key)

    def names(self) -> list[str]:
        """What names the cluster within its provider."""
        return [self.project, self.cluster]


class AwsCluster(_AwsSettings):
    provider: ClassVar[str] = "aws"
    account_id: AccountId | None = Field(
        None, description="AWS account id (legacy key: project; unused by the deploy)."
    )
    cluster: str = Field(description="EKS cluster name.")
    region: str = Field(description="AWS region of the cluster (legacy key: zone).")
    service_key: str | None = Field(
        None, description="AWS credentials file in secrets/ (ini, or sops YAML with creds.*)."
    )
    role_arn: str | None = Field(None, description="IAM role to assume (session name hubploy-cluster-auth).")
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def names(self) -> list[str]:
        return [self.cluster]


class AzureCluster(ProviderSettings):
    provider: ClassVar[str] = "azure"
    resource_group: str = Field(description="Azure resource group of the AKS cluster.")
    cluster: str = Field(description="AKS cluster name.")
    auth_file: str | None = Field(
        None, description="Service principal file (appId, tenant, password) in secrets/."
    )
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def key_files(self) -> dict[str, str]:
        return self._given(auth_file=self.auth_file)

    def names(self) -> list[str]:
        return [self.resource_group, self.cluster]


class KubeconfigCluster(ProviderSettings):
    provider: ClassVar[str] = "kubeconfig"
    filename: str | None = Field(None, description="Kubeconfig file in secrets/, usually sops-encrypted.")
    context: str | None = Field(
        None, description="Context to use; `{namespace}` is replaced by the release namespace."
    )
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def key_files(self) -> dict[str, str]:
        return self._given(filename=self.filename)

    def names(self) -> list[str]:
        name = self.credentials_block or self.filename
        return [name] if name else []


ClusterSettings = GcloudCluster | AwsCluster | AzureCluster | KubeconfigCluster


class Cluster(Strict):
    provider: Literal["gcloud", "aws", "azure", "kubeconfig"] = Field(
        description="How to get cluster credentials."
    )
    gcloud: GcloudCluster | None = Field(None, description="Settings when provider is gcloud.")
    aws: AwsCluster | None = Field(None, description="Settings when provider is aws.")
    azure: AzureCluster | None = Field(None, description="Settings when provider is azure.")
    kubeconfig: KubeconfigCluster | None = Field(
        None, description="Settings when provider is kubeconfig; `context` is honoured for every provider."
    )

    @model_validator(mode="before")
    @classmethod
    def _only_the_chosen_section(cls, data: Any) -> Any:
        return _chosen_section_only(
            data, ("gcloud", "aws", "azure", "kubeconfig"), keep={"kubeconfig": ("context",)}
        )

    @model_validator(mode="after")
    def _section_present(self) -> Cluster:
        section = self._sections()[self.provider]
        if section is None:
            raise ValueError(f"provider is {self.provider!r} but there is no `{self.provider}:` section")
        if isinstance(section, KubeconfigCluster) and not (section.filename or section.credentials_block):
            raise ValueError("kubeconfig needs `filename` or `credentials_block`")
        if isinstance(section, AzureCluster) and not (section.auth_file or section.credentials_block):
            raise ValueError("azure needs `auth_file` or `credentials_block`")
        if isinstance(section, AwsCluster) and not (
            section.service_key or section.role_arn or section.credentials_block
        ):
            raise ValueError("aws needs one of service_key, role_arn or credentials_block")
        return self

    def _sections(self) -> dict[str, ClusterSettings | None]:
        return {"gcloud": self.gcloud, "aws": self.aws, "azure": self.azure, "kubeconfig": self.kubeconfig}

    @property
    def settings(self) -> ClusterSettings:
        """The settings of ``provider`` (validation made sure they are there)."""
        section = self._sections()[self.provider]
        assert section is not None
        return section

    @property
    def context_template(self) -> str | None:
        return self.kubeconfig.context if self.kubeconfig else None

    def key(self) -> str:
        """A name for the cluster: its kube context up to ``{namespace}`` when it names one, else the
        provider and what names the cluster there (the cluster's concurrency limit is named after it)."""
        if self.context_template:
            return self.context_template.split("{", 1)[0] or self.provider
        return "-".join([self.provider, *self.settings.names()])
