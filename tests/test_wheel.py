"""`hubploy up` from installed wheels, not from this checkout: both wheels are built from the repository's
files and installed into a directory of their own; `up` (without the sandbox) registers every deployment of
prefect.yaml from the project directory it prepares, creates the demo repository from the packaged copies, and
a worker runs a flow from the installed `flows`; Ctrl-C stops it all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from conftest import PROJECT_ROOT
from helpers.stack import UpStack, alive, start_up, user_env

from hubploy.triggers.project_files import EXAMPLE_CHART, EXAMPLE_REPO

pytestmark = pytest.mark.prefect

PROBE = (
    "import json, blocks, flows, hubploy, hubploy_sandbox; "
    "print(json.dumps([m.__file__ for m in (hubploy, flows, blocks, hubploy_sandbox)]))"
)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _repo_files(*items: str) -> set[str]:
    """This repository's files (of ``items``) as a clone has them: tracked and new, not ignored."""
    listed = _git("ls-files", "-co", "--exclude-standard", "-z", "--", *items, cwd=PROJECT_ROOT).split("\0")
    return {rel for rel in listed if rel and (PROJECT_ROOT / rel).is_file()}


def _source_tree(dest: Path) -> Path:
    """A copy of this repository to build from, so that building leaves nothing in the checkout."""
    for rel in _repo_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / rel, dest / rel)
    return dest


def _install_wheels(tmp_path: Path) -> Path:
    source, dist, target = _source_tree(tmp_path / "source"), tmp_path / "dist", tmp_path / "installed"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(source),
            str(source / "sandbox"),
        ],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    wheels = sorted(str(w) for w in dist.glob("*.whl"))
    assert [Path(w).name.split("-")[0] for w in wheels] == ["hubploy_prefect", "hubploy_sandbox"]
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), *wheels],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    return target


def test_hubploy_up_from_installed_wheels(tmp_path: Path) -> None:
    installed = _install_wheels(tmp_path)
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**user_env(home), "PYTHONPATH": str(installed)}  # this checkout is not importable
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    assert all(Path(f).is_relative_to(installed) for f in json.loads(probe.stdout)), probe.stdout

    stack = start_up(
        home,
        cwd / "up.log",
        hubploy=(sys.executable, "-m", "hubploy.cli.main"),
        options=("--no-sandbox",),
        env=env,
    )
    try:
        project = home / "project"
        prefect_yaml = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
        declared = [d["name"] for d in prefect_yaml["deployments"]]
        listed = re.search(r"deployments: (.+) \(from (\S+)\)", stack.output)
        assert listed and listed.group(1).split(", ") == declared, stack.output
        assert listed.group(2) == str(project / "prefect.yaml")
        # the project directory: the packaged prefect.yaml and a link to the installed flows
        assert (project / "prefect.yaml").read_text() == (PROJECT_ROOT / "prefect.yaml").read_text()
        assert (project / "flows").resolve() == installed / "flows"
        with stack.client() as client:
            registered = client.post("/deployments/filter", json={}).json()
        assert sorted(d["name"] for d in registered) == sorted(declared)
        for deployment in registered:
            assert deployment["pull_steps"] == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}
            ], deployment["name"]
        _assert_demo_repo_holds_the_example_hubs_and_chart(home / "demo" / "origin.git")
        _assert_a_worker_runs_a_flow_from_the_wheel(stack, {d["name"]: d["id"] for d in registered})
    finally:
        assert stack.stop() == 0, stack.log.read_text()[-3000:]
    assert not [name for name, pid in stack.started.items() if alive(pid)]


def _assert_demo_repo_holds_the_example_hubs_and_chart(origin: Path) -> None:
    staging, prod = (_git("rev-parse", branch, cwd=origin).strip() for branch in ("staging", "prod"))
    assert staging == prod
    expected = _repo_files(*EXAMPLE_REPO, str(EXAMPLE_CHART))
    assert set(_git("ls-tree", "-r", "--name-only", "staging", cwd=origin).splitlines()) == expected
    # the same files, the chart where hub/Chart.yaml's file://../sandbox/charts/jupyterhub finds it
    for rel in expected:
        shown = subprocess.run(["git", "show", f"staging:{rel}"], cwd=origin, capture_output=True, check=True)
        assert shown.stdout == (PROJECT_ROOT / rel).read_bytes(), rel


def _assert_a_worker_runs_a_flow_from_the_wheel(stack: UpStack, deployments: dict[str, str]) -> None:
    """The cheapest real flow: approval-timeout cancels a run paused for an approval, as the lifecycle
    schedules it to."""
    from prefect.client.orchestration import get_client
    from prefect.states import Paused, Scheduled

    deployment = UUID(deployments["approval-timeout"])
    with stack.prefect_settings(), get_client(sync_client=True) as client:
        waiting = client.create_flow_run_from_deployment(
            deployment,
            parameters={"flow_run_id": str(UUID(int=0)), "pause_key": "-", "hours": 1.0},
            state=Scheduled(scheduled_time=datetime(2099, 1, 1, tzinfo=UTC)),
        )
        client.set_flow_run_state(waiting.id, Paused(pause_key="approval-1"), force=True)
        timeout = client.create_flow_run_from_deployment(
            deployment, parameters={"flow_run_id": str(waiting.id), "pause_key": "approval-1", "hours": 2.0}
        )
    assert stack.wait_for_final(str(timeout.id), timeout=120)["type"] == "COMPLETED"
    cancelled = stack.flow_run(str(waiting.id))["state"]
    assert (cancelled["type"], cancelled["name"]) == ("CANCELLED", "ApprovalTimedOut")
    assert cancelled["message"] == "no approval within 2 h; prod untouched"
    worker_log = (stack.home / "logs" / "worker.log").read_text()
    assert f"submitting flow run '{timeout.id}'" in worker_log
