"""Several process workers on one pool (issue 14), with real Prefect workers, the test Prefect server and
the sandbox. A fleet's runs spread over both workers, and each run is run by one of them only, so no release
is driven twice. A worker killed in the middle of a fleet, with its flow-run process (its machine died),
loses no hub: the run, silent, is crashed by the automations of hubploy/triggers/recovery.py and retried on
the other worker, which waits out the dead run's release lock and rolls back the release the dead run left
pending before it upgrades it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from uuid import UUID

import pytest
from fixtures.prefect_worker import WorkerPool
from fixtures.sandbox import Sandbox
from helpers.fleet_repo import commit, fleet_repo, set_values

from hubploy.triggers.recovery import CRASHED_NAME
from hubploy_sandbox.images import BASE_REPOSITORY, BASE_TAG, ensure_base_image

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]


def _history(sandbox: Sandbox, release: str) -> list[dict]:
    out = sandbox.run(
        [sandbox.env["HELM_EXECUTABLE"], "history", release, "-n", release, "-o", "json"], check=False
    )
    return json.loads(out.stdout) if out.returncode == 0 else []


def _pending_releases(sandbox: Sandbox, releases: list[str]) -> list[str]:
    """Releases of ``releases`` whose latest helm revision is pending (an upgrade under way)."""
    out = sandbox.kubectl("get", "secrets", "-A", "-l", "owner=helm,status=pending-upgrade", "-o", "json")
    names = {item["metadata"]["labels"]["name"] for item in json.loads(out.stdout)["items"]}
    return [release for release in releases if release in names]


def _run(pool: WorkerPool, hubs: list[str], root: Path) -> UUID:
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        pool.deployment,
        timeout=0,
        parameters={
            "hubs": hubs,
            "env": "staging",
            "repo_path": str(root),
            "trigger": "test",
            "timeout": "3m",
        },
    )
    return flow_run.id


def _wait_completed(run_id: UUID, pool: WorkerPool, timeout: float) -> list:
    """Wait until the run is Completed (through any crash and retry); its states, oldest first."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_completed():
                return sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
            failed = run.state is not None and (run.state.is_failed() or run.state.is_cancelled())
            if failed or time.monotonic() > deadline:
                history = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
                states = [s.name for s in history]
                raise AssertionError(
                    f"run {run.name}: {states}: {run.state.message if run.state else ''}\n{pool.logs()}"
                )
            time.sleep(1)


def test_two_workers_share_a_fleet_and_a_killed_one_loses_no_hub(
    sandbox: Sandbox, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client

    tag = worker_pool.name.rsplit("-", 1)[1]
    hubs = [f"w{tag}{i}" for i in range(4)]
    releases = [f"{hub}-staging" for hub in hubs]
    ensure_base_image(sandbox.paths, sandbox.env)
    root = fleet_repo(tmp_path / "repo", hubs, f"{sandbox.registry}/{BASE_REPOSITORY}:{BASE_TAG}")
    first, second = worker_pool.start_worker(limit=2), worker_pool.start_worker(limit=2)

    # One run per hub: with two runs at a time each, both workers take runs, and each run is run once.
    runs = {hub: _run(worker_pool, [hub], root) for hub in hubs}
    for run_id in runs.values():
        _wait_completed(run_id, worker_pool, timeout=600)
    assert first.submitted() and second.submitted(), worker_pool.logs()
    assert not first.submitted() & second.submitted()
    assert first.submitted() | second.submitted() == {str(run_id) for run_id in runs.values()}
    for release in releases:
        assert [h["status"] for h in _history(sandbox, release)] == ["deployed"], release

    # A change to every hub as one fleet run; its worker dies while a release is being upgraded.
    for hub in hubs:
        set_values(root, hub, {"hub": {"extraEnv": {"ROUND": "2"}}})
    commit(root, "round 2")
    fleet = _run(worker_pool, hubs, root)
    deadline = time.monotonic() + 300
    while not (pending := _pending_releases(sandbox, releases)):
        assert time.monotonic() < deadline, f"no upgrade was seen under way\n{worker_pool.logs()}"
        time.sleep(0.2)
    doomed = next(w for w in (first, second) if str(fleet) in w.submitted())
    survivor = second if doomed is first else first
    doomed.kill()
    assert _pending_releases(sandbox, pending) == pending  # left behind, pending

    states = _wait_completed(fleet, worker_pool, timeout=900)
    names = [s.name for s in states]
    crashed = names.index(CRASHED_NAME)
    assert "AwaitingRetry" in names[crashed:] and "Running" in names[crashed:], names
    assert str(fleet) in survivor.submitted()
    for release in releases:
        history = _history(sandbox, release)
        assert history[-1]["status"] == "deployed", (release, history)
        got = sandbox.run(
            [sandbox.env["HELM_EXECUTABLE"], "get", "values", release, "-n", release, "-o", "json"]
        )
        values = json.loads(got.stdout)
        assert values["jupyterhub"]["hub"]["extraEnv"]["ROUND"] == "2", release
    for release in pending:  # rolled back from the dead run's pending revision, then upgraded
        audit = Artifact.get(f"audit-{release}")
        assert audit is not None, release
        assert "## Recovered" in str(audit.data) and "pending-upgrade" in str(audit.data), audit.data
    with get_client(sync_client=True) as client:  # no lock outlives the fleet
        for release in releases:
            assert client.read_global_concurrency_limit_by_name(f"deploy-{release}").active_slots == 0
