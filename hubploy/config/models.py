"""The `hubploy.yaml` model: every classic hubploy key, plus what the Prefect design adds.

Unknown keys are rejected everywhere (a misspelt key is an error, not silently ignored). Legacy
keys are read exactly as hubploy reads them: `images.image_name` + `image_config_path`, the aws
`project` -> `account_id` and `zone` -> `region` aliases, and the v1 `name: repo:tag` form.

A registry or cluster section names its provider and keeps the provider's settings under a key of that
name (`provider: aws` + `aws: {...}`), as classic hubploy files do. Code reads them through
``Registry.settings`` and ``Cluster.settings``: one typed value of the union ``RegistrySettings`` or
``ClusterSettings``, told apart by its class (each declares its ``provider``), never by probing for
attributes.

Checks that need more than one key live here too, as methods: ``HubConfig.problems`` (names helm and
Kubernetes refuse, image dirs and key files the file refers to), ``RepoSettings.problems`` (the chart dir
and the age key file) and the freeze windows (``RepoSettings.active_freeze``). ``hubploy validate``
reports what they find with the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hubploy.errors import ApprovalError

DEFAULT_SUBSTITUTION_PATH = "jupyterhub.singleuser.image"
DEFAULT_ENVIRONMENTS = ("staging", "prod")
ALLOWED_ENVIRONMENTS = ("develop", "staging", "prod")

_BLOCK_DOC = "Name of a Prefect credentials block to use instead of a key file in secrets/."
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_DNS_LABEL = 63  # Kubernetes' limit for a namespace name
MAX_RELEASE_NAME = 53  # helm's limit for release names
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """What a check of the model finds wrong: the key path it is at, what is wrong, what to do."""

    path: KeyPath
    message: str
    hint: str | None = None


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_DNS_LABEL and bool(DNS_LABEL.match(name))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def split_image_reference(reference: str) -> tuple[str, str | None]:
    """Split `host:port/repo:tag` into (`host:port/repo`, `tag`); the tag is None when absent.

    Only a colon after the last slash starts a tag, so a registry port is never taken for one
    (classic hubploy's `split(":")` got this wrong).
    """
    reference = reference.split("@", 1)[0]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1:]
    return reference, None


def _rename_legacy_aws(data: Any) -> Any:
    """hubploy's legacy aws keys: `project` means `account_id`, `zone` means `region`."""
    if isinstance(data, dict):
        data = dict(data)
        for old, new in (("project", "account_id"), ("zone", "region")):
            if old in data and new not in data:
                data[new] = data.pop(old)
    return data


class ProviderSettings(Strict):
    """What every provider's settings have: an optional credentials block, and key files in secrets/."""

    provider: ClassVar[str]
    credentials_block: str | None = Field(None, description=_BLOCK_DOC)

    def key_files(self) -> dict[str, str]:
        """The key files these settings name in the hub's secrets/ dir: key -> file name."""
        return {}


class _AwsSettings(ProviderSettings):
    """Shared rules of the aws sections: the legacy keys, and exactly one way to get credentials."""

    service_key: str | None = None
    role_arn: str | None = None

    _legacy = model_validator(mode="before")(_rename_legacy_aws)

    @model_validator(mode="after")
    def _one_source(self) -> "_AwsSettings":
        given = {"service_key": self.service_key, "role_arn": self.role_arn,
                 "credentials_block": self.credentials_block}
        sources = [key for key, value in given.items() if value]
        if len(sources) > 1:
            raise ValueError(f"set only one of service_key, role_arn or credentials_block (found {', '.join(sources)})")
        return self

    def key_files(self) -> dict[str, str]:
        return {"service_key": self.service_key} if self.service_key else {}


# ---------------------------------------------------------------- registries (classic `build`)

class GcloudRegistry(ProviderSettings):
    provider: ClassVar[str] = "gcloud"
    project: str | None = Field(None, description="GCP project of the registry (accepted, unused by classic hubploy).")
    service_key: str | None = Field(None, description="Service-account key file in secrets/, usually sops-encrypted.")
    host: str | None = Field(None, description="Registry host to log in to, e.g. us-central1-docker.pkg.dev "
                                                "(classic hubploy only configured gcr.io).")

    def key_files(self) -> dict[str, str]:
        return {"service_key": self.service_key} if self.service_key else {}


class AwsRegistry(_AwsSettings):
    provider: ClassVar[str] = "aws"
    account_id: str = Field(description="12-digit AWS account id owning the ECR registry (legacy key: project).")
    region: str = Field(description="AWS region of the ECR registry (legacy key: zone).")
    service_key: str | None = Field(None, description="AWS credentials file in secrets/.")
    role_arn: str | None = Field(None, description="IAM role to assume for registry access.")


class AzureRegistry(ProviderSettings):
    provider: ClassVar[str] = "azure"
    resource_group: str = Field(description="Azure resource group of the container registry.")
    registry: str = Field(description="Azure Container Registry name (without .azurecr.io).")
    auth_file: str | None = Field(None, description="Service principal JSON/YAML (appId, tenant, password) in secrets/.")

    def key_files(self) -> dict[str, str]:
        return {"auth_file": self.auth_file} if self.auth_file else {}


class DockerconfigRegistry(ProviderSettings):
    provider: ClassVar[str] = "dockerconfig"
    filename: str | None = Field(None, description="A docker config.json in secrets/, usually sops-encrypted.")
    credentials_block: str | None = Field(
        None, description="Name of a prefect-docker DockerRegistryCredentials block (username/password registries).")

    def key_files(self) -> dict[str, str]:
        return {"filename": self.filename} if self.filename else {}


RegistrySettings = GcloudRegistry | AwsRegistry | AzureRegistry | DockerconfigRegistry


class Registry(Strict):
    provider: Literal["gcloud", "aws", "azure", "dockerconfig"] = Field(description="How to log in to the registry.")
    gcloud: GcloudRegistry | None = Field(None, description="Settings when provider is gcloud.")
    aws: AwsRegistry | None = Field(None, description="Settings when provider is aws.")
    azure: AzureRegistry | None = Field(None, description="Settings when provider is azure.")
    dockerconfig: DockerconfigRegistry | None = Field(None, description="Settings when provider is dockerconfig.")

    @model_validator(mode="after")
    def _section_present(self) -> "Registry":
        if self.provider != "gcloud" and self.settings is None:
            raise ValueError(f"provider is {self.provider!r} but there is no `{self.provider}:` section")
        return self

    @property
    def settings(self) -> RegistrySettings | None:
        """The settings of ``provider`` (None only for gcloud without a section)."""
        sections: dict[str, RegistrySettings | None] = {
            "gcloud": self.gcloud, "aws": self.aws, "azure": self.azure, "dockerconfig": self.dockerconfig}
        return sections[self.provider]


# ---------------------------------------------------------------- images

class Repo2Docker(Strict):
    base_image: str | None = Field(None, description="Base image repo2docker builds on (hubploy PR #114).")


class ImageEntry(Strict):
    name: str = Field(description="Image repository, e.g. us-central1-docker.pkg.dev/proj/repo/user-image. "
                                  "The v1 form `name:tag` pins the tag instead of deriving it from git.")
    path: str | None = Field(None, description="Image build dir relative to the hub dir (required unless the tag is pinned).")
    helm_substitution_path: str = Field(DEFAULT_SUBSTITUTION_PATH,
                                        description="Dotted values path whose .name and .tag receive this image.")
    repo2docker: Repo2Docker | None = Field(None, description="repo2docker options.")

    @model_validator(mode="after")
    def _path_or_tag(self) -> "ImageEntry":
        _, tag = split_image_reference(self.name)
        if self.path is None and tag is None:
            raise ValueError("an image needs `path` (its build dir) unless `name` pins a tag (name:tag)")
        return self


class Images(Strict):
    image_name: str | None = Field(None, description="Legacy single image: repository name; its build dir is image/.")
    image_config_path: str | None = Field(None, description="Legacy name of helm_substitution_path for image_name.")
    images: list[ImageEntry] = Field(default_factory=list, description="The hub's images.")
    registry: Registry | None = Field(None, description="Registry login used by `build --push/--check-registry`.")

    @model_validator(mode="after")
    def _legacy_or_list(self) -> "Images":
        if self.image_name and self.images:
            raise ValueError("use either the legacy `image_name` or the `images:` list, not both")
        if self.image_config_path and not self.image_name:
            raise ValueError("`image_config_path` only applies to the legacy `image_name`")
        return self

    def entries(self) -> list[ImageEntry]:
        """The images, with the legacy single-image form turned into a list entry."""
        if self.image_name:
            return [ImageEntry(name=self.image_name, path="image",
                               helm_substitution_path=self.image_config_path or DEFAULT_SUBSTITUTION_PATH)]
        return list(self.images)


# ---------------------------------------------------------------- clusters

class GcloudCluster(ProviderSettings):
    provider: ClassVar[str] = "gcloud"
    project: str = Field(description="GCP project of the GKE cluster.")
    cluster: str = Field(description="GKE cluster name.")
    zone: str = Field(description="Zone or region of the cluster.")
    service_key: str | None = Field(None, description="Service-account key file in secrets/ (classic); "
                                                     "without it application default credentials are used.")

    def key_files(self) -> dict[str, str]:
        return {"service_key": self.service_key} if self.service_key else {}

    def names(self) -> list[str]:
        """What names the cluster within its provider."""
        return [self.project, self.cluster]


class AwsCluster(_AwsSettings):
    provider: ClassVar[str] = "aws"
    account_id: str | None = Field(None, description="AWS account id (legacy key: project; unused by the deploy).")
    cluster: str = Field(description="EKS cluster name.")
    region: str = Field(description="AWS region of the cluster (legacy key: zone).")
    service_key: str | None = Field(None, description="AWS credentials file in secrets/ (ini, or sops YAML with creds.*).")
    role_arn: str | None = Field(None, description="IAM role to assume (session name hubploy-cluster-auth).")

    def names(self) -> list[str]:
        return [self.cluster]


class AzureCluster(ProviderSettings):
    provider: ClassVar[str] = "azure"
    resource_group: str = Field(description="Azure resource group of the AKS cluster.")
    cluster: str = Field(description="AKS cluster name.")
    auth_file: str | None = Field(None, description="Service principal file (appId, tenant, password) in secrets/.")

    def key_files(self) -> dict[str, str]:
        return {"auth_file": self.auth_file} if self.auth_file else {}

    def names(self) -> list[str]:
        return [self.resource_group, self.cluster]


class KubeconfigCluster(ProviderSettings):
    provider: ClassVar[str] = "kubeconfig"
    filename: str | None = Field(None, description="Kubeconfig file in secrets/, usually sops-encrypted.")
    context: str | None = Field(None, description="Context to use; `{namespace}` is replaced by the release namespace.")

    def key_files(self) -> dict[str, str]:
        return {"filename": self.filename} if self.filename else {}

    def names(self) -> list[str]:
        name = self.credentials_block or self.filename
        return [name] if name else []


ClusterSettings = GcloudCluster | AwsCluster | AzureCluster | KubeconfigCluster


class Cluster(Strict):
    provider: Literal["gcloud", "aws", "azure", "kubeconfig"] = Field(description="How to get cluster credentials.")
    gcloud: GcloudCluster | None = Field(None, description="Settings when provider is gcloud.")
    aws: AwsCluster | None = Field(None, description="Settings when provider is aws.")
    azure: AzureCluster | None = Field(None, description="Settings when provider is azure.")
    kubeconfig: KubeconfigCluster | None = Field(
        None, description="Settings when provider is kubeconfig; `context` is honoured for every provider.")

    @model_validator(mode="after")
    def _section_present(self) -> "Cluster":
        section = self._sections()[self.provider]
        if section is None:
            raise ValueError(f"provider is {self.provider!r} but there is no `{self.provider}:` section")
        if isinstance(section, KubeconfigCluster) and not (section.filename or section.credentials_block):
            raise ValueError("kubeconfig needs `filename` or `credentials_block`")
        if isinstance(section, AzureCluster) and not (section.auth_file or section.credentials_block):
            raise ValueError("azure needs `auth_file` or `credentials_block`")
        if isinstance(section, AwsCluster) and not (section.service_key or section.role_arn
                                                    or section.credentials_block):
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


# ---------------------------------------------------------------- environments (new)


class EnvironmentSettings(Strict):
    url: str | None = Field(None, description="Public URL of the hub in this environment, for the health check.")
    release: str | None = Field(None, description="Helm release name (default <hub>-<env>).")
    namespace: str | None = Field(None, description="Kubernetes namespace (default <hub>-<env>).")


EnvName = Literal["develop", "staging", "prod"]

def _environments_schema(schema: dict[str, Any]) -> None:
    """Editors should accept both spellings: a list of names, or a mapping name -> settings."""
    mapping = {k: schema.pop(k) for k in list(schema) if k not in ("title", "description")}
    schema["anyOf"] = [
        {"type": "array", "items": {"enum": list(ALLOWED_ENVIRONMENTS)}, "uniqueItems": True, "minItems": 1},
        {**mapping, "minProperties": 1},
    ]


class HubConfig(Strict):
    """Contents of deployments/<hub>/hubploy.yaml."""

    images: Images | None = Field(None, description="Images built for this hub and injected into its values.")
    cluster: Cluster | None = Field(None, description="Where the hub is deployed.")
    environments: dict[EnvName, EnvironmentSettings] = Field(
        default_factory=lambda: {env: EnvironmentSettings() for env in DEFAULT_ENVIRONMENTS},
        description="Environments this hub is deployed to: a list of names, or a mapping name -> settings "
                    "(url, release, namespace). Default: staging and prod.",
        json_schema_extra=_environments_schema)

    @field_validator("environments", mode="before")
    @classmethod
    def _list_to_mapping(cls, value: Any) -> Any:
        if isinstance(value, list):
            names = [v for v in value if isinstance(v, str)]
            if len(set(names)) != len(names):
                raise ValueError("environments lists a name twice")
            value = {name: None for name in value} if len(names) == len(value) else value
        if isinstance(value, dict):
            if not value:
                raise ValueError("environments must name at least one environment")
            value = {k: (v if v is not None else {}) for k, v in value.items()}
        return value

    def image_entries(self) -> list[ImageEntry]:
        return self.images.entries() if self.images else []

    def release(self, hub: str, env: str) -> str:
        """The helm release of hub ``hub`` (its directory's name) in ``env``."""
        return self.environments[env].release or f"{hub}-{env}"  # type: ignore[index]

    def namespace(self, hub: str, env: str) -> str:
        return self.environments[env].namespace or f"{hub}-{env}"  # type: ignore[index]

    def problems(self, hub: str, hub_dir: Path) -> list[Problem]:
        """What this valid file still gets wrong for hub ``hub`` in ``hub_dir``: release and namespace
        names that helm or Kubernetes refuse, image dirs and key files that are missing or outside the
        hub's dir."""
        return [*self._name_problems(hub), *self._image_problems(hub_dir), *self._key_file_problems(hub_dir)]

    def _name_problems(self, hub: str) -> list[Problem]:
        found = []
        for env in self.environments:
            release, namespace = self.release(hub, env), self.namespace(hub, env)
            if len(release) > MAX_RELEASE_NAME:
                found.append(Problem(("environments", env), f"release name {release!r} is {len(release)} "
                                     f"characters; helm allows {MAX_RELEASE_NAME}",
                                     "shorten the hub name or set environments.<env>.release"))
            if not is_dns_label(namespace):
                found.append(Problem(("environments", env),
                                     f"namespace {namespace!r} is not a valid DNS label"))
        return found

    def _image_problems(self, hub_dir: Path) -> list[Problem]:
        found = []
        hub_root = hub_dir.resolve()
        legacy = bool(self.images and self.images.image_name)
        for index, entry in enumerate(self.image_entries()):
            if entry.path is None:
                continue
            path = (hub_dir / entry.path).resolve()
            key: KeyPath = ("images", "image_name") if legacy else ("images", "images", index, "path")
            if path != hub_root and hub_root not in path.parents:
                found.append(Problem(key, f"image path {path} is outside the hub directory",
                                     "image dirs must live inside deployments/<hub>/"))
            elif not path.is_dir():
                found.append(Problem(key, f"image directory {path.relative_to(hub_root)}/ does not exist"))
        return found

    def _provider_settings(self) -> list[tuple[KeyPath, ProviderSettings]]:
        """Every provider section in use, with its key path (the kubeconfig section also names the
        context of another provider's cluster)."""
        found: list[tuple[KeyPath, ProviderSettings]] = []
        registry = self.images.registry if self.images else None
        if registry is not None and registry.settings is not None:
            found.append((("images", "registry", registry.provider), registry.settings))
        if self.cluster is not None:
            found.append((("cluster", self.cluster.provider), self.cluster.settings))
            if self.cluster.provider != "kubeconfig" and self.cluster.kubeconfig is not None:
                found.append((("cluster", "kubeconfig"), self.cluster.kubeconfig))
        return found

    def _key_file_problems(self, hub_dir: Path) -> list[Problem]:
        found = []
        secrets_dir = (hub_dir / "secrets").resolve()
        for prefix, settings in self._provider_settings():
            for key, filename in settings.key_files().items():
                path = (secrets_dir / filename).resolve()
                if secrets_dir not in path.parents:
                    found.append(Problem((*prefix, key), f"{filename!r} is outside the hub's secrets/ dir"))
                elif not path.is_file():
                    found.append(Problem((*prefix, key), f"key file secrets/{filename} does not exist",
                                         "key files are looked up in deployments/<hub>/secrets/"))
        return found


# ---------------------------------------------------------------- repository settings (new)

class SecretsSettings(Strict):
    allow_plaintext: bool = Field(False, description="Allow files under secrets/ without sops metadata "
                                                     "(for repos whose secrets are protected by git-crypt).")
    age_key_file: str | None = Field(None, description="age key file for sops, relative to the repo root or "
                                                       "absolute; overrides SOPS_AGE_KEY_FILE for hubploy's sops calls.")


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or datetime (UTC when it has no offset)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class FreezeWindow(Strict):
    start: str = Field(description="First frozen moment, ISO 8601 date or datetime (UTC if no offset).")
    end: str = Field(description="End of the freeze, exclusive, ISO 8601 date or datetime.")
    reason: str = Field("", description="Shown when a promotion is refused, e.g. 'final exams'.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> str:
        text = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
        try:
            parse_moment(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 date or datetime (e.g. 2026-12-14)") from None
        return text

    @model_validator(mode="after")
    def _ordered(self) -> "FreezeWindow":
        if self.ends <= self.starts:
            raise ValueError("a freeze window must end after it starts")
        return self

    @property
    def starts(self) -> datetime:
        return parse_moment(self.start)

    @property
    def ends(self) -> datetime:
        return parse_moment(self.end)

    def covers(self, moment: datetime) -> bool:
        return self.starts <= moment < self.ends

    def refusal(self) -> str:
        """Why a promotion is refused during this window, and until when."""
        why = f" ({self.reason})" if self.reason else ""
        return f"prod is frozen{why} until {self.ends.isoformat()}; promotion is refused until then"


class RepoSettings(Strict):
    """Contents of the optional hubploy-repo.yaml at the deployment repo root."""

    chart: str = Field("hub", description="Path of the local umbrella chart, relative to the repo root.")
    staging_branch: str = Field("staging", description="Branch whose pushes start the lifecycle.")
    prod_branch: str = Field("prod", description="Branch that only ever receives merges of staging.")
    shared_paths: list[str] = Field(default_factory=list,
                                    description="Extra paths (glob) whose change affects every hub; the chart always does.")
    secrets: SecretsSettings = Field(default_factory=SecretsSettings, description="Secret file policy.")
    freeze_windows: list[FreezeWindow] = Field(default_factory=list,
                                               description="Date ranges during which prod promotion is refused.")
    approval_timeout_hours: float = Field(24, gt=0, description="How long the lifecycle waits for an approval.")
    cluster_concurrency: int = Field(4, ge=1, description="Most deploys run at once against one cluster.")
    health_check_timeout: float = Field(180, gt=0, description="Seconds a deployed hub has to answer /hub/api "
                                                               "before the deploy is rolled back.")

    def active_freeze(self, now: datetime | None = None) -> FreezeWindow | None:
        """The freeze window ``now`` (default: the current time) falls in, if any."""
        now = now or datetime.now(timezone.utc)
        return next((window for window in self.freeze_windows if window.covers(now)), None)

    def check_not_frozen(self, now: datetime | None = None) -> None:
        """Raise ApprovalError, saying until when, during a freeze window."""
        window = self.active_freeze(now)
        if window is not None:
            raise ApprovalError(window.refusal(), hint="approve again after the window ends")

    def problems(self, root: Path) -> list[Problem]:
        """What this valid file still gets wrong in the repository at ``root``: a chart dir without a
        Chart.yaml, an age key file that does not exist."""
        found = []
        if not (root / self.chart / "Chart.yaml").is_file():
            found.append(Problem(("chart",), f"chart directory {self.chart}/ with a Chart.yaml not found",
                                 "set `chart:` in hubploy-repo.yaml to your umbrella chart's directory"))
        key_file = self.secrets.age_key_file
        if key_file and not (root / key_file).is_file():
            found.append(Problem(("secrets", "age_key_file"), f"age key file {key_file} does not exist",
                                 "the path is relative to the repository root; sops could decrypt nothing"))
        return found
