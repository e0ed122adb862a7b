"""Shared fixtures. Real-platform fixtures live in tests/fixtures/ and are loaded as plugins."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

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


pytest_plugins = [
    "fixtures.prefect_server",
    "fixtures.sandbox",
    "fixtures.prefect_worker",
    "fixtures.hubploy_up",
]


TIERS = ("browser", "reliability", "prefect", "sandbox")
# The longest modules first (wall time of a full run, most first): scripts/test hands whole modules to
# several processes (`pytest -n N --dist loadfile`), and a long module handed out last would finish last.
LONGEST_FIRST = (
    "tests/test_lifecycle.py",
    "tests/reliability/test_lifecycle_faults.py",
    "tests/test_deploy_sandbox.py",
    "tests/test_prefect_yaml.py",
    "tests/test_docs.py",
    "tests/test_waves_sandbox.py",
    "tests/reliability/test_sandbox_faults.py",
    "tests/test_approval_browser.py",
    "tests/test_deploy_timeouts.py",
    "tests/test_workers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules of LONGEST_FIRST first, in that order; the others keep theirs."""
    rank = {module: index for index, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def _tier(item: pytest.Item) -> str:
    return next((t for t in TIERS if item.get_closest_marker(t)), "unit")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Print wall time and counts per test tier (unit, sandbox, prefect, reliability, browser)."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            tier = getattr(report, "hubploy_tier", None)
            if tier is None:
                continue
            seconds[tier] = seconds.get(tier, 0.0) + report.duration  # setup + call + teardown
            counts[tier] = counts.get(tier, 0) + (report.when == "call")
    if seconds:
        terminalreporter.section("time per test tier (setup, call and teardown)")
        for tier in sorted(seconds):
            terminalreporter.write_line(f"{tier:<12} {counts[tier]:>4} tests {seconds[tier]:>8.1f} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    outcome.get_result().hubploy_tier = _tier(item)
