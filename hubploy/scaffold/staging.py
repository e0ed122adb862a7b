"""All or nothing: new files are made in a temporary directory (next to their destination, or in a given
directory on the same file system), checked against what is already there, and only then moved into place
(renames on one file system)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from hubploy.errors import HubployError

IGNORED_IN_COPIES = shutil.ignore_patterns("__pycache__", ".git", "*.pyc")


class StagedTree:
    """Files for ``destination`` (a directory, which may exist), made under ``root`` (a new directory in
    ``workdir``, by default the destination's parent; on the same file system) until
    :meth:`move_into_place`; a ``with`` block removes whatever was not moved."""

    def __init__(self, destination: Path, workdir: Path | None = None) -> None:
        self.destination = destination
        destination.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(
            tempfile.mkdtemp(prefix=f".{destination.name}.hubploy-", dir=workdir or destination.parent)
        )
        self.root.chmod(0o755)  # mkdtemp's 0700 would become the destination's mode
        self.entries: list[str] = []  # paths relative to root, each moved as a whole

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.entries.append(relative)

    def copy_tree(self, source: Path, relative: str) -> None:
        """Copy the directory ``source`` to ``relative`` (each of its files is an entry)."""
        shutil.copytree(source, self.root / relative, ignore=IGNORED_IN_COPIES, symlinks=True)
        self.entries += sorted(
            str(p.relative_to(self.root)) for p in (self.root / relative).rglob("*") if not p.is_dir()
        )

    def add_entry(self, relative: str) -> None:
        """Something made under root by another program (e.g. `.git`), moved as a whole."""
        self.entries.append(relative)

    def refuse_conflicts(self, *, force: bool = False) -> list[str]:
        """The entries that already exist at the destination (replaced by the move when ``force``);
        HubployError naming them, when there are some and not ``force``."""
        existing = [e for e in self.entries if os.path.lexists(self.destination / e)]
        if existing and not force:
            more = f" (and {len(existing) - 20} more)" if len(existing) > 20 else ""
            shown = ", ".join(existing[:20]) + more
            raise HubployError(
                f"{self.destination} already has {shown}; nothing was written",
                hint="move them away, or pass --force to replace them",
            )
        return existing

    def move_into_place(self) -> None:
        """Move every entry to the destination (a rename of the whole tree when it does not exist yet)."""
        if not self.destination.exists():
            self.root.rename(self.destination)
            return
        for entry in self.entries:
            target = self.destination / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(self.root / entry, target)
