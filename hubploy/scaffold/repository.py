"""`hubploy init DIR`: a deployment repository with one hub, ready for `hubploy validate` and a deploy.

Everything is checked first (flags, the local chart, the credentials file, the age key); then every file is
made, secrets encrypted, in a temporary directory next to DIR; files DIR already has are refused, naming
them, unless ``force``; then (optionally) git commits them on a new repository with the branches staging
and prod, a new age key is written outside the repository, and the files move into DIR. A failure before
the move leaves DIR as it was.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubploy.age_keys import AgeKey, generate_key, is_recipient, read_key_file, write_key_file
from hubploy.config.base import inside
from hubploy.config.loader import load_yaml_or_raise
from hubploy.config.models import DEFAULT_ENVIRONMENTS, image_reference_problem, split_image_reference
from hubploy.errors import HubployError
from hubploy.git import head_sha, run_git
from hubploy.scaffold import texts
from hubploy.scaffold.clusters import (
    ClusterInput,
    KeyFile,
    check_options,
    cluster_section,
    key_file,
    missing_values,
    registry_section,
)
from hubploy.scaffold.hubs import IMAGE_DIR, check_hub_name, hub_files, secret_files
from hubploy.scaffold.staging import StagedTree
from hubploy.scaffold.texts import CHART_DIR, CHART_NAME, ChartSource, RepoFacts
from hubploy.secrets import encrypt_text

DEFAULT_CHART_VERSION = "4.4.0"
DEFAULT_CHART_REPOSITORY = "https://hub.jupyter.org/helm-chart/"
CHART_SCHEMES = ("https://", "http://", "oci://")
LOCAL_CHART_DIR = f"charts/{CHART_NAME}"
PACKAGE = "hubploy-prefect"
# Who commits when git knows no user (the operator can amend the commit).
GIT_IDENTITY = ["-c", "user.name=hubploy init", "-c", "user.email=hubploy-init@localhost"]


@dataclass(frozen=True)
class InitOptions:
    target: Path
    hub: str = "hub"
    cluster: ClusterInput = field(default_factory=ClusterInput)
    registry: str | None = None  # the user image's repository, without a tag
    base_image: str | None = None  # its Dockerfile's FROM (default: the chart's singleuser sample)
    age_recipient: str | None = None
    age_key_file: Path | None = None  # where a new key goes (default: default_age_key_file)
    chart_version: str | None = None  # default: DEFAULT_CHART_VERSION, or the local chart's
    chart_repository: str = DEFAULT_CHART_REPOSITORY
    chart_path: Path | None = None
    git: bool = True
    force: bool = False
    pip_spec: str | None = None  # what the workflow installs (default: this version of hubploy)


@dataclass(frozen=True)
class AgeChoice:
    recipient: str
    key_file: Path | None  # the identity's file (None: the operator has the recipient's key)
    new_key: AgeKey | None = None  # to be written to key_file


@dataclass(frozen=True)
class InitResult:
    root: Path
    hub: str
    files: list[str]
    replaced: list[str]
    recipient: str
    key_file: Path | None
    key_created: bool
    commit: str | None


def default_age_key_file(target: Path) -> Path:
    return Path.home() / ".config" / "hubploy" / "age" / f"{target.resolve().name}.key"


def default_pip_spec() -> str:
    try:
        return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        return PACKAGE


def check(options: InitOptions) -> None:
    """Refuse, before anything is read or written, every flag that cannot work."""
    target = options.target
    check_hub_name(options.hub)
    if target.exists() and not target.is_dir():
        raise HubployError(f"{target} exists and is not a directory")
    if options.git and (target / ".git").exists():
        raise HubployError(
            f"{target} is already a git repository",
            hint="pass --no-git, and commit what init writes yourself",
        )
    if options.registry:
        problem = image_reference_problem(options.registry)
        if problem is None and split_image_reference(options.registry)[1] is not None:
            problem = "give the repository without a tag (hubploy tags the image from git)"
        if problem:
            raise HubployError(f"--registry {options.registry}: {problem}")
    if options.base_image and (problem := image_reference_problem(options.base_image)):
        raise HubployError(f"--base-image {options.base_image}: {problem}")
    if options.base_image and not options.registry:
        raise HubployError("--base-image needs --registry (the image built from it)")
    if options.age_recipient and not is_recipient(options.age_recipient):
        raise HubployError(f"--age-recipient {options.age_recipient!r} is not an age recipient (age1...)")
    key = options.age_key_file or default_age_key_file(target)
    if not options.age_recipient and inside(key.resolve(), target.resolve()):
        raise HubployError(
            f"--age-key-file {key} is inside the new repository",
            hint="the key decrypts every secret: keep it outside the repository",
        )
    if options.chart_path is None and not options.chart_repository.startswith(CHART_SCHEMES):
        raise HubployError(
            f"--chart-repository {options.chart_repository!r} is not an https:// or oci:// URL",
            hint="for a chart on this machine, use --chart-path DIR",
        )
    check_options(options.cluster, options.registry)
    missing = missing_values(options.cluster, options.registry)
    if missing:
        raise HubployError(
            f"--provider {options.cluster.provider} needs {', '.join(m.flag for m in missing)}",
            hint="give them as flags (init asks for them only on a terminal)",
        )


def chart_source(options: InitOptions) -> ChartSource:
    """The jupyterhub dependency: a chart repository, or the local chart of --chart-path (copied into
    the repository, unless it is already inside it)."""
    version = options.chart_version or DEFAULT_CHART_VERSION
    if options.chart_path is None:
        return ChartSource(version, options.chart_repository)
    path = options.chart_path.resolve()
    if not (path / "Chart.yaml").is_file():
        raise HubployError(f"--chart-path {options.chart_path}: no Chart.yaml, so not a chart directory")
    meta = load_yaml_or_raise(path / "Chart.yaml")
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("name") != CHART_NAME:
        raise HubployError(
            f"--chart-path {options.chart_path} is the chart {meta.get('name')!r}, not {CHART_NAME}"
        )
    local_version = str(meta.get("version", ""))
    if options.chart_version and options.chart_version != local_version:
        raise HubployError(
            f"--chart-path {options.chart_path} is {CHART_NAME} {local_version}, not "
            f"--chart-version {options.chart_version}"
        )
    target = options.target.resolve()
    local_dir = os.path.relpath(path, target) if inside(path, target) else LOCAL_CHART_DIR
    kube = meta.get("kubeVersion")
    return ChartSource(
        local_version,
        "file://" + os.path.relpath(target / local_dir, target / CHART_DIR),
        str(kube) if kube else None,
        local_dir,
        None if inside(path, target) else path,
    )


def age_choice(options: InitOptions) -> AgeChoice:
    """The recipient given; else the identity in the key file (reused when it exists, never replaced)."""
    if options.age_recipient:
        return AgeChoice(options.age_recipient, None)
    path = (options.age_key_file or default_age_key_file(options.target)).expanduser()
    if path.exists():
        return AgeChoice(read_key_file(path).recipient, path)
    key = generate_key()
    return AgeChoice(key.recipient, path, key)


def _image(options: InitOptions, key: KeyFile | None) -> dict[str, Any] | None:
    if not options.registry:
        return None
    image: dict[str, Any] = {"images": [{"name": options.registry, "path": IMAGE_DIR}]}
    registry = registry_section(options.registry, options.cluster, key)
    if registry is not None:
        image["registry"] = registry
    return image


def init_repository(options: InitOptions, env: Mapping[str, str]) -> InitResult:
    """Write the repository (see the module docstring); ``env`` is the environment of sops and git."""
    check(options)
    chart = chart_source(options)
    key = key_file(options.cluster, env)
    age = age_choice(options)
    hub, prefix = options.hub, f"deployments/{options.hub}/"
    cluster = cluster_section(options.cluster, key)
    image = _image(options, key)
    facts = RepoFacts(
        hub, chart, age.recipient, cluster, image is not None, options.pip_spec or default_pip_spec()
    )
    clear = {
        f"{CHART_DIR}/Chart.yaml": texts.chart_yaml(chart),
        f"{CHART_DIR}/values.yaml": texts.chart_values_yaml(chart),
        f"{CHART_DIR}/values.schema.json": texts.chart_values_schema(),
        "hubploy-repo.yaml": texts.repo_settings_yaml(chart),
        ".gitignore": texts.gitignore(),
        "README.md": texts.readme(facts),
        texts.WORKFLOW_FILE: texts.workflow(facts),
    }
    base = options.base_image or f"quay.io/jupyterhub/k8s-singleuser-sample:{chart.version}"
    clear.update(
        {
            prefix + path: text
            for path, text in hub_files(hub, image=image, cluster=cluster, base_image=base).items()
        }
    )
    secret = {prefix + path: text for path, text in secret_files(hub, DEFAULT_ENVIRONMENTS).items()}
    if key is not None:
        secret[f"{prefix}secrets/{key.name}"] = key.text
    target = options.target.resolve()
    with StagedTree(target, workdir=target if target.is_dir() else None) as tree:
        tree.write(".sops.yaml", texts.sops_yaml(age.recipient))
        for path, text in clear.items():
            tree.write(path, text)
        for path, text in secret.items():
            tree.write(path, encrypt_text(text, path, root=tree.root, env=env))
        if chart.copy_from is not None and chart.local_dir is not None:
            tree.copy_tree(chart.copy_from, chart.local_dir)
        replaced = tree.refuse_conflicts(force=options.force)
        files = sorted(tree.entries)
        commit = None
        if options.git:
            commit = _commit(tree.root, hub, env)
            tree.add_entry(".git")
        if age.new_key is not None and age.key_file is not None:
            write_key_file(age.key_file, age.new_key)
        tree.move_into_place()
    return InitResult(
        target, hub, files, replaced, age.recipient, age.key_file, age.new_key is not None, commit
    )


def _commit(root: Path, hub: str, env: Mapping[str, str]) -> str:
    """One commit of everything under ``root``, on a new repository's branch staging; prod at the same
    commit."""
    run_git(root, ["init", "-q", "-b", "staging"], env)
    run_git(root, ["add", "-A"], env)
    identity = [] if run_git(root, ["config", "user.email"], env, check=False).strip() else GIT_IDENTITY
    run_git(root, [*identity, "commit", "-q", "-m", f"hubploy init: hub {hub}"], env)
    run_git(root, ["branch", "prod"], env)
    return head_sha(root, env=env)
