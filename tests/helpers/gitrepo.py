"""Real git repositories in temp dirs, for tests.

Commits are deterministic: author, committer and dates are fixed (each commit one minute after the
previous one), and the user's global and system git config are ignored, so the same sequence of
commits gives the same SHAs on every machine.

    repo = init_repo(tmp_path / "repo")
    sha = repo.commit({"deployments/hub/image/Dockerfile": "FROM scratch\\n"}, "add image")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from hubploy.runner import child_env, run

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.org",
}
_EPOCH = 1_577_836_800  # 2020-01-01T00:00:00Z


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An env for git children that ignores the user's config and uses a fixed identity."""
    return child_env(
        {
            **GIT_IDENTITY,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            **(extra or {}),
        }
    )


class Repo:
    """A git work tree at ``root`` with helpers to write files, commit and switch branches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = git_env()
        self._commits = 0

    def git(self, *args: str) -> str:
        """Run ``git args...`` in the work tree and return its stdout, stripped."""
        return run(["git", *args], env=self.env, cwd=self.root).stdout.strip()

    def write(self, files: Mapping[str, str | bytes]) -> None:
        """Write files (paths relative to the root), creating parent dirs; nothing is staged."""
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)

    def commit(
        self,
        files: Mapping[str, str | bytes] | None = None,
        message: str = "commit",
        *,
        remove: tuple[str, ...] = (),
    ) -> str:
        """Write ``files``, delete ``remove``, stage everything and commit; returns the new SHA."""
        self.write(files or {})
        if remove:
            self.git("rm", "-r", "-q", "--", *remove)
        self.git("add", "-A")
        run(["git", "commit", "-q", "--allow-empty", "-m", message], env=self._next_date_env(), cwd=self.root)
        return self.head()

    def _next_date_env(self) -> dict[str, str]:
        """The env with author and committer dates one minute after the previous commit's."""
        self._commits += 1
        date = f"@{_EPOCH + 60 * self._commits} +0000"
        return {**self.env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def branch(self, name: str, start: str = "HEAD") -> None:
        """Create branch ``name`` at ``start`` without switching to it."""
        self.git("branch", name, start)

    def checkout(self, ref: str, *, create: bool = False) -> None:
        self.git("checkout", "-q", *(["-b"] if create else []), ref)

    def current_branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD")

    def merge(self, ref: str, message: str = "merge") -> str:
        """Merge ``ref`` into the current branch with a merge commit; returns the new HEAD."""
        run(["git", "merge", "-q", "--no-ff", "-m", message, ref], env=self._next_date_env(), cwd=self.root)
        return self.head()


def init_repo(path: Path, *, branch: str = "main") -> Repo:
    """Create an empty repository at ``path`` (created if missing) on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    repo = Repo(path)
    repo.git("init", "-q", "-b", branch)
    return repo
