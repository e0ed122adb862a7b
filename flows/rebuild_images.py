"""Flow `rebuild_images`: the scheduled (weekly) no-cache rebuild that picks up upstream security fixes.

A rebuild never overwrites a tag. Each image with a build dir gets a new immutable tag
``<git tag>-r<YYYYMMDD>`` (UTC; ``.2``, ``.3``... if that exists already), built without cache and
pushed, while the old tag stays untouched in the registry.

With ``rollout`` in hubploy-repo.yaml the images are rebuilt wave by wave (a subflow run
``rebuild-wave-<n>-<name>`` each), the canary's first: a wave with an image that fails to build stops
the rebuild, and nothing is committed.

How the new tag reaches users: only through the normal lifecycle (wave after wave, as every deploy).
The flow records the new tags in ``deployments/<hub>/image-tags.yaml``
(``{images: {<name>: {source_tag: <git tag>, tag: <new tag>}}}``) and commits that file on the
staging branch (``hubploy-repo.yaml: staging_branch``), then pushes the commit. That push starts the
lifecycle like any other change: deploy to staging, approval, promotion to prod. Build and deploy read
the tag with :func:`hubploy.images.effective_tag`, which honours a record only while the image dir's git
tag equals its ``source_tag``: a later change to the image dir makes the record stale and the new git
tag wins, with no cleanup needed. Nothing is deployed by this flow, and prod only gets the rebuild when
staging has been approved.

The scheduled deployment passes ``repo_url``: the flow then works in a private clone (never in a
shared per-SHA worktree) and pushes the commit there; if staging moved meanwhile it rebases once.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.build_images import build_images
from hubploy.config.models import RepoSettings
from hubploy.errors import GitError
from hubploy.git import run_git
from hubploy.images import write_rebuild_tags
from hubploy.layout import HUBS_DIR, load_repo
from hubploy.rollout import plan_waves
from hubploy.runner import child_env

BOT_IDENTITY = {
    "GIT_AUTHOR_NAME": "hubploy image rebuild",
    "GIT_AUTHOR_EMAIL": "hubploy@localhost",
    "GIT_COMMITTER_NAME": "hubploy image rebuild",
    "GIT_COMMITTER_EMAIL": "hubploy@localhost",
}


def _git(root: Path, *args: str) -> str:
    return run_git(root, list(args), child_env({**BOT_IDENTITY, "GIT_TERMINAL_PROMPT": "0"})).strip()


def rebuilt_records(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """{hub: {image: {source_tag, tag}}} for every image the rebuild pushed."""
    records: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        if row["result"] == "built" and row["digest"]:
            records[row["hub"]][row["image"]] = {"source_tag": row["source_tag"], "tag": row["tag"]}
    return dict(records)


def require_branch(repo_root: Path, branch: str) -> None:
    current = _git(repo_root, "rev-parse", "--abbrev-ref", "HEAD")
    if current != branch:
        raise GitError(
            f"the rebuild records tags on branch {branch!r}, but {repo_root} has {current!r} checked out",
            hint=f"run the rebuild in a checkout of {branch}, or give repo_url",
        )


def commit_rebuild_tags(
    repo_root: Path, records: Mapping[str, Mapping[str, Mapping[str, str]]], branch: str
) -> str | None:
    """Write each hub's image-tags.yaml and commit them on ``branch`` (checked out); the new SHA or
    None when nothing changed."""
    require_branch(repo_root, branch)
    repo = load_repo(repo_root)
    files = [str(write_rebuild_tags(repo.hub_dir(hub), images)) for hub, images in sorted(records.items())]
    if not files or not _git(repo_root, "status", "--porcelain", "--", *files):
        return None
    _git(repo_root, "add", "--", *files)
    summary = ", ".join(f"{image}:{r['tag']}" for images in records.values() for image, r in images.items())
    _git(repo_root, "commit", "-q", "-m", f"Rebuild images without cache: {summary}", "--", *files)
    return _git(repo_root, "rev-parse", "HEAD")


def push_branch(repo_root: Path, branch: str, remote: str = "origin") -> str:
    """Push HEAD to ``branch``; if the branch moved meanwhile, rebase once onto it and push again.
    A record rebased past a change of its image dir is stale, and effective_tag ignores it."""
    try:
        _git(repo_root, "push", "-q", remote, f"HEAD:refs/heads/{branch}")
    except GitError:
        _git(repo_root, "pull", "-q", "--rebase", remote, branch)
        _git(repo_root, "push", "-q", remote, f"HEAD:refs/heads/{branch}")
    return _git(repo_root, "rev-parse", "HEAD")


@contextlib.contextmanager
def branch_clone(repo_url: str, branch: str | None) -> Iterator[tuple[Path, str]]:
    """A private full clone of ``repo_url`` with ``branch`` (default: its staging branch) checked out."""
    tmp = Path(tempfile.mkdtemp(prefix="hubploy-rebuild-"))
    try:
        root = tmp / "repo"
        _git(tmp, "clone", "-q", repo_url, str(root))
        if branch is None:  # the default branch's settings; an empty checkout (remote HEAD unborn) has none
            branch = (
                load_repo(root).settings.staging_branch
                if (root / HUBS_DIR).is_dir()
                else RepoSettings().staging_branch
            )
        _git(root, "checkout", "-q", branch)
        yield root, branch
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rebuild_in_waves(root: Path, hubs: list[str] | None, max_concurrency: int) -> list[dict[str, Any]]:
    """Every image rebuilt under a new tag: wave by wave with ``rollout`` (a wave whose build fails
    raises, so later waves are not built), else all at once."""
    repo = load_repo(root)
    options: dict[str, Any] = {
        "repo_path": str(root),
        "push": True,
        "check_registry": False,
        "no_cache": True,
        "max_concurrency": max_concurrency,
        "rebuild": True,
    }
    if repo.settings.rollout is None:
        return build_images(hubs=hubs, **options)
    rows: list[dict[str, Any]] = []
    for wave in plan_waves(hubs or repo.hub_names(), repo.settings.rollout):
        get_run_logger().info("rebuilding the images of wave %s: %s", wave.name, ", ".join(wave.hubs))
        rows += build_images.with_options(flow_run_name=f"rebuild-wave-{wave.number}-{wave.name}")(
            hubs=list(wave.hubs), **options
        )
    return rows


@flow(name="rebuild-images", log_prints=True)
def rebuild_images(
    repo_url: str | None = None,
    hubs: list[str] | None = None,
    repo_path: str = ".",
    branch: str | None = None,
    push_commit: bool = True,
    max_concurrency: int = 2,
) -> dict[str, Any]:
    """Rebuild without cache under new tags and commit them on the staging branch, then push it.

    With ``repo_url`` the flow works in a private clone of it; otherwise in ``repo_path``, which must
    have the staging branch checked out (its remote ``origin`` receives the push).
    """
    logger = get_run_logger()
    with contextlib.ExitStack() as stack:
        if repo_url:
            root, branch = stack.enter_context(branch_clone(repo_url, branch))
        else:
            root = load_repo(repo_path).root
            branch = branch or load_repo(root).settings.staging_branch
        require_branch(root, branch)
        rows = rebuild_in_waves(root, hubs, max_concurrency)
        sha = commit_rebuild_tags(root, rebuilt_records(rows), branch)
        if sha and push_commit:
            sha = push_branch(root, branch)
    logger.info("rebuild tags committed on %s as %s", branch, sha or "nothing (no image rebuilt)")
    return {"commit": sha, "branch": branch, "images": rows}
