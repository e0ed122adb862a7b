"""The deployment repository layout: `deployments/<hub>/{hubploy.yaml, config/, secrets/, image/}`,
an umbrella chart (default `hub/`) and optional `hubploy-repo.yaml` settings at the root.

In code, a *hub* is a directory under `deployments/`; a Prefect deployment is never called a hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubploy.config.loader import load_mapping, validate_model
from hubploy.config.models import HubConfig, RepoSettings, split_image_reference
from hubploy.errors import ConfigError, ConfigIssue, HubNotFoundError

HUBS_DIR = "deployments"
HUB_FILE = "hubploy.yaml"
REPO_SETTINGS_FILE = "hubploy-repo.yaml"


@dataclass(frozen=True)
class ImageSpec:
    """One image of a hub, with the classic keys resolved."""

    name: str                      # repository without tag
    pinned_tag: str | None         # from the v1 form `name:tag`; None when derived from git
    path: Path | None              # absolute build dir; None for a pinned image without a build dir
    helm_substitution_path: str
    base_image: str | None = None


@dataclass
class DeploymentRepo:
    root: Path
    settings: RepoSettings = field(default_factory=RepoSettings)

    @property
    def hubs_dir(self) -> Path:
        return self.root / HUBS_DIR

    @property
    def chart_dir(self) -> Path:
        return self.root / self.settings.chart

    @property
    def settings_file(self) -> Path:
        return self.root / REPO_SETTINGS_FILE

    def hub_names(self) -> list[str]:
        """Every directory under deployments/ that holds a hubploy.yaml, sorted."""
        if not self.hubs_dir.is_dir():
            return []
        return sorted(p.name for p in self.hubs_dir.iterdir() if (p / HUB_FILE).is_file())

    def hub_dir(self, name: str) -> Path:
        return self.hubs_dir / name

    def load_hub(self, name: str) -> "Hub":
        """Load and validate one hub's hubploy.yaml; raise ConfigError with every problem."""
        hub, issues = self.try_load_hub(name)
        if hub is None:
            raise ConfigError(issues)
        return hub

    def try_load_hub(self, name: str) -> tuple["Hub | None", list[ConfigIssue]]:
        hub_dir = self.hub_dir(name)
        if not hub_dir.is_dir():
            known = ", ".join(self.hub_names()) or "none"
            raise HubNotFoundError(f"no hub named {name!r}: {hub_dir} does not exist",
                                   hint=f"run from the deployment repo root; hubs found: {known}")
        path = hub_dir / HUB_FILE
        data, lines, issues = load_mapping(path)
        if issues:
            return None, issues
        config, issues = validate_model(HubConfig, data, path, lines)
        if config is None:
            return None, issues
        return Hub(name=name, dir=hub_dir, repo=self, config=config, lines=lines), []


def load_repo(root: Path | str = ".") -> DeploymentRepo:
    """Open a deployment repository at ``root`` (its hubploy-repo.yaml is optional)."""
    root = Path(root).resolve()
    repo, issues = try_load_repo(root)
    if repo is None:
        raise ConfigError(issues)
    return repo


def try_load_repo(root: Path) -> tuple[DeploymentRepo | None, list[ConfigIssue]]:
    root = Path(root).resolve()
    if not (root / HUBS_DIR).is_dir():
        return None, [ConfigIssue(root / HUBS_DIR, "", "no deployments/ directory here; run hubploy from the "
                                                        "root of a deployment repository")]
    settings_file = root / REPO_SETTINGS_FILE
    if not settings_file.exists():
        return DeploymentRepo(root), []
    data, lines, issues = load_mapping(settings_file, allow_empty=True)
    if issues:
        return None, issues
    settings, issues = validate_model(RepoSettings, data, settings_file, lines)
    if settings is None:
        return None, issues
    return DeploymentRepo(root, settings), []


@dataclass
class Hub:
    name: str
    dir: Path
    repo: DeploymentRepo
    config: HubConfig
    lines: dict = field(default_factory=dict, repr=False)

    @property
    def config_file(self) -> Path:
        return self.dir / HUB_FILE

    @property
    def environments(self) -> list[str]:
        return list(self.config.environments)

    def _check_env(self, env: str) -> None:
        if env not in self.config.environments:
            raise ConfigError([ConfigIssue(self.config_file, "environments",
                                           f"hub {self.name!r} has no environment {env!r}",
                                           hint=f"its environments are: {', '.join(self.environments)}")])

    def release(self, env: str) -> str:
        self._check_env(env)
        return self.config.release(self.name, env)

    def namespace(self, env: str) -> str:
        self._check_env(env)
        return self.config.namespace(self.name, env)

    def url(self, env: str) -> str | None:
        self._check_env(env)
        return self.config.environments[env].url

    def secret_file(self, filename: str) -> Path:
        """Key files named in hubploy.yaml live in the hub's secrets/ dir."""
        return self.dir / "secrets" / filename

    @property
    def images(self) -> list[ImageSpec]:
        specs = []
        for entry in self.config.image_entries():
            name, tag = split_image_reference(entry.name)
            specs.append(ImageSpec(
                name=name, pinned_tag=tag,
                path=(self.dir / entry.path).resolve() if entry.path else None,
                helm_substitution_path=entry.helm_substitution_path,
                base_image=entry.repo2docker.base_image if entry.repo2docker else None))
        return specs
