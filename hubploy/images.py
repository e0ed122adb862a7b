"""Which images of a hub need building, under which tag, and why.

Tags (classic hubploy): a pinned ``name:tag`` keeps its tag; otherwise the tag is the shortest
alphabetic prefix of the last commit touching the image dir (:func:`hubploy.git.image_tag`).

Rebuilds: a scheduled no-cache rebuild never overwrites a tag. It pushes ``<tag>-r<YYYYMMDD>``
(UTC; ``.2``, ``.3``... when that exists too) and records it in ``deployments/<hub>/image-tags.yaml``::

    images:
      localhost:5000/hubploy/minimal-user: {source_tag: 1a2b3c4, tag: 1a2b3c4-r20261127}

committed to the staging branch. :func:`effective_tag` returns the rebuild tag only while the git tag
is still ``source_tag``: once the image dir changes, its new git tag wins and the record is stale.
Build, deploy and the lifecycle all use :func:`effective_tag`, so a rebuild reaches users through the
normal staging -> approval -> prod path of that commit.

Decision rules (classic ``LocalImage.needs_building``): with ``--check-registry`` build when the
registry lacks ``name:tag``; with ``--commit-range`` build when ``git diff --name-only RANGE -- path``
is non-empty.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from hubploy import git
from hubploy.config.loader import load_yaml_or_raise
from hubploy.errors import ConfigError, ConfigIssue, HubployError
from hubploy.layout import Hub, ImageSpec

REBUILD_TAGS_FILE = "image-tags.yaml"
ExistsFn = Callable[[str, str], bool]  # (name, tag) -> present in the registry


@dataclass(frozen=True)
class ImagePlan:
    spec: ImageSpec
    tag: str
    build: bool
    reason: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def reference(self) -> str:
        return f"{self.spec.name}:{self.tag}"


def git_tag(repo_root: Path, spec: ImageSpec, *, allow_dirty: bool = False) -> str:
    """The classic tag: pinned, else derived from the last commit touching the image dir."""
    if spec.pinned_tag:
        return spec.pinned_tag
    if spec.path is None:
        raise HubployError(f"image {spec.name} has neither a pinned tag nor a build dir")
    return git.image_tag(repo_root, spec.path, allow_dirty=allow_dirty)


def rebuild_tags_file(hub_dir: Path) -> Path:
    return hub_dir / REBUILD_TAGS_FILE


def read_rebuild_tags(hub_dir: Path) -> dict[str, dict[str, str]]:
    """{image name: {"source_tag": git tag, "tag": rebuild tag}} from image-tags.yaml (may be absent)."""
    path = rebuild_tags_file(hub_dir)
    if not path.is_file():
        return {}
    data = load_yaml_or_raise(path) or {}
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("source_tag"), str) and isinstance(v.get("tag"), str)
        for v in images.values()
    ):
        raise ConfigError([ConfigIssue(path, "images", "expected a mapping image name -> {source_tag, tag}")])
    return images


def write_rebuild_tags(hub_dir: Path, records: Mapping[str, Mapping[str, str]]) -> Path:
    """Merge ``records`` into image-tags.yaml and return its path."""
    images = {**read_rebuild_tags(hub_dir), **{k: dict(v) for k, v in records.items()}}
    path = rebuild_tags_file(hub_dir)
    header = (
        "# Written by the scheduled image rebuild (flows/rebuild_images.py). A tag applies only while\n"
        "# the image's git-derived tag equals source_tag. Delete an entry to go back to the git tag.\n"
    )
    path.write_text(header + yaml.safe_dump({"images": dict(sorted(images.items()))}, sort_keys=True))
    return path


def effective_tag(hub: Hub, spec: ImageSpec, *, allow_dirty: bool = False) -> str:
    """The tag to build, check and deploy: a recorded rebuild tag of the current git tag, else the git tag."""
    tag = git_tag(hub.repo.root, spec, allow_dirty=allow_dirty)
    record = read_rebuild_tags(hub.dir).get(spec.name)
    return record["tag"] if record and record["source_tag"] == tag else tag


def rebuild_tag(tag: str, exists: Callable[[str], bool], today: dt.date | None = None) -> str:
    """``<tag>-r<YYYYMMDD>`` (UTC), or the first of ``.2``, ``.3``... for which ``exists`` is False."""
    day = today or dt.datetime.now(dt.UTC).date()
    base = f"{tag}-r{day:%Y%m%d}"
    candidate, n = base, 1
    while exists(candidate):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def select_images(specs: Iterable[ImageSpec], names: Iterable[str] = ()) -> list[ImageSpec]:
    """``--image NAME`` filter: the fully qualified name without tag; unknown names are an error."""
    specs, wanted = list(specs), list(dict.fromkeys(names))
    if not wanted:
        return specs
    known = {s.name for s in specs}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise HubployError(
            f"no image named {', '.join(unknown)} in this hub",
            hint=f"--image takes the full name without tag: {', '.join(sorted(known)) or 'none'}",
        )
    return [s for s in specs if s.name in wanted]


def decide(
    repo_root: Path,
    spec: ImageSpec,
    tag: str,
    *,
    check_registry: bool,
    commit_range: str | None,
    exists: ExistsFn | None,
) -> tuple[bool, str]:
    """(build?, why) for one image under the given mode."""
    if spec.path is None:
        return False, f"pinned to {tag} with no build dir"
    if check_registry:
        if exists is None:
            raise ValueError("check_registry needs an exists function")
        if exists(spec.name, tag):
            return False, f"{spec.name}:{tag} already in the registry"
        return True, f"{spec.name}:{tag} not in the registry"
    if commit_range:
        rel = _relative(spec.path, repo_root)
        if git.path_changed(repo_root, commit_range, spec.path):
            return True, f"{rel} changed in {commit_range}"
        return False, f"{rel} unchanged in {commit_range}"
    raise HubployError("no build mode: neither check_registry nor commit_range was given")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.resolve()))
    except ValueError:
        return str(path)


def plan_hub(
    hub: Hub,
    *,
    check_registry: bool = False,
    commit_range: str | None = None,
    exists: ExistsFn | None = None,
    images: Iterable[str] = (),
    allow_dirty: bool = False,
) -> list[ImagePlan]:
    """One :class:`ImagePlan` per selected image of ``hub``, in hubploy.yaml order."""
    if check_registry and commit_range:
        raise HubployError("--check-registry and --commit-range are mutually exclusive")
    plans = []
    for spec in select_images(hub.images, images):
        tag = effective_tag(hub, spec, allow_dirty=allow_dirty)
        build, reason = decide(
            hub.repo.root, spec, tag, check_registry=check_registry, commit_range=commit_range, exists=exists
        )
        plans.append(ImagePlan(spec, tag, build, reason))
    return plans
