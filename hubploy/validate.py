"""`hubploy validate`: every check that needs no cluster, over all hubs, reporting all problems."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hubploy.config.loader import LineMap, format_key_path, load_mapping
from hubploy.config.models import Problem, is_dns_label
from hubploy.errors import ConfigIssue, HubNotFoundError
from hubploy.layout import HUB_FILE, DeploymentRepo, try_load_repo
from hubploy.secrets import check_secret_file


def validate_repo(root: Path, hubs: Iterable[str] = ()) -> list[ConfigIssue]:
    """Check the repo settings, the chart dir and every hub (or the named ones)."""
    repo, issues = try_load_repo(root)
    if repo is None:
        return issues
    settings_file = repo.settings_file if repo.settings_file.exists() else repo.chart_dir
    lines = load_mapping(settings_file, allow_empty=True)[1] if settings_file.is_file() else None
    issues.extend(_issues(settings_file, repo.settings.problems(repo.root), lines))
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
    if not is_dns_label(name):
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
        issues.extend(_issues(hub.config_file, hub.config.problems(hub.name, hub.dir), hub.lines))
    return issues


def _issues(file: Path, problems: Iterable[Problem], lines: LineMap | None = None) -> list[ConfigIssue]:
    """The model's problems as issues of ``file``, at the line of their key (or of its parent)."""
    issues: list[ConfigIssue] = []
    for problem in problems:
        line = lines.get(problem.path) or lines.get(problem.path[:-1]) if lines and problem.path else None
        issues.append(ConfigIssue(file, format_key_path(problem.path), problem.message, line=line,
                                  hint=problem.hint))
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
