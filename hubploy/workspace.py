"""Per-commit working copies of a deployment repository, for flows that must act on an exact SHA.

One bare mirror per remote URL (under ``cache_dir/mirrors``) is fetched under a file lock, and each
commit gets its own detached worktree (``cache_dir/worktrees/<sha>``), reused when present. Nothing is
ever checked out in the user's own clone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from hubploy.errors import GitError
from hubploy.git import run_git

SHA = re.compile(r"^[0-9a-f]{7,40}$")


def default_cache_dir() -> Path:
    return Path(os.environ.get("HUBPLOY_WORKSPACE_DIR", Path.home() / ".cache" / "hubploy" / "workspaces"))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mirror_path(repo_url: str, cache_dir: Path) -> Path:
    return cache_dir / "mirrors" / hashlib.sha256(repo_url.encode()).hexdigest()[:16]


def fetch_mirror(repo_url: str, cache_dir: Path, env: Mapping[str, str]) -> Path:
    """Create or update the bare mirror of ``repo_url``; branches land in refs/remotes/origin/*."""
    mirror = mirror_path(repo_url, cache_dir)
    with _locked(mirror.with_suffix(".lock")):
        if not (mirror / "HEAD").exists():
            mirror.mkdir(parents=True, exist_ok=True)
            run_git(mirror, ["init", "--bare", "--quiet"], env)
        run_git(mirror, ["fetch", "--quiet", "--prune", repo_url, "+refs/heads/*:refs/remotes/origin/*"], env)
    return mirror


def checkout(repo_url: str, sha: str, *, cache_dir: Path, env: Mapping[str, str]) -> Path:
    """A detached worktree of ``repo_url`` at exactly ``sha`` (fetched first)."""
    if not SHA.match(sha):
        raise GitError(f"{sha!r} is not a commit SHA", hint="pass the full or abbreviated hex SHA of the push")
    mirror = fetch_mirror(repo_url, cache_dir, env)
    full = resolve_commit(mirror, sha, env)
    tree = cache_dir / "worktrees" / full
    with _locked(mirror.with_suffix(".lock")):
        if (tree / ".git").exists():
            return tree
        run_git(mirror, ["worktree", "prune"], env)
        run_git(mirror, ["worktree", "add", "--quiet", "--detach", str(tree), full], env)
    return tree


def resolve_commit(repo: Path, rev: str, env: Mapping[str, str]) -> str:
    try:
        return run_git(repo, ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], env).strip()
    except GitError:
        raise GitError(f"commit {rev} is not in the repository",
                       hint="was the branch force-pushed? the approved commit must still exist") from None


def branch_head(mirror: Path, branch: str, env: Mapping[str, str]) -> str | None:
    """SHA of origin/<branch> in the mirror, or None when the branch does not exist."""
    try:
        return run_git(mirror, ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"], env).strip()
    except GitError:
        return None
