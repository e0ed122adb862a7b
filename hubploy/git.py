"""Git queries hubploy needs: image tags, dirty image dirs, changed paths in a commit range.

Every call runs the real ``git`` through :func:`hubploy.runner.run`, with ``repo_root`` as the
working directory (it may be a subdirectory of the git work tree). Path arguments are absolute or
relative to ``repo_root``. Failures raise :class:`~hubploy.errors.GitError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hubploy.errors import CommandError, GitError
from hubploy.runner import child_env, run

MIN_TAG_LENGTH = 7
CANDIDATE_TAG_DEPTH = 15


def shortest_alpha_prefix(sha: str, min_length: int = MIN_TAG_LENGTH) -> str:
    """hubploy's ``substring_with_alpha``: the shortest prefix of at least ``min_length`` characters
    that contains a letter, so helm/YAML never read the tag as a number (``1234567`` or ``12e4567``
    would be). A SHA with no letter at all is returned whole.
    """
    for index, char in enumerate(sha):
        if char.isalpha():
            return sha[: max(min_length, index + 1)]
    return sha


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return env if env is not None else child_env({"GIT_TERMINAL_PROMPT": "0"})


_RANGE_HINT = (
    "check that both ends of the range exist locally: a force-push or a shallow clone loses "
    "commits (fetch with more depth, e.g. `git fetch --unshallow`)"
)


def run_git(
    repo_root: Path,
    args: list[str],
    env: Mapping[str, str] | None,
    *,
    hint: str | None = None,
    check: bool = True,
) -> str:
    """Run git in ``repo_root`` (a work tree or a bare repo) and return stdout; a failure becomes a
    GitError saying why, or is ignored with ``check=False``."""
    env = _env(env)
    if not Path(repo_root).is_dir():
        raise GitError(f"{repo_root} is not a directory, so not a git repository")
    if not check:
        return run(["git", *args], env=env, cwd=repo_root, check=False).stdout
    try:
        return run(["git", *args], env=env, cwd=repo_root).stdout
    except CommandError as exc:
        probe = run(["git", "rev-parse", "--git-dir"], env=env, cwd=repo_root, check=False)
        if probe.returncode != 0:
            raise GitError(
                f"{repo_root} is not inside a git work tree",
                hint="run hubploy from a clone of the deployment repository",
            ) from None
        raise GitError(
            f"`git {' '.join(args[:3])}` failed in {repo_root}: {exc.stderr_tail.strip()}", hint=hint
        ) from None


def _no_option(value: str, what: str) -> str:
    """Refuse a user-given revision that git would read as an option."""
    if not value or value.startswith("-"):
        raise GitError(f"invalid {what} {value!r}: it must be a commit, branch or range such as A...B")
    return value


def _commits_touching(repo_root: Path, path: Path | str, n: int, env: Mapping[str, str] | None) -> list[str]:
    out = run_git(repo_root, ["log", "-n", str(n), "--pretty=format:%H", "--", os.fspath(path)], env)
    return [line for line in out.splitlines() if line]


def uncommitted_changes(
    repo_root: Path, path: Path | str, *, env: Mapping[str, str] | None = None
) -> list[str]:
    """Files under ``path`` that differ from HEAD: modified, staged, deleted or untracked (ignored
    files excluded). Paths are relative to the top of the git work tree, sorted.
    """
    out = run_git(
        repo_root, ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--", os.fspath(path)], env
    )
    files: set[str] = set()
    entries = iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        status, name = entry[:2], entry[3:]
        files.add(name)
        if "R" in status or "C" in status:
            files.add(next(entries, ""))  # -z puts a rename's source path in the next field
    files.discard("")
    return sorted(files)


def image_tag(
    repo_root: Path,
    image_path: Path | str,
    *,
    allow_dirty: bool = False,
    env: Mapping[str, str] | None = None,
) -> str:
    """The tag hubploy gives an image: the last commit touching ``image_path``, shortened by
    :func:`shortest_alpha_prefix`. Raises GitError when the image dir has uncommitted changes
    (the tag would silently describe other content) unless ``allow_dirty``, or no commit touches it.
    """
    if not allow_dirty:
        dirty = uncommitted_changes(repo_root, image_path, env=env)
        if dirty:
            shown = ", ".join(dirty[:10]) + (f" (and {len(dirty) - 10} more)" if len(dirty) > 10 else "")
            raise GitError(
                f"image directory {image_path} has uncommitted changes: {shown}",
                hint="commit them first: the image tag is the last commit touching the directory",
            )
    commits = _commits_touching(repo_root, image_path, 1, env)
    if not commits:
        raise GitError(
            f"no commit touches image directory {image_path}",
            hint="commit the image directory first: its tag is derived from git history",
        )
    return shortest_alpha_prefix(commits[0])


def candidate_tags(
    repo_root: Path,
    image_path: Path | str,
    n: int = CANDIDATE_TAG_DEPTH,
    *,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Older tags of the image, newest first, to try as build cache (hubploy's
    ``fetch_parent_image``): the last ``n`` commits touching ``image_path`` minus the newest.
    """
    return [shortest_alpha_prefix(sha) for sha in _commits_touching(repo_root, image_path, n, env)[1:]]


def changed_files(repo_root: Path, commit_range: str, *, env: Mapping[str, str] | None = None) -> list[str]:
    """``git diff --name-only RANGE``: paths relative to the top of the work tree."""
    out = run_git(
        repo_root,
        ["diff", "--name-only", _no_option(commit_range, "commit range"), "--"],
        env,
        hint=_RANGE_HINT,
    )
    return [line for line in out.splitlines() if line]


def path_changed(
    repo_root: Path, commit_range: str, path: Path | str, *, env: Mapping[str, str] | None = None
) -> bool:
    """True when ``git diff --name-only RANGE -- PATH`` is non-empty (hubploy's --commit-range rule)."""
    out = run_git(
        repo_root,
        ["diff", "--name-only", _no_option(commit_range, "commit range"), "--", os.fspath(path)],
        env,
        hint=_RANGE_HINT,
    )
    return bool(out.strip())


def commit_exists(repo_root: Path, sha: str, *, env: Mapping[str, str] | None = None) -> bool:
    """True when ``sha`` names a commit in the repository (``git cat-file -e SHA^{commit}``); a
    force-pushed-away ``before`` commit or a shallow clone gives False.
    """
    _no_option(sha, "commit")
    run_git(repo_root, ["rev-parse", "--git-dir"], env)  # GitError outside a repository
    return (
        run(
            ["git", "cat-file", "-e", f"{sha}^{{commit}}"], env=_env(env), cwd=repo_root, check=False
        ).returncode
        == 0
    )


def head_sha(repo_root: Path, *, env: Mapping[str, str] | None = None) -> str:
    """The full SHA of HEAD; GitError in a repository with no commits."""
    return run_git(repo_root, ["rev-parse", "--verify", "HEAD^{commit}"], env).strip()


def commit_messages(
    repo_root: Path, commit_range: str, *, env: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(full SHA, subject) of each commit in ``commit_range``, newest first."""
    out = run_git(
        repo_root,
        ["log", "--pretty=format:%H%x00%s", _no_option(commit_range, "commit range"), "--"],
        env,
        hint=_RANGE_HINT,
    )
    return [(sha, subject) for sha, _, subject in (line.partition("\0") for line in out.splitlines() if line)]
