"""The deployment repository layout: `deployments/<hub>/{hubploy.yaml, config/, secrets/, image/}`,
an umbrella chart (default `hub/`) and optional `hubploy-repo.yaml` settings at the root.

In code, a *hub* is a directory under `deployments/`; a Prefect deployment is never called a hub.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from hubploy.config.loader import LineMap, load_mapping, read_file, validate_model
from hubploy.config.models import HubConfig, RepoSettings, split_image_reference
from hubploy.errors import ConfigError, ConfigIssue, HubNotFoundError

HUBS_DIR = "deployments"
HUB_FILE = "hubploy.yaml"
REPO_SETTINGS_FILE = "hubploy-repo.yaml"


@dataclass(frozen=True)
class ImageSpec:
    """One image of a hub, with the classic keys resolved."""

    name: str  # repository without tag
    pinned_tag: str | None  # from the v1 form `name:tag`; None when derived from git
    path: Path | None  # absolute build dir; None for a pinned image without a build dir
    helm_substitution_path: str
    base_image: str | None = None


@dataclass(frozen=True)
class DeploymentRepo:
    root: Path
    settings: RepoSettings = field(default_factory=RepoSettings)
    hubs: HubMemo = field(default_factory=lambda: HubMemo(Counter()), repr=False, compare=False)

    @property
    def hubs_dir(self) -> Path:
        return self.root / HUBS_DIR

    @property
    def chart_dir(self) -> Path:
        return self.root / self.settings.chart

    @property
    def settings_file(self) -> Path:
        return self.root / REPO_SETTINGS_FILE

    @property
    def age_key_file(self) -> Path | None:
        """The age key file hubploy-repo.yaml names (relative to the root, or absolute)."""
        key = self.settings.secrets.age_key_file
        return self.root / key if key else None

    def hub_names(self) -> list[str]:
        """Every directory under deployments/ that holds a hubploy.yaml, sorted."""
        if not self.hubs_dir.is_dir():
            return []
        return sorted(p.name for p in self.hubs_dir.iterdir() if (p / HUB_FILE).is_file())

    def hub_dir(self, name: str) -> Path:
        """deployments/<name>; HubNotFoundError for a name that is not one directory name (``..``, a path)."""
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            raise HubNotFoundError(
                f"no hub named {name!r}: a hub is named by its directory under deployments/, not by a path",
                hint=f"hubs found: {', '.join(self.hub_names()) or 'none'}",
            )
        return self.hubs_dir / name

    def load_hub(self, name: str) -> Hub:
        """Load and validate one hub's hubploy.yaml; raise ConfigError with every problem."""
        hub, issues = self.try_load_hub(name)
        if hub is None:
            raise ConfigError(issues)
        return hub

    def try_load_hub(self, name: str) -> tuple[Hub | None, list[ConfigIssue]]:
        """The hub ``name`` and no issues, or None and every problem of its hubploy.yaml; parsed and
        validated once per content of the file (``HubMemo``)."""
        hub_dir = self.hub_dir(name)
        if not hub_dir.is_dir():
            known = ", ".join(self.hub_names()) or "none"
            raise HubNotFoundError(
                f"no hub named {name!r}: {hub_dir} does not exist",
                hint=f"run from the deployment repo root; hubs found: {known}",
            )
        return self.hubs.get(self, name)


Loaded = tuple["Hub | None", list[ConfigIssue]]


def _identity(raw: bytes | None) -> str:
    return hashlib.sha256(raw).hexdigest() if raw is not None else "absent"


class HubMemo:
    """The hubs of one repository, each parsed and validated once per content of its hubploy.yaml (the
    sha256 of its bytes is the key: an edited file is loaded again). ``loads`` counts the validations,
    by file."""

    def __init__(self, loads: Counter[Path]) -> None:
        self.loads = loads
        self._hubs: dict[str, tuple[str, Loaded]] = {}
        self._lock = threading.Lock()

    def get(self, repo: DeploymentRepo, name: str) -> Loaded:
        hub_dir = repo.hub_dir(name)
        path = hub_dir / HUB_FILE
        raw, issues = read_file(path)
        if raw is None:
            return None, issues
        key = _identity(raw)
        with self._lock:
            known = self._hubs.get(name)
            if known is not None and known[0] == key:
                return known[1]
            self.loads[path] += 1
            loaded = _load_hub(repo, name, path, raw)
            self._hubs[name] = (key, loaded)
            return loaded


def _load_hub(repo: DeploymentRepo, name: str, path: Path, raw: bytes) -> Loaded:
    data, lines, issues = load_mapping(path, raw=raw)
    if issues:
        return None, issues
    config, issues = validate_model(HubConfig, data, path, lines)
    if config is None:
        return None, issues
    return Hub(name=name, dir=path.parent, repo=repo, config=config, lines=lines), []


