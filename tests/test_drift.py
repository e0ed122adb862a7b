"""The drift-check deployment on the sandbox: a release deployed from the repo is in sync; the same
release changed behind the tool's back (a helm upgrade by hand) fails the run as `Drifted`, with an
artifact naming the release and showing the difference, and never a secret."""

from __future__ import annotations

import base64
import json
import secrets

import pytest
import test_lifecycle as lc
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

deploy_repo = lc.deploy_repo
DRIFT = "hubploy-drift-check/drift-check"


def _check(repo: lc.DeployRepo, worker: Worker):  # type: ignore[no-untyped-def]
    run = run_deployment(DRIFT, parameters={"repo_url": repo.url}, timeout=0)
    run = wait_for_state(run.id, lambda r: r.state is not None and r.state.is_final(), worker=worker)
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert artifact.key == "drift"
    return run, artifact.data


def test_drift_check_in_sync_then_drifted_behind_the_tools_back(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    release = f"{repo.hub}-staging"
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    deployed = run_cli("deploy", repo.hub, "hub", "staging", cwd=repo.work.root, env=repo.sandbox.env)
    assert deployed.returncode == 0, deployed.stderr

    run, report = _check(repo, hubploy_worker)
    assert run.state.is_completed(), run.state.message
    # prod was never deployed: reported, not counted as drift
    assert run.state.message == f"1 release(s) match the repo; not installed: {repo.hub}-prod"
    assert f"| {release} | in sync | – |" in report
    assert f"| {repo.hub}-prod | not installed |" in report

    values = json.loads(repo.helm("get", "values", release, "-n", release, "-o", "json").stdout)
    old_token = values["jupyterhub"]["proxy"]["secretToken"]
    new_token = "drifted-" + secrets.token_hex(16)
    changed = repo.helm(
        "upgrade",
        release,
        str(repo.work.root / "hub"),
        "-n",
        release,
        "--reuse-values",
        "--set",
        "jupyterhub.singleuser.image.tag=hand-edited",
        "--set",
        f"jupyterhub.proxy.secretToken={new_token}",
        check=False,
    )
    assert changed.returncode == 0, changed.stderr

    run, report = _check(repo, hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("FAILED", "Drifted"), run.state.message
    assert release in run.state.message
    assert f"| {release} | drifted |" in report
    assert "jupyterhub.singleuser.image.tag" in report and "jupyterhub.proxy.secretToken" in report
    assert f"### {release}" in report and "```diff" in report
    assert "+++ repo" in report and "--- running" in report
    assert "sha256:" in report  # the hub Secret changed: shown as digests
    for secret in (old_token, new_token):
        assert secret not in report
        assert base64.b64encode(secret.encode()).decode() not in report
    # the diff shows what runs (the hand-edited tag) against what the repo renders
    assert "-        image: localhost:5000/hubploy/minimal-user:hand-edited" in report
    assert "+        image: localhost:5000/hubploy/minimal-user:" in report
