"""The weekly rebuild goes wave by wave in a repository with `rollout` (its image builds as the flow
build_images, here a recorder): the canary's images first, and a wave whose build fails stops it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flows.rebuild_images as rebuild
from hubploy.errors import HubployError

HUBS = {
    f"deployments/{name}/hubploy.yaml": "environments: [staging]\n" for name in ("physics", "chem", "bio")
}
WAVES = "rollout:\n  waves:\n    - {name: canary, hubs: [physics]}\n    - {name: sciences, hubs: [chem]}\n"


class Builds:
    """Stands in for the build_images flow: records each call (its run name and hubs)."""

    def __init__(self, failing: str | None = None) -> None:
        self.calls: list[tuple[str | None, list[str]]] = []
        self.failing = failing
        self.run_name: str | None = None

    def with_options(self, *, flow_run_name: str) -> Builds:
        self.run_name = flow_run_name
        return self

    def __call__(self, hubs: list[str] | None, **options: Any) -> list[dict[str, Any]]:
        assert options["rebuild"] and options["no_cache"] and options["push"]
        self.calls.append((self.run_name, list(hubs or [])))
        self.run_name = None
        if self.failing in (hubs or []):
            raise HubployError(f"1 image(s) failed: {self.failing}")
        return [{"hub": hub} for hub in hubs or []]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Builds]:
    def install(failing: str | None = None) -> Builds:
        recorder = Builds(failing)
        monkeypatch.setattr(rebuild, "build_images", recorder)
        monkeypatch.setattr(rebuild, "get_run_logger", lambda: logging.getLogger("test"))
        return recorder

    return install


def test_images_are_rebuilt_wave_by_wave(
    deployment_repo: Callable[..., Path], builds: Callable[..., Builds]
) -> None:
    root = deployment_repo({**HUBS, "hubploy-repo.yaml": WAVES})
    recorder = builds()
    rows = rebuild.rebuild_in_waves(root, None, 2)
    assert recorder.calls == [
        ("rebuild-wave-1-canary", ["physics"]),
        ("rebuild-wave-2-sciences", ["chem"]),
        ("rebuild-wave-3-remaining", ["bio"]),
    ]
    assert [r["hub"] for r in rows] == ["physics", "chem", "bio"]


def test_a_wave_that_fails_to_build_stops_the_rebuild(
    deployment_repo: Callable[..., Path], builds: Callable[..., Builds]
) -> None:
    root = deployment_repo({**HUBS, "hubploy-repo.yaml": WAVES})
    recorder = builds(failing="physics")
    with pytest.raises(HubployError, match="failed: physics"):
        rebuild.rebuild_in_waves(root, None, 2)
    assert recorder.calls == [("rebuild-wave-1-canary", ["physics"])]


def test_without_rollout_everything_is_rebuilt_at_once(
    deployment_repo: Callable[..., Path], builds: Callable[..., Builds]
) -> None:
    recorder = builds()
    rebuild.rebuild_in_waves(deployment_repo(HUBS), ["chem", "bio"], 2)
    assert recorder.calls == [(None, ["chem", "bio"])]