class RepoCache:
    """Deployment repositories, each loaded (hubploy-repo.yaml parsed and validated) once per content of
    its files, and their hubs once per content of each hubploy.yaml (``HubMemo``).

    A repository's key is its resolved root, whether it has a deployments/ dir, and the sha256 of its
    hubploy-repo.yaml: an edited file is a new key and is loaded again, so no caller ever gets stale
    configuration, and nothing needs clearing between tests. The ``size`` repositories used last are
    kept. ``loads`` counts the validations, by file; ``clear()`` forgets every repository (and their
    hubs). The CLI, the tasks and the flows share the process's cache through ``load_repo``."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.loads: Counter[Path] = Counter()
        self._repos: OrderedDict[tuple[Path, bool, str], tuple[DeploymentRepo | None, list[ConfigIssue]]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def load(self, root: Path | str) -> tuple[DeploymentRepo | None, list[ConfigIssue]]:
        """The repository at ``root`` and no issues, or None and every problem of its settings."""
        root = Path(root).resolve()
        settings_file = root / REPO_SETTINGS_FILE
        raw, issues = read_file(settings_file) if settings_file.exists() else (None, [])
        if issues:
            return None, issues
        key = (root, (root / HUBS_DIR).is_dir(), _identity(raw))
        with self._lock:
            if key in self._repos:
                self._repos.move_to_end(key)
                return self._repos[key]
            loaded = self._load(root, raw)
            self._repos[key] = loaded
            while len(self._repos) > self.size:
                self._repos.popitem(last=False)
            return loaded

    def _load(self, root: Path, raw: bytes | None) -> tuple[DeploymentRepo | None, list[ConfigIssue]]:
        if not (root / HUBS_DIR).is_dir():
            return None, [
                ConfigIssue(
                    root / HUBS_DIR,
                    "",
                    "no deployments/ directory here; run hubploy from the root of a deployment repository",
                )
            ]
        hubs = HubMemo(self.loads)
        if raw is None:
            return DeploymentRepo(root, hubs=hubs), []
        settings_file = root / REPO_SETTINGS_FILE
        self.loads[settings_file] += 1
        data, lines, issues = load_mapping(settings_file, allow_empty=True, raw=raw)
        if issues:
            return None, issues
        settings, issues = validate_model(RepoSettings, data, settings_file, lines)
        if settings is None:
            return None, issues
        return DeploymentRepo(root, settings, hubs), []

    def clear(self) -> None:
        with self._lock:
            self._repos.clear()


REPOS = RepoCache()


def load_repo(root: Path | str = ".") -> DeploymentRepo:
    """Open a deployment repository at ``root`` (its hubploy-repo.yaml is optional), validated once per
    content of its files (``REPOS``)."""
    repo, issues = try_load_repo(root)
    if repo is None:
        raise ConfigError(issues)
    return repo


def try_load_repo(root: Path | str) -> tuple[DeploymentRepo | None, list[ConfigIssue]]:
    return REPOS.load(root)


@dataclass(frozen=True)
class Hub:
    name: str
    dir: Path
    repo: DeploymentRepo
    config: HubConfig
    lines: LineMap = field(default_factory=dict, repr=False)

    @property
    def config_file(self) -> Path:
        return self.dir / HUB_FILE

    @property
    def environments(self) -> list[str]:
        return list(self.config.environments)

    def _check_env(self, env: str) -> None:
        if env not in self.config.environments:
            raise ConfigError(
                [
                    ConfigIssue(
                        self.config_file,
                        "environments",
                        f"hub {self.name!r} has no environment {env!r}",
                        hint=f"its environments are: {', '.join(self.environments)}",
                    )
                ]
            )

    def release(self, env: str) -> str:
        self._check_env(env)
        return self.config.release(self.name, env)

    def namespace(self, env: str) -> str:
        self._check_env(env)
        return self.config.namespace(self.name, env)

    def url(self, env: str) -> str | None:
        self._check_env(env)
        return self.config.environment(env).url

    def secret_file(self, filename: str) -> Path:
        """Key files named in hubploy.yaml live in the hub's secrets/ dir."""
        return self.dir / "secrets" / filename

    @property
    def images(self) -> list[ImageSpec]:
        specs = []
        for entry in self.config.image_entries():
            name, tag = split_image_reference(entry.name)
            specs.append(
                ImageSpec(
                    name=name,
                    pinned_tag=tag,
                    path=(self.dir / entry.path).resolve() if entry.path else None,
                    helm_substitution_path=entry.helm_substitution_path,
                    base_image=entry.repo2docker.base_image if entry.repo2docker else None,
                )
            )
        return specs
