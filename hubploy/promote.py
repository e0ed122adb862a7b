"""Promotion: merge exactly the approved staging commit into prod, as a merge commit, and push.

Prod only ever differs from staging by merge commits: the merge is refused when prod holds a
non-merge commit that the approved commit lacks, or when the approved commit is not on staging.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hubploy.errors import GitError
from hubploy.git import run_git
from hubploy.workspace import branch_head, fetch_mirror, resolve_commit

PUSH_ATTEMPTS = 3


@dataclass(frozen=True)
class Promotion:
    approved_sha: str
    prod_before: str | None
    prod_after: str


def _check_promotable(mirror: Path, sha: str, staging: str, prod: str | None, env: Mapping[str, str]) -> None:
    on_staging = run_git(
        mirror, ["branch", "--remotes", "--contains", sha, "--list", f"origin/{staging}"], env
    )
    if not on_staging.strip():
        raise GitError(
            f"approved commit {sha[:12]} is not on the {staging} branch",
            hint="only commits that went through staging can be promoted",
        )
    if prod is None:
        return
    extra = run_git(mirror, ["rev-list", "--no-merges", prod, f"^{sha}"], env).split()
    if extra:
        raise GitError(
            f"prod has {len(extra)} non-merge commit(s) that staging lacks (first: {extra[0][:12]})",
            hint="prod must only receive merges of staging; bring those commits to staging first",
        )


def promote(
    repo_url: str,
    sha: str,
    *,
    message: str,
    cache_dir: Path,
    env: Mapping[str, str],
    staging_branch: str = "staging",
    prod_branch: str = "prod",
) -> Promotion:
    """Merge ``sha`` into ``prod_branch`` with ``--no-ff`` and push it to ``repo_url``.

    A concurrent push to prod (non-fast-forward) is retried against the new prod head; ``sha`` itself
    never changes, whatever staging's head is now.
    """
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        mirror = fetch_mirror(repo_url, cache_dir, env)
        full = resolve_commit(mirror, sha, env)
        prod = branch_head(mirror, prod_branch, env)
        _check_promotable(mirror, full, staging_branch, prod, env)
        work = Path(tempfile.mkdtemp(prefix="hubploy-promote-"))
        try:
            run_git(mirror, ["worktree", "add", "--quiet", "--detach", str(work), prod or full], env)
            if prod is not None:
                run_git(work, ["merge", "--no-ff", "--no-edit", "-m", message, full], env)
            new_head = run_git(work, ["rev-parse", "HEAD"], env).strip()
            try:
                run_git(work, ["push", "--quiet", repo_url, f"HEAD:refs/heads/{prod_branch}"], env)
                return Promotion(full, prod, new_head)
            except GitError:
                if attempt == PUSH_ATTEMPTS:
                    raise
        finally:
            run_git(mirror, ["worktree", "remove", "--force", str(work)], env, check=False)
            shutil.rmtree(work, ignore_errors=True)
    raise AssertionError("unreachable")
