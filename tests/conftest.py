"""Shared fixtures. Real-platform fixtures live in tests/fixtures/ and are loaded as plugins."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Callable

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_files() -> Callable[[Path, dict[str, str]], Path]:
    """Write {relative path: text} under a root (text is dedented); returns the root."""

    def write(root: Path, files: dict[str, str]) -> Path:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return root

    return write


@pytest.fixture
def deployment_repo(tmp_path: Path, write_files) -> Callable[..., Path]:
    """A minimal deployment repo (stub chart + the given files) in a tmp dir."""

    def make(files: dict[str, str] | None = None) -> Path:
        root = tmp_path / "repo"
        base = {"hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n"}
        return write_files(root, {**base, **(files or {})})

    return make


pytest_plugins = ["fixtures.prefect_server"]
