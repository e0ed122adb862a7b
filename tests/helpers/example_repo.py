"""Copies of this project's example deployment repository, for tests and benchmarks that need a repository
of their own: the ``hub/`` umbrella chart with the ``jupyterhub`` chart it depends on (at the same relative
path, as its ``file://`` dependency names it), ``hubploy-repo.yaml``, ``.sops.yaml``, the example age key,
and hubs copied from ``deployments/``."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ITEMS = ("hub", "sandbox/charts/jupyterhub", "hubploy-repo.yaml", ".sops.yaml", "example-age.key")


TEST_HELM_TIMEOUT = "2m"  # a hub that never gets ready fails a test's deploy in 2 minutes, not helm's 10


def copy_example_repo(
    dest: Path,
    hubs: Mapping[str, str] | None = None,
    *,
    settings_extra: str = "",
    helm_timeout: str | None = TEST_HELM_TIMEOUT,
) -> Path:
    """``dest`` with the example layout and ``hubs`` ({new name: example hub it copies}, default the
    ``minimal`` hub as is); ``settings_extra`` (and ``helm_timeout``, unless None) is appended to
    hubploy-repo.yaml. Nothing is committed."""
    for item in ITEMS:
        src, target = PROJECT_ROOT / item, dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(
                src,
                target,
                ignore=shutil.ignore_patterns("charts", "__pycache__")
                if item == "hub"
                else shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy2(src, target)
    for name, source in (hubs or {"minimal": "minimal"}).items():
        shutil.copytree(PROJECT_ROOT / "deployments" / source, dest / "deployments" / name)
    if helm_timeout:
        settings_extra += f"helm_timeout: {helm_timeout}\n"
    if settings_extra:
        settings = dest / "hubploy-repo.yaml"
        settings.write_text(settings.read_text() + settings_extra)
    return dest
