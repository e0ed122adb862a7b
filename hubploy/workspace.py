"""Where a run keeps its files: per-commit working copies of a deployment repository, and one private
directory per run for decrypted secrets and kubeconfigs.

Working copies: one bare mirror per remote URL (under ``cache_dir/mirrors``) is fetched under a file
lock, and each commit gets its own detached worktree (``cache_dir/worktrees/<sha>``), reused when
present. Nothing is ever checked out in the user's own clone.

Private run directory: every decrypted secrets file, temporary kubeconfig and cloud CLI config of a
process (a CLI command, a flow-run process) lives in ``private_dir`` subdirectories of that process's
one 0700 run directory, ``<root>/run-<pid>-<random>``. The root is HUBPLOY_RUNTIME_DIR, else
``$XDG_RUNTIME_DIR/hubploy``, else ``<tmp>/hubploy-<uid>``; it must be a 0700 directory of this user.
Each ``private_dir`` is removed when its block exits, and the run directory at exit. A process killed
with SIGKILL cannot clean up, so its run directory stays (readable by its user only) until the next run
creates its own: the run directories whose process is gone (their lock file is not held) are removed
then.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hubploy.errors import GitError, HubployError
from hubploy.git import run_git

SHA = re.compile(r"^[0-9a-f]{7,40}$")
RUNTIME_DIR_ENV = "HUBPLOY_RUNTIME_DIR"
RUN_PREFIX = "run-"


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
        raise GitError(
            f"{sha!r} is not a commit SHA", hint="pass the full or abbreviated hex SHA of the push"
        )
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
        raise GitError(
            f"commit {rev} is not in the repository",
            hint="was the branch force-pushed? the approved commit must still exist",
        ) from None


def branch_head(mirror: Path, branch: str, env: Mapping[str, str]) -> str | None:
    """SHA of origin/<branch> in the mirror, or None when the branch does not exist."""
    try:
        return run_git(
            mirror, ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}"], env
        ).strip()
    except GitError:
        return None


@dataclass(frozen=True)
class _RunDir:
    pid: int
    path: Path
    lock: IO[bytes]  # held (flock) for the life of the process: the run directory is in use


_run_dirs: dict[int, _RunDir] = {}  # the run directory of this process, by pid (a forked child makes its own)
_run_dirs_lock = threading.Lock()


def runtime_root() -> Path:
    """The directory that holds the run directories: private to this user (0700, owned, not a link)."""
    configured, xdg = os.environ.get(RUNTIME_DIR_ENV), os.environ.get("XDG_RUNTIME_DIR")
    default = Path(xdg) / "hubploy" if xdg else Path(tempfile.gettempdir()) / f"hubploy-{os.geteuid()}"
    root = Path(configured) if configured else default
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise HubployError(
            f"cannot create the private run directory root {root}: {exc.strerror}",
            hint=f"set {RUNTIME_DIR_ENV} to a directory of your own",
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise HubployError(
            f"{root} is not a directory of this user (a link, or someone else's): hubploy "
            "will not keep decrypted secrets there",
            hint=f"remove it, or set {RUNTIME_DIR_ENV} to a directory of your own",
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root


def private_run_dir() -> Path:
    """This process's 0700 run directory, created on first use (removing stale ones first)."""
    pid = os.getpid()
    with _run_dirs_lock:
        current = _run_dirs.get(pid)
        if current is None:
            root = runtime_root()
            remove_stale_run_dirs(root)
            current = _run_dirs[pid] = _create_run_dir(root, pid)
            atexit.register(_remove_run_dir, current)
    return current.path


def _create_run_dir(root: Path, pid: int) -> _RunDir:
    """A locked lock file first (created under a name the sweep ignores, then renamed), then the directory,
    so that a sweep never sees a run directory of a live process without its held lock."""
    name = f"{RUN_PREFIX}{pid}-{secrets.token_hex(6)}"
    pending = root / f".new-{name}"
    descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    lock = open(descriptor, "wb")  # noqa: SIM115 (kept open for the life of the process)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(pending, root / f"{name}.lock")
    path = root / name
    path.mkdir(mode=0o700)
    return _RunDir(pid, path, lock)


def _remove_run_dir(run_dir: _RunDir) -> None:
    if os.getpid() != run_dir.pid:
        return
    shutil.rmtree(run_dir.path, ignore_errors=True)
    Path(f"{run_dir.path}.lock").unlink(missing_ok=True)
    run_dir.lock.close()


def remove_stale_run_dirs(root: Path) -> list[Path]:
    """Remove the run directories under ``root`` whose process is gone (their lock file is not held, or
    missing), with their lock files; returns the directories removed."""
    removed = []
    for name in sorted({p.name.removesuffix(".lock") for p in root.glob(f"{RUN_PREFIX}*")}):
        path, lock_path = root / name, root / f"{name}.lock"
        if _held(lock_path):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        lock_path.unlink(missing_ok=True)
    return removed


def _held(lock_path: Path) -> bool:
    """Whether a live process holds the lock at ``lock_path`` (a missing lock file is not held)."""
    try:
        with open(lock_path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A new 0700 directory in this run's private directory, removed on exit (also on an exception)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=private_run_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
