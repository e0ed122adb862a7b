"""`hubploy validate`: every check that needs no cluster, over all hubs, reporting all problems."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hubploy.config.loader import load_mapping
from hubploy.config.models import ProviderSettings
from hubploy.errors import ConfigIssue, HubNotFoundError
from hubploy.layout import DNS_LABEL, HUB_FILE, MAX_RELEASE_NAME, DeploymentRepo, Hub, try_load_repo
from hubploy.secrets import check_secret_file



def validate_repo(root: Path, hubs: Iterable[str] = ()) -> list[ConfigIssue]:
    """Check the repo settings, the chart dir and every hub (or the named ones)."""
    repo, issues = try_load_repo(root)
    if repo is None:
        return issues
    if not (repo.chart_dir / "Chart.yaml").is_file():
        issues.append(ConfigIssue(repo.settings_file if repo.settings_file.exists() else repo.chart_dir, "chart",
                                  f"chart directory {repo.settings.chart}/ with a Chart.yaml not found",
                                  hint="set `chart:` in hubploy-repo.yaml to your umbrella chart's directory"))
    key_file = repo.settings.secrets.age_key_file
    if key_file and not (repo.root / key_file).is_file():
        issues.append(ConfigIssue(repo.settings_file, "secrets.age_key_file",
                                  f"age key file {key_file} does not exist",
                                  hint="the path is relative to the repository root; sops could decrypt nothing"))
    names = list(hubs) or repo.hub_names()
    if not names:
        issues.append(ConfigIssue(repo.hubs_dir, "", "no hubs found: no deployments/<hub>/hubploy.yaml"))
    for name in names:
        issues.extend(validate_hub(repo, name))
    return issues


def validate_hub(repo: DeploymentRepo, name: str) -> list[ConfigIssue]:
    hub_dir = repo.hub_dir(name)
    if not hub_dir.is_dir():
        raise HubNotFoundError(f"no hub named {name!r}: {hub_dir} does not exist",
                               hint=f"hubs found: {', '.join(repo.hub_names()) or 'none'}")
    issues: list[ConfigIssue] = []
    if len(name) > 63 or not DNS_LABEL.match(name):
        issues.append(ConfigIssue(hub_dir, "", f"hub name {name!r} is not a valid DNS label",
                                  hint="use lowercase letters, digits and '-', starting and ending with a letter "
                                       "or digit, at most 63 characters (it names a namespace)"))
    if not (hub_dir / HUB_FILE).is_file():
        return issues + [ConfigIssue(hub_dir / HUB_FILE, "", "file not found",
                                     hint="every hub dir needs a hubploy.yaml, even a minimal `{}`-like one")]
    issues.extend(_check_layout(repo.root, hub_dir))
    hub, load_issues = repo.try_load_hub(name)
    issues.extend(load_issues)
    issues.extend(_check_value_files(hub_dir))
    issues.extend(_check_secrets_dir(hub_dir, repo.settings.secrets.allow_plaintext))
    if hub is not None:
        issues.extend(_check_names(hub))
        issues.extend(_check_images(hub))
        issues.extend(_check_key_files(hub))
    return issues


def _check_names(hub: Hub) -> list[ConfigIssue]:
    issues = []
    for env in hub.environments:
        release, namespace = hub.release(env), hub.namespace(env)
        line = hub.lines.get(("environments", env)) or hub.lines.get(("environments",))
        if len(release) > MAX_RELEASE_NAME:
            issues.append(ConfigIssue(hub.config_file, f"environments.{env}",
                                      f"release name {release!r} is {len(release)} characters; helm allows "
                                      f"{MAX_RELEASE_NAME}", line=line,
                                      hint="shorten the hub name or set environments.<env>.release"))
        if len(namespace) > 63 or not DNS_LABEL.match(namespace):
            issues.append(ConfigIssue(hub.config_file, f"environments.{env}",
                                      f"namespace {namespace!r} is not a valid DNS label", line=line))
    return issues


def _image_key(hub: Hub, index: int) -> tuple[str, tuple]:
    if hub.config.images and hub.config.images.image_name:
        return "images.image_name", ("images", "image_name")
    return f"images.images[{index}].path", ("images", "images", index, "path")


def _check_images(hub: Hub) -> list[ConfigIssue]:
    issues = []
    hub_root = hub.dir.resolve()
    for index, image in enumerate(hub.images):
        if image.path is None:
            continue
        key, lookup = _image_key(hub, index)
        line = hub.lines.get(lookup)
        if image.path != hub_root and hub_root not in image.path.parents:
            issues.append(ConfigIssue(hub.config_file, key, f"image path {image.path} is outside the hub directory",
                                      line=line, hint="image dirs must live inside deployments/<hub>/"))
        elif not image.path.is_dir():
            rel = image.path.relative_to(hub_root)
            issues.append(ConfigIssue(hub.config_file, key, f"image directory {rel}/ does not exist", line=line))
    return issues


def _sections(hub: Hub) -> list[tuple[str, ProviderSettings]]:
    found: list[tuple[str, ProviderSettings]] = []
    if hub.config.images and hub.config.images.registry and hub.config.images.registry.settings is not None:
        registry = hub.config.images.registry
        found.append((f"images.registry.{registry.provider}", registry.settings))
    if hub.config.cluster:
        cluster = hub.config.cluster
        found.append((f"cluster.{cluster.provider}", cluster.settings))
        if cluster.provider != "kubeconfig" and cluster.kubeconfig is not None:
            found.append(("cluster.kubeconfig", cluster.kubeconfig))
    return found


def _check_key_files(hub: Hub) -> list[ConfigIssue]:
    issues = []
    secrets_dir = (hub.dir / "secrets").resolve()
    for prefix, section in _sections(hub):
        for field, filename in section.key_files().items():
            key = f"{prefix}.{field}"
            line = hub.lines.get(tuple(key.split(".")))
            path = hub.secret_file(filename).resolve()
            if secrets_dir not in path.parents:
                issues.append(ConfigIssue(hub.config_file, key, f"{filename!r} is outside the hub's secrets/ dir",
                                          line=line))
            elif not path.is_file():
                issues.append(ConfigIssue(hub.config_file, key, f"key file secrets/{filename} does not exist",
                                          line=line, hint="key files are looked up in deployments/<hub>/secrets/"))
    return issues


def _check_value_files(hub_dir: Path) -> list[ConfigIssue]:
    issues = []
    config_dir = hub_dir / "config"
    for path in sorted(config_dir.glob("*.yaml")) + sorted(config_dir.glob("*.yml")):
        _, _, found = load_mapping(path, allow_empty=True)
        issues.extend(found)
    return issues


def _check_secrets_dir(hub_dir: Path, allow_plaintext: bool) -> list[ConfigIssue]:
    issues = []
    secrets_dir = hub_dir / "secrets"
    if not secrets_dir.is_dir():
        return issues
    for path in sorted(p for p in secrets_dir.rglob("*") if p.is_file()):
        problem = check_secret_file(path, allow_plaintext)
        if problem:
            issues.append(ConfigIssue(path, "", problem))
    return issues


def _check_layout(root: Path, hub_dir: Path) -> list[ConfigIssue]:
    """config/ and secrets/ are directories when present (else their files would be silently
    ignored), and no symlink in the hub dir leads outside the repository."""
    issues = []
    for sub in ("config", "secrets"):
        path = hub_dir / sub
        if path.exists() and not path.is_dir():
            issues.append(ConfigIssue(path, "", f"{sub}/ is not a directory",
                                      hint=f"the hub's {sub} files live in deployments/<hub>/{sub}/"))
    repo_root = root.resolve()
    for path in sorted(hub_dir.rglob("*")):
        if path.is_symlink():
            target = path.resolve()
            if target != repo_root and repo_root not in target.parents:
                issues.append(ConfigIssue(path, "", f"symlink points outside the repository (to {target})",
                                          hint="a deployment repo must be self-contained; copy the file in"))
    return issues
