"""Change-aware planning: which hubs a commit range touches. Pure: takes file lists, returns a plan.

Rules, in order, for each changed path:
- under the umbrella chart, or a repo-wide file (hubploy-repo.yaml, .sops.yaml, a `shared_paths`
  glob) → every hub;
- under `deployments/<hub>/` or the secrets submodule `secrets/deployments/<hub>/` → that hub, and
  its images when the path is inside one of its image dirs;
- anything else (docs, CI files) → nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubploy.layout import DeploymentRepo

REPO_WIDE_FILES = ("hubploy-repo.yaml", ".sops.yaml")


@dataclass(frozen=True)
class HubPlan:
    hub: str
    reasons: tuple[str, ...]  # the changed paths (or the rule) that selected this hub
    images_changed: tuple[str, ...]  # image dirs (relative to the hub dir) with changed files


@dataclass(frozen=True)
class Plan:
    hubs: tuple[HubPlan, ...]
    all_hubs_reason: str | None = None
    ignored: tuple[str, ...] = field(default=())

    @property
    def hub_names(self) -> list[str]:
        return [h.hub for h in self.hubs]

    @property
    def empty(self) -> bool:
        return not self.hubs

    def summary(self) -> str:
        if self.empty:
            return "nothing to deploy: no change touches a hub, the chart or a shared file"
        if self.all_hubs_reason:
            return f"all {len(self.hubs)} hubs: {self.all_hubs_reason}"
        return f"{len(self.hubs)} hub(s): {', '.join(self.hub_names)}"


def _hub_dir_of(path: PurePosixPath) -> str | None:
    """The hub whose own dir ``deployments/<hub>/`` holds ``path`` (where its image dirs are)."""
    parts = path.parts
    return parts[1] if len(parts) >= 3 and parts[0] == "deployments" else None


def _hub_of(path: PurePosixPath) -> str | None:
    parts = path.parts
    if len(parts) >= 4 and parts[:2] == ("secrets", "deployments"):
        return parts[2]
    return _hub_dir_of(path)


def hubs_with_changed_dirs(changed_files: Iterable[str]) -> set[str]:
    """The hubs with a changed path in their own dir: the only hubs whose ``image_dirs`` plan_changes
    reads (a shared or chart change selects every hub but changes none of their images)."""
    return {hub for raw in changed_files if (hub := _hub_dir_of(PurePosixPath(raw))) is not None}


def plan_changes(
    changed_files: Iterable[str],
    hubs: Iterable[str],
    *,
    chart: str = "hub",
    shared_paths: Iterable[str] = (),
    image_dirs: Mapping[str, Iterable[str]] | None = None,
) -> Plan:
    """Plan from the changed paths (repo-relative, '/'-separated) and the repo's hub names.

    ``image_dirs`` maps a hub to its image dirs relative to the hub dir (e.g. ``["image"]``); only the
    hubs in ``hubs_with_changed_dirs(changed_files)`` are looked up.
    """
    known = sorted(set(hubs))
    shared = [*REPO_WIDE_FILES, *shared_paths]
    chart_prefix = PurePosixPath(chart.strip("/"))
    reasons: dict[str, list[str]] = {}
    images: dict[str, set[str]] = {}
    all_reason: str | None = None
    ignored: list[str] = []
    for raw in changed_files:
        path = PurePosixPath(raw)
        if path == chart_prefix or chart_prefix in path.parents or any(fnmatch(raw, g) for g in shared):
            all_reason = all_reason or f"{raw} changed"
            continue
        hub = _hub_of(path)
        if hub is None or hub not in known:
            ignored.append(raw)
            continue
        reasons.setdefault(hub, []).append(raw)
        if _hub_dir_of(path) is not None:
            inside = PurePosixPath(*path.parts[2:])
            for image_dir in (image_dirs or {}).get(hub, ()):
                if PurePosixPath(image_dir) in inside.parents:
                    images.setdefault(hub, set()).add(image_dir)
    selected = known if all_reason else [h for h in known if h in reasons]
    plans = tuple(
        HubPlan(h, tuple(reasons.get(h, [all_reason or ""])), tuple(sorted(images.get(h, ()))))
        for h in selected
    )
    return Plan(plans, all_reason, tuple(ignored))


def plan_repo(repo: DeploymentRepo, changed_files: Iterable[str]) -> Plan:
    """``plan_changes`` for the hubs of ``repo``, reading the image dirs of only the hubs with changed
    files in their dir. A hub whose hubploy.yaml does not load has no image dirs here (validating the
    hubs a plan selects reports it)."""
    files = list(changed_files)
    hub_names = repo.hub_names()
    image_dirs = {}
    for name in sorted(hubs_with_changed_dirs(files).intersection(hub_names)):
        hub, _ = repo.try_load_hub(name)
        if hub is not None:
            image_dirs[name] = [str(i.path.relative_to(hub.dir.resolve())) for i in hub.images if i.path]
    return plan_changes(
        files,
        hub_names,
        chart=repo.settings.chart,
        shared_paths=repo.settings.shared_paths,
        image_dirs=image_dirs,
    )
