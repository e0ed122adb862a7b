"""`hubploy validate`: every check that needs no cluster, over all hubs, reporting all problems.

What is checked is what hubploy reads, as it reads it: hubploy.yaml (only the chosen provider's
sections), the hub's values files (config/common.yaml and config/<env>.yaml of its environments), its
secret values files (secrets/<env>.yaml, and the secrets submodule's) and the key files hubploy.yaml
names. Other files in config/ or secrets/ are not read, so not judged; a symlink anywhere in the hub that
leads outside the repository is refused. Then, per environment, the merged values are checked against
the chart's values.schema.json and its dependencies' (hubploy.values_schema), with the secrets decrypted
(``decrypt=False``: their encrypted structure, keys and types only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hubploy import helm
from hubploy.charts import Chart, read_chart, update_dependencies
from hubploy.config.base import inside
from hubploy.config.loader import LineMap, format_key_path, load_mapping, load_yaml
from hubploy.config.models import ALLOWED_ENVIRONMENTS, Problem, is_dns_label
from hubploy.errors import CommandError, ConfigError, ConfigIssue, HubNotFoundError, SecretsError
from hubploy.layout import HUB_FILE, DeploymentRepo, Hub, try_load_repo
from hubploy.runner import child_env
from hubploy.secrets import check_secret_file, decrypted, is_encrypted, register_secret_strings, with_age_key
from hubploy.values import coalesce, config_values_files, merge_maps, secret_values_files, set_values
from hubploy.values_schema import Layer, check_values, encrypted_structure

PLACEHOLDER_TAG = "git-tag"  # the tag validate injects for an image whose tag git derives


def validate_repo(
    root: Path,
    hubs: Iterable[str] = (),
    *,
    envs: Iterable[str] = (),
    decrypt: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[ConfigIssue]:
    """Check the repo settings, the chart dir and every hub (or the named ones) in every environment
    (or the named ones). ``env`` is the environment of helm and sops (default: this process's)."""
    repo, loaded = try_load_repo(root)
    if repo is None:
        return loaded
    issues = list(loaded)  # the cache's list stays as it is
    settings_file = repo.settings_file if repo.settings_file.exists() else repo.chart_dir
    lines = load_mapping(settings_file, allow_empty=True)[1] if settings_file.is_file() else None
    issues.extend(_issues(settings_file, repo.settings.problems(repo.root), lines))
    issues.extend(_check_link(repo.root, repo.hubs_dir))
    names = list(hubs) or repo.hub_names()
    if not names:
        issues.append(ConfigIssue(repo.hubs_dir, "", "no hubs found: no deployments/<hub>/hubploy.yaml"))
    env = child_env() if env is None else env
    chart = _chart(repo, env, issues)
    for name in names:
        issues.extend(validate_hub(repo, name, chart=chart, envs=envs, decrypt=decrypt, env=env))
    return list(dict.fromkeys(issues))


def _chart(repo: DeploymentRepo, env: Mapping[str, str], issues: list[ConfigIssue]) -> Chart | None:
    """The umbrella chart, its dependencies fetched when they are not at hand (only remote ones need
    helm and the network); None, with the issues added, when it cannot be read."""
    if not (repo.chart_dir / "Chart.yaml").is_file():
        return None
    try:
        chart = read_chart(repo.chart_dir)
        if any(not d.repository.startswith("file://") for d in chart.dependencies):
            update_dependencies(helm.helm_executable(env), repo.chart_dir, root=repo.root, env=env)
            chart = read_chart(repo.chart_dir)
        return chart
    except ConfigError as exc:
        issues.extend(exc.issues)
    except CommandError as exc:
        issues.append(
            ConfigIssue(
                repo.chart_dir / "Chart.yaml",
                "dependencies",
                f"cannot fetch the chart's dependencies: {exc.message}",
                hint=exc.hint,
            )
        )
    return None


def validate_hub(
    repo: DeploymentRepo,
    name: str,
    *,
    chart: Chart | None = None,
    envs: Iterable[str] = (),
    decrypt: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[ConfigIssue]:
    hub_dir = repo.hub_dir(name)
    if not hub_dir.is_dir():
        raise HubNotFoundError(
            f"no hub named {name!r}: {hub_dir} does not exist",
            hint=f"hubs found: {', '.join(repo.hub_names()) or 'none'}",
        )
    issues: list[ConfigIssue] = []
    if not is_dns_label(name):
        issues.append(
            ConfigIssue(
                hub_dir,
                "",
                f"hub name {name!r} is not a valid DNS label",
                hint="use lowercase letters, digits and '-', starting and ending with a "
                "letter or digit, at most 63 characters (it names a namespace)",
            )
        )
    if not (hub_dir / HUB_FILE).is_file():
        return issues + [
            ConfigIssue(
                hub_dir / HUB_FILE,
                "",
                "file not found",
                hint="every hub dir needs a hubploy.yaml, even a minimal `{}`-like one",
            )
        ]
    outside = _check_link(repo.root, hub_dir)
    if outside:
        return issues + outside  # a hub dir leading outside the repository is not read
    issues.extend(_check_layout(repo.root, hub_dir))
    hub, load_issues = repo.try_load_hub(name)
    issues.extend(load_issues)
    env_names = list(envs) or (hub.environments if hub is not None else list(ALLOWED_ENVIRONMENTS))
    files_issues = _check_value_files(hub_dir, env_names)
    files_issues += _check_secret_files(
        _secret_files(repo, hub, name, env_names), repo.settings.secrets.allow_plaintext
    )
    issues.extend(files_issues)
    if hub is not None:
        issues.extend(_issues(hub.config_file, hub.config.problems(hub.name, hub.dir, repo.root), hub.lines))
    if hub is not None and chart is not None and not files_issues:
        for env_name in env_names:
            try:
                issues.extend(
                    _check_schema(
                        repo, hub, env_name, chart, decrypt=decrypt, env=child_env() if env is None else env
                    )
                )
            except ConfigError as exc:
                issues.extend(exc.issues)
    return issues


def _issues(file: Path, problems: Iterable[Problem], lines: LineMap | None = None) -> list[ConfigIssue]:
    """The model's problems as issues of ``file``, at the line of their key (or of its parent)."""
    issues: list[ConfigIssue] = []
    for problem in problems:
        line = lines.get(problem.path) or lines.get(problem.path[:-1]) if lines and problem.path else None
        issues.append(
            ConfigIssue(file, format_key_path(problem.path), problem.message, line=line, hint=problem.hint)
        )
    return issues


def _check_value_files(hub_dir: Path, env_names: list[str]) -> list[ConfigIssue]:
    issues = []
    for path in dict.fromkeys(p for env_name in env_names for p in config_values_files(hub_dir, env_name)):
        if path.is_file():
            issues.extend(load_mapping(path, allow_empty=True)[2])
    return issues


def _secret_files(repo: DeploymentRepo, hub: Hub | None, name: str, env_names: list[str]) -> list[Path]:
    """The secret files hubploy reads for the hub: its secret values files, and the key files of the
    chosen providers."""
    files = [
        path
        for env_name in env_names
        for path in secret_values_files(repo.hub_dir(name), repo.root, name, env_name)
    ]
    if hub is not None:
        for _, settings in hub.config.provider_settings():
            files += [
                hub.secret_file(filename)
                for filename in settings.key_files().values()
                if hub.secret_file(filename).is_file()
            ]
    return list(dict.fromkeys(files))


def _check_secret_files(paths: list[Path], allow_plaintext: bool) -> list[ConfigIssue]:
    issues = []
    for path in paths:
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
            issues.append(
                ConfigIssue(
                    path,
                    "",
                    f"{sub}/ is not a directory",
                    hint=f"the hub's {sub} files live in deployments/<hub>/{sub}/",
                )
            )
    for path in sorted(hub_dir.rglob("*")):
        if path.is_symlink():
            issues.extend(_check_link(root, path))
    return issues


def _check_link(root: Path, path: Path) -> list[ConfigIssue]:
    """A path (or a symlink) that resolves outside the repository."""
    try:
        target = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return [ConfigIssue(path, "", f"cannot resolve the symlink: {exc}")]
    if inside(target, root):
        return []
    return [
        ConfigIssue(
            path,
            "",
            f"symlink points outside the repository (to {target})",
            hint="a deployment repo must be self-contained; copy the file in",
        )
    ]


# --- the chart's values schema ---------------------------------------------------------------------------


def _check_schema(
    repo: DeploymentRepo, hub: Hub, env_name: str, chart: Chart, *, decrypt: bool, env: Mapping[str, str]
) -> list[ConfigIssue]:
    """The hub's merged values in ``env_name`` against the chart's schemas, each error in the file that
    set the key."""
    chart_values = repo.chart_dir / "values.yaml"
    defaults = [_layer(chart_values)] if chart_values.is_file() else []
    layers = [_layer(path) for path in config_values_files(hub.dir, env_name) if path.is_file()]
    for path in secret_values_files(hub.dir, repo.root, hub.name, env_name):
        try:
            layers.append(_secret_layer(repo, path, decrypt=decrypt, env=env))
        except SecretsError as exc:
            return [
                ConfigIssue(
                    path,
                    "",
                    exc.message.removeprefix(f"{path}: "),
                    hint=(exc.hint + "; " if exc.hint else "") + "or check the rest without "
                    "decrypting: `hubploy validate --no-decrypt`",
                )
            ]
    user: dict[str, Any] = {}
    for layer in layers:
        user = merge_maps(user, layer.data)
    injected = [
        f"{path}.{key}={value}"
        for path, name, tag in _images(hub)
        for key, value in (("name", name), ("tag", tag))
    ]
    merged = coalesce(chart.values, set_values(user, [], injected))
    return check_values(chart, repo.root, [*defaults, *layers, _image_layer(hub)], merged)


def _layer(path: Path, *, secret: bool = False, shown_as: Path | None = None) -> Layer:
    """The values of a YAML file; ConfigError, naming ``shown_as`` (default: the file), when it does not
    parse (a decrypted secret's own problems are reported without its text)."""
    data, lines, issues = load_yaml(path)
    if issues:
        if shown_as is None:
            raise ConfigError(issues)
        raise ConfigError(
            [
                ConfigIssue(
                    shown_as, issue.key_path, "decrypted: " + issue.message.split(":")[0], line=issue.line
                )
                for issue in issues
            ]
        )
    return Layer(shown_as or path, data if isinstance(data, dict) else {}, lines, secret=secret)


def _secret_layer(repo: DeploymentRepo, path: Path, *, decrypt: bool, env: Mapping[str, str]) -> Layer:
    """A secret values file as a layer: decrypted (its strings registered for redaction), or its
    encrypted structure with typed placeholders."""
    encrypted = _layer(path, secret=True)  # sops keeps the keys, their order and their lines
    if not is_encrypted(path):
        return encrypted
    if not decrypt:
        data, placeholders = encrypted_structure(encrypted.data)
        return Layer(path, data, encrypted.lines, secret=True, placeholders=placeholders)
    with decrypted(
        [path],
        env=with_age_key(env, repo.age_key_file),
        allow_plaintext=repo.settings.secrets.allow_plaintext,
    ) as files:
        clear = _layer(files[path], secret=True, shown_as=path)
    register_secret_strings(clear.data, secret=True)
    return Layer(path, clear.data, encrypted.lines, secret=True)


def _images(hub: Hub) -> list[tuple[str, str, str]]:
    return [
        (spec.helm_substitution_path, spec.name, spec.pinned_tag or PLACEHOLDER_TAG) for spec in hub.images
    ]


def _image_layer(hub: Hub) -> Layer:
    """The images hubploy.yaml injects (``--set-string <path>.name/.tag``), at the lines that name them."""
    data: dict[str, Any] = {}
    lines: LineMap = {}
    legacy = bool(hub.config.images and hub.config.images.image_name)
    for index, (path, name, tag) in enumerate(_images(hub)):
        keys = tuple(path.split("."))
        data = merge_maps(data, _nested(keys, {"name": name, "tag": tag}))
        line = hub.lines.get(("images", "image_name") if legacy else ("images", "images", index))
        if line is not None:
            for key_path in [keys[:end] for end in range(1, len(keys) + 1)] + [
                (*keys, "name"),
                (*keys, "tag"),
            ]:
                lines.setdefault(key_path, line)
    return Layer(hub.config_file, data, lines)


def _nested(keys: tuple[str, ...], leaf: dict[str, Any]) -> dict[str, Any]:
    for key in reversed(keys):
        leaf = {key: leaf}
    return leaf
