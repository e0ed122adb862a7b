"""Flow `rebuild_images`: the scheduled (weekly) no-cache rebuild that picks up upstream security fixes.

A rebuild never overwrites a tag. Each image with a build dir gets a new immutable tag
``<git tag>-r<YYYYMMDD>`` (UTC; ``.2``, ``.3``... if that exists already), built without cache and
pushed, while the old tag stays untouched in the registry.

How the new tag reaches users: only through the normal lifecycle. The flow records the new tags in
``deployments/<hub>/image-tags.yaml`` (``{images: {<name>: {source_tag: <git tag>, tag: <new tag>}}}``)
and commits that file on the staging branch (``hubploy-repo.yaml: staging_branch``), then pushes the
commit. That push starts the lifecycle like any other change: deploy to staging, approval, promotion
to prod. Build and deploy read the tag with :func:`hubploy.images.effective_tag`, which honours a
record only while the image dir's git tag equals its ``source_tag``: a later change to the image dir
makes the record stale and the new git tag wins, with no cleanup needed. Nothing is deployed by this
flow, and prod only gets the rebuild when staging has been approved.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from prefect import flow, get_run_logger

from flows.build_images import build_images
from hubploy.errors import GitError
from hubploy.images import write_rebuild_tags
from hubploy.layout import load_repo
from hubploy.runner import child_env, run

BOT_IDENTITY = {"GIT_AUTHOR_NAME": "hubploy image rebuild", "GIT_AUTHOR_EMAIL": "hubploy@localhost",
                "GIT_COMMITTER_NAME": "hubploy image rebuild", "GIT_COMMITTER_EMAIL": "hubploy@localhost"}


def _git(root: Path, *args: str) -> str:
    return run(["git", *args], env=child_env({**BOT_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}), cwd=root).stdout.strip()


def rebuilt_records(rows: list[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, str]]]:
    """{hub: {image: {source_tag, tag}}} for every image the rebuild pushed."""
    records: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for row in rows:
        if row["result"] == "built" and row["digest"]:
            records[row["hub"]][row["image"]] = {"source_tag": row["source_tag"], "tag": row["tag"]}
    return dict(records)


def require_branch(repo_root: Path, branch: str) -> None:
    current = _git(repo_root, "rev-parse", "--abbrev-ref", "HEAD")
    if current != branch:
        raise GitError(f"the rebuild records tags on branch {branch!r}, but {repo_root} has {current!r} checked out",
                       hint=f"run the rebuild in a checkout of {branch}")


def commit_rebuild_tags(repo_root: Path, records: Mapping[str, Mapping[str, Mapping[str, str]]],
                        branch: str) -> str | None:
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


@flow(name="rebuild-images", log_prints=True)
def rebuild_images(hubs: list[str] | None = None, repo_path: str = ".", branch: str | None = None,
                   remote: str | None = "origin", max_concurrency: int = 2) -> dict[str, Any]:
    """Rebuild without cache under new tags, record them on the staging branch and push it."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    branch = branch or repo.settings.staging_branch
    require_branch(repo.root, branch)
    rows = build_images(hubs=hubs, repo_path=str(repo.root), push=True, check_registry=False, no_cache=True,
                        max_concurrency=max_concurrency, rebuild=True)
    sha = commit_rebuild_tags(repo.root, rebuilt_records(rows), branch)
    if sha and remote:
        _git(repo.root, "push", "-q", remote, f"HEAD:refs/heads/{branch}")
    logger.info("rebuild tags committed on %s as %s", branch, sha or "nothing (no image rebuilt)")
    return {"commit": sha, "branch": branch, "images": rows}
