"""The `hubploy.yaml` model: every classic hubploy key, plus what the Prefect design adds.

Unknown keys are rejected everywhere (a misspelt key is an error, not silently ignored). Legacy
keys are read exactly as hubploy reads them: `images.image_name` + `image_config_path`, the aws
`project` -> `account_id` and `zone` -> `region` aliases, and the v1 `name: repo:tag` form.

The registry and cluster sections live in ``hubploy.config.providers``, hubploy-repo.yaml in
``hubploy.config.repo_settings``; this module names them all. Checks that need more than one key live
in the models too, as methods: ``HubConfig.problems`` (names helm and Kubernetes refuse, image dirs and
key files the file refers to), ``RepoSettings.problems`` (the chart dir and the age key file) and the
freeze windows (``RepoSettings.active_freeze``). ``hubploy validate`` reports what they find with the
file and line.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any, Literal, TypeGuard

from pydantic import Field, field_validator, model_validator

from hubploy.config.base import MAX_RELEASE_NAME, KeyPath, Problem, Strict, inside, is_dns_label
from hubploy.config.providers import (
    AwsCluster,
    AwsRegistry,
    AzureCluster,
    AzureRegistry,
    Cluster,
    ClusterSettings,
    DockerconfigRegistry,
    GcloudCluster,
    GcloudRegistry,
    KubeconfigCluster,
    ProviderSettings,
    Registry,
    RegistrySettings,
)
from hubploy.config.repo_settings import FreezeWindow, RepoSettings, SecretsSettings, parse_moment

__all__ = [
    "ALLOWED_ENVIRONMENTS",
    "AwsCluster",
    "AwsRegistry",
    "AzureCluster",
    "AzureRegistry",
    "Cluster",
    "ClusterSettings",
    "DockerconfigRegistry",
    "EnvironmentSettings",
    "FreezeWindow",
    "GcloudCluster",
    "GcloudRegistry",
    "HubConfig",
    "ImageCheck",
    "ImageEntry",
    "Images",
    "KubeconfigCluster",
    "Problem",
    "ProviderSettings",
    "Registry",
    "RegistrySettings",
    "RepoSettings",
    "SecretsSettings",
    "Strict",
    "is_dns_label",
    "parse_moment",
    "split_image_reference",
    "split_repository",
]

DEFAULT_SUBSTITUTION_PATH = "jupyterhub.singleuser.image"
DOCKER_HUB = "docker.io"
EnvName = Literal["develop", "staging", "prod"]
DEFAULT_ENVIRONMENTS: tuple[EnvName, ...] = ("staging", "prod")
ALLOWED_ENVIRONMENTS: tuple[EnvName, ...] = ("develop", "staging", "prod")


def split_repository(name: str) -> tuple[str, str]:
    """``host[:port]/path`` -> (host, path) with Docker's rules: the first component is a registry
    host only if it has a dot or a port or is ``localhost``; otherwise the image is on Docker Hub.
    """
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return DOCKER_HUB, name if rest else f"library/{name}"


def split_image_reference(reference: str) -> tuple[str, str | None]:
    """Split `host:port/repo:tag` into (`host:port/repo`, `tag`); the tag is None when absent.

    Only a colon after the last slash starts a tag, so a registry port is never taken for one
    (classic hubploy's `split(":")` got this wrong).
    """
    reference = reference.split("@", 1)[0]
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, None


_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?$"
    r"|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
MAX_IMAGE_NAME = 255


def image_reference_problem(reference: str) -> str | None:
    """What the reference grammar of container registries (distribution's ``reference`` package, which
    docker, buildah and every registry apply) refuses in ``reference``, or None when it is valid."""
    rest, _, digest = reference.partition("@")
    name, tag = split_image_reference(rest)
    first, slash, remainder = name.partition("/")
    is_domain = bool(slash) and (
        "." in first or ":" in first or first == "localhost" or first != first.lower()
    )
    path = remainder if is_domain else name
    if is_domain and not _DOMAIN.match(first):
        return f"registry host {first!r} is not a host name with an optional :port"
    if not path or not all(_PATH_COMPONENT.match(part) for part in path.split("/")):
        return (
            f"repository path {path!r} must be lowercase letters and digits, with '.', '_', '__' or '-' "
            f"only between them, in components separated by '/'"
        )
    if len(name) > MAX_IMAGE_NAME:
        return f"the name is {len(name)} characters; registries allow {MAX_IMAGE_NAME}"
    if tag is not None and not _TAG.match(tag):
        return f"tag {tag!r} must be 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
    if digest and not _DIGEST.match(digest):
        return f"digest {digest!r} is not <algorithm>:<hex>"
    return None


def _valid_image_reference(value: str) -> str:
    problem = image_reference_problem(value)
    if problem is not None:
        raise ValueError(f"{value!r} is not a valid image reference: {problem}")
    return value


# ---------------------------------------------------------------- images


class Repo2Docker(Strict):
    base_image: str | None = Field(None, description="Base image repo2docker builds on (hubploy PR #114).")


class ImageEntry(Strict):
    name: str = Field(
        description="Image repository, e.g. us-central1-docker.pkg.dev/proj/repo/user-image. "
        "The v1 form `name:tag` pins the tag instead of deriving it from git."
    )
    path: str | None = Field(
        None, description="Image build dir relative to the hub dir (required unless the tag is pinned)."
    )
    helm_substitution_path: str = Field(
        DEFAULT_SUBSTITUTION_PATH, description="Dotted values path whose .name and .tag receive this image."
    )
    repo2docker: Repo2Docker | None = Field(None, description="repo2docker options.")

    _reference = field_validator("name")(_valid_image_reference)

    @model_validator(mode="after")
    def _path_or_tag(self) -> ImageEntry:
        _, tag = split_image_reference(self.name)
        if self.path is None and tag is None:
            raise ValueError("an image needs `path` (its build dir) unless `name` pins a tag (name:tag)")
        return self


class Images(Strict):
    image_name: str | None = Field(
        None, description="Legacy single image: repository name; its build dir is image/."
    )
    image_config_path: str | None = Field(
        None, description="Legacy name of helm_substitution_path for image_name."
    )
    images: list[ImageEntry] = Field(default_factory=list, description="The hub's images.")
    registry: Registry | None = Field(
        None, description="Registry login used by `build --push/--check-registry`."
    )

    @field_validator("image_name")
    @classmethod
    def _image_name_reference(cls, value: str | None) -> str | None:
        return None if value is None else _valid_image_reference(value)

    @model_validator(mode="after")
    def _legacy_or_list(self) -> Images:
        if self.image_name and self.images:
            raise ValueError("use either the legacy `image_name` or the `images:` list, not both")
        if self.image_config_path and not self.image_name:
            raise ValueError("`image_config_path` only applies to the legacy `image_name`")
        return self

    def entries(self) -> list[ImageEntry]:
        """The images, with the legacy single-image form turned into a list entry."""
        if self.image_name:
            return [
                ImageEntry(
                    name=self.image_name,
                    path="image",
                    helm_substitution_path=self.image_config_path or DEFAULT_SUBSTITUTION_PATH,
                )
            ]
        return list(self.images)


# ---------------------------------------------------------------- the image check (new)


class ImageCheck(Strict):
    """Which images a deploy looks up in their registries before helm runs. A pattern is a registry host
    (``quay.io``; ``docker.io`` for Docker Hub's short names), or a glob on the image name without its
    tag (``quay.io/jupyterhub/*``)."""

    only: Literal["all", "built"] | list[str] = Field(
        "all",
        description="all: every {name, tag} in the hub's values (the default); built: only the images "
        "this hubploy.yaml declares under images:; or a list of patterns to check.",
    )
    skip: list[str] = Field(
        default_factory=list,
        description="Patterns of images never looked up (e.g. a registry this machine cannot reach).",
    )

    @field_validator("only", "skip")
    @classmethod
    def _patterns(cls, value: Any) -> Any:
        if isinstance(value, list) and not all(isinstance(p, str) and p.strip() for p in value):
            raise ValueError("patterns are registry hosts or image name globs, not empty")
        return value

    def wants(self, name: str, built: set[str]) -> bool:
        """Whether the image ``name`` (without tag) is looked up; ``built``: the names images: declares."""
        if any(_matches(name, pattern) for pattern in self.skip):
            return False
        if self.only == "all":
            return True
        if self.only == "built":
            return name in built
        return any(_matches(name, pattern) for pattern in self.only)


def _matches(name: str, pattern: str) -> bool:
    """A registry host matches the images on it; anything else is a glob on the image name (Docker Hub's
    short names are also tried as docker.io/<name>)."""
    host, path = split_repository(name)
    if "/" not in pattern and not any(c in pattern for c in "*?["):
        return host == pattern
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(f"{host}/{path}", pattern)


# ---------------------------------------------------------------- environments (new)


class EnvironmentSettings(Strict):
    url: str | None = Field(
        None, description="Public URL of the hub in this environment, for the health check."
    )
    release: str | None = Field(None, description="Helm release name (default <hub>-<env>).")
    namespace: str | None = Field(None, description="Kubernetes namespace (default <hub>-<env>).")


def is_env_name(name: str) -> TypeGuard[EnvName]:
    return name in ALLOWED_ENVIRONMENTS


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
    image_check: ImageCheck = Field(
        default_factory=ImageCheck,
        description="Which images a deploy looks up in their registries first (default: all of them).",
    )
    environments: dict[EnvName, EnvironmentSettings] = Field(
        default_factory=lambda: {env: EnvironmentSettings() for env in DEFAULT_ENVIRONMENTS},
        description="Environments this hub is deployed to: a list of names, or a mapping name -> settings "
        "(url, release, namespace). Default: staging and prod.",
        json_schema_extra=_environments_schema,
    )

    @field_validator("environments", mode="before")
    @classmethod
    def _list_to_mapping(cls, value: Any) -> Any:
        if isinstance(value, list):
            names = [v for v in value if isinstance(v, str)]
            if len(set(names)) != len(names):
                raise ValueError("environments lists a name twice")
            value = dict.fromkeys(value) if len(names) == len(value) else value
        if isinstance(value, dict):
            if not value:
                raise ValueError("environments must name at least one environment")
            value = {k: (v if v is not None else {}) for k, v in value.items()}
        return value

    def image_entries(self) -> list[ImageEntry]:
        return self.images.entries() if self.images else []

    def environment(self, env: str) -> EnvironmentSettings:
        """The settings of environment ``env``; KeyError if this hub has no such environment."""
        if not is_env_name(env):
            raise KeyError(env)
        return self.environments[env]

    def release(self, hub: str, env: str) -> str:
        """The helm release of hub ``hub`` (its directory's name) in ``env``."""
        return self.environment(env).release or f"{hub}-{env}"

    def namespace(self, hub: str, env: str) -> str:
        return self.environment(env).namespace or f"{hub}-{env}"

    def problems(self, hub: str, hub_dir: Path, repo_root: Path) -> list[Problem]:
        """What this valid file still gets wrong for hub ``hub`` in ``hub_dir``: release and namespace
        names that helm or Kubernetes refuse, image dirs and key files that are missing or resolve
        outside the repository at ``repo_root`` (another hub's image dir or key file is fine, as in
        hubploy)."""
        return [
            *self._name_problems(hub),
            *self._image_problems(hub_dir, repo_root),
            *self._key_file_problems(hub_dir, repo_root),
        ]

    def _name_problems(self, hub: str) -> list[Problem]:
        found = []
        for env in self.environments:
            release, namespace = self.release(hub, env), self.namespace(hub, env)
            if len(release) > MAX_RELEASE_NAME:
                found.append(
                    Problem(
                        ("environments", env),
                        f"release name {release!r} is {len(release)} "
                        f"characters; helm allows {MAX_RELEASE_NAME}",
                        "shorten the hub name or set environments.<env>.release",
                    )
                )
            if not is_dns_label(namespace):
                found.append(
                    Problem(("environments", env), f"namespace {namespace!r} is not a valid DNS label")
                )
        return found

    def _image_problems(self, hub_dir: Path, repo_root: Path) -> list[Problem]:
        found = []
        legacy = bool(self.images and self.images.image_name)
        for index, entry in enumerate(self.image_entries()):
            if entry.path is None:
                continue
            path = (hub_dir / entry.path).resolve()
            key: KeyPath = ("images", "image_name") if legacy else ("images", "images", index, "path")
            if not inside(path, repo_root):
                found.append(
                    Problem(
                        key,
                        f"image path {entry.path!r} resolves outside the repository (to {path})",
                        "an image dir must live in the deployment repository",
                    )
                )
            elif not path.is_dir():
                found.append(
                    Problem(
                        key,
                        f"image directory {entry.path}/ does not exist",
                        "image paths are relative to deployments/<hub>/",
                    )
                )
        return found

    def provider_settings(self) -> list[tuple[KeyPath, ProviderSettings]]:
        """Every provider section in use, with its key path (of the kubeconfig section beside another
        provider's, only the context is read)."""
        found: list[tuple[KeyPath, ProviderSettings]] = []
        registry = self.images.registry if self.images else None
        if registry is not None and registry.settings is not None:
            found.append((("images", "registry", registry.provider), registry.settings))
        if self.cluster is not None:
            found.append((("cluster", self.cluster.provider), self.cluster.settings))
        return found

    def _key_file_problems(self, hub_dir: Path, repo_root: Path) -> list[Problem]:
        found = []
        secrets_dir = hub_dir / "secrets"
        for prefix, settings in self.provider_settings():
            for key, filename in settings.key_files().items():
                path = (secrets_dir / filename).resolve()
                if not inside(path, repo_root):
                    found.append(
                        Problem(
                            (*prefix, key),
                            f"key file {filename!r} resolves outside the repository (to {path})",
                            "key files must live in the deployment repository",
                        )
                    )
                elif not path.is_file():
                    found.append(
                        Problem(
                            (*prefix, key),
                            f"key file secrets/{filename} does not exist",
                            "key files are looked up in deployments/<hub>/secrets/",
                        )
                    )
        return found
