"""prefect.yaml against a real local Prefect server: `prefect deploy --all` (run by the hubploy_worker
fixture, exactly as a user would) registers the seven deployments as declared; and the prod-deploy
deployment takes a push to prod made outside the lifecycle to a healthy prod, or rolls it back."""

from __future__ import annotations

import pytest
import test_lifecycle as lc
import yaml
from conftest import PROJECT_ROOT
from fixtures.prefect_worker import POOL, Worker, _prefect, wait_for_state
from helpers.cli import run_cli
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from hubploy.triggers.recovery import DEPLOYMENT_SETTINGS, RECOVERY_TAG

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

deploy_repo = lc.deploy_repo  # the same fresh-hub repository as the lifecycle tests
PROD = "hubploy-prod-deploy/prod-deploy"

EXPECTED = {
    "hubploy-lifecycle/lifecycle": "flows/lifecycle.py:lifecycle",
    "hubploy-approval-timeout/approval-timeout": "flows/approval.py:approval_timeout",
    "hubploy-pr-validation/pr-validation": "flows/pr_validation.py:pr_validation",
    "hubploy-prod-deploy/prod-deploy": "flows/prod_deploy.py:prod_deploy",
    "rebuild-images/rebuild-images": "flows/rebuild_images.py:rebuild_images",
    "hubploy-drift-check/drift-check": "flows/drift.py:drift_check",
    "deploy-hubs/deploy-hubs": "flows/deploy_hubs.py:deploy_hubs",
    "hubploy-rollout/rollout": "flows/rollout.py:rollout",
}
WITH_REPO_URL = set(EXPECTED) - {"hubploy-approval-timeout/approval-timeout", "deploy-hubs/deploy-hubs"}
# the fleet deployments (hubploy/triggers/recovery.py)
RETRIED_WHEN_LOST = {PROD, "deploy-hubs/deploy-hubs", "hubploy-rollout/rollout"}


def test_prefect_deploy_all_registers_every_deployment(hubploy_worker: Worker, prefect_api: str) -> None:
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(POOL)
        assert pool.type == "process"
        deployments = {name: client.read_deployment_by_name(name) for name in EXPECTED}
    for name, deployment in deployments.items():
        assert deployment.entrypoint == EXPECTED[name], name
        assert deployment.work_pool_name == POOL, name
        # flows run from the project directory (the default pull step); the hub config is the pushed
        # SHA, checked out by each flow itself (documented in prefect.yaml)
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}
        ], name
        if name in WITH_REPO_URL:  # "{{ $HUBPLOY_REPO_URL }}" resolved at deploy time
            assert deployment.parameters["repo_url"] == hubploy_worker.env["HUBPLOY_REPO_URL"], name
        # every run sends heartbeats often enough for the fleet deployments' runs (tagged) to be crashed and
        # retried when lost (hubploy/triggers/recovery.py)
        assert (RECOVERY_TAG in deployment.tags) == (name in RETRIED_WHEN_LOST), name
        assert deployment.job_variables == DEPLOYMENT_SETTINGS["job_variables"], name
    crons = {
        name: [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules]
        for name, d in deployments.items()
        if d.schedules
    }
    assert crons == {
        "rebuild-images/rebuild-images": [("0 4 * * 1", "UTC", True)],
        "hubploy-drift-check/drift-check": [("30 5 * * *", "UTC", True)],
    }
    assert deployments["hubploy-lifecycle/lifecycle"].global_concurrency_limit.limit == 4
    # the declared flows take the parameters the webhook receiver sends
    schema = deployments[PROD].parameter_openapi_schema["properties"]
    assert {"sha", "repo_url", "before", "trigger"} <= set(schema)


def test_the_documented_kubernetes_work_pool_deploys(hubploy_worker: Worker, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Kubernetes pool of prefect.yaml, used as its comments say: the pool type exists
    (prefect-kubernetes) and a deployment switched to it registers with its job variables."""
    text = (PROJECT_ROOT / "prefect.yaml").read_text()
    assert "prefect work-pool create hubploy-kubernetes --type kubernetes" in text
    assert "PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://" in text
    config = yaml.safe_load(text)
    pool = config["definitions"]["work_pools"]["kubernetes"]
    lifecycle = next(d for d in config["deployments"] if d["name"] == "lifecycle")
    config["deployments"] = [{**lifecycle, "name": "lifecycle-on-kubernetes", "work_pool": pool}]
    del config["definitions"]
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(config))
    env = {**hubploy_worker.env, "HUBPLOY_WORKER_IMAGE": "registry.example/hubploy:1.0"}
    created = _prefect(["work-pool", "create", pool["name"], "--type", "kubernetes", "--overwrite"], env)
    assert created.returncode == 0, created.stdout + created.stderr
    try:
        deployed = _prefect(
            ["deploy", "--prefect-file", str(prefect_file), "--name", "lifecycle-on-kubernetes"], env
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("hubploy-lifecycle/lifecycle-on-kubernetes")
            assert client.read_work_pool(pool["name"]).type == "kubernetes"
        assert deployment.work_pool_name == "hubploy-kubernetes"
        assert deployment.job_variables["image"] == "registry.example/hubploy:1.0"
        assert deployment.job_variables["namespace"] == "hubploy"
        assert deployment.entrypoint == "flows/lifecycle.py:lifecycle"
    finally:
        _prefect(["deployment", "delete", "hubploy-lifecycle/lifecycle-on-kubernetes"], env)
        _prefect(["work-pool", "delete", pool["name"]], env)


def _push_to_prod(repo: lc.DeployRepo, files: dict[str, str], message: str) -> tuple[str, str]:
    """A change committed on staging and merged into prod by hand (not by the lifecycle); returns
    (prod before, prod after)."""
    before = repo.origin_git("rev-parse", "prod")
    repo.push(files, message)
    work = repo.work
    work.git("checkout", "--quiet", "-B", "prod", before)
    work.git("merge", "--no-ff", "--quiet", "-m", f"hotfix merge: {message}", "staging")
    work.git("push", "--quiet", repo.url, "prod")
    after = work.git("rev-parse", "HEAD")
    work.git("checkout", "--quiet", "staging")
    return before, after


def _final(run) -> bool:  # type: ignore[no-untyped-def]
    return run.state is not None and run.state.is_final()


def test_prod_push_outside_the_lifecycle_is_deployed_then_a_broken_one_rolled_back(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    common = repo.work.root / repo.config("common.yaml")
    before, sha = _push_to_prod(
        repo, {repo.config("common.yaml"): common.read_text() + "# hotfix\n"}, "hotfix"
    )
    run = run_deployment(PROD, parameters={"sha": sha, "before": before, "repo_url": repo.url}, timeout=0)
    run = wait_for_state(run.id, _final, worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message
    assert f"prod runs {sha[:12]} for {repo.hub}" in run.state.message
    history = repo.revisions("prod")
    assert [h["status"] for h in history] == ["deployed"]
    assert repo.revisions("staging") == []  # a prod push deploys prod only
    good_revision = history[-1]["revision"]
    # the health check ran: the audit record says so
    with get_client(sync_client=True) as client:
        audit = [
            a
            for a in client.read_artifacts()
            if a.key == f"audit-{repo.hub}-prod" and a.flow_run_id == run.id
        ]
    assert audit and "JupyterHub version" in audit[0].data and "not checked" not in audit[0].data

    broken = yaml.safe_load(common.read_text())
    broken["jupyterhub"]["hub"]["config"]["JupyterHub"]["authenticator_class"] = "no-such-authenticator"
    before, bad = _push_to_prod(repo, {repo.config("common.yaml"): yaml.safe_dump(broken)}, "break prod")
    run = run_deployment(PROD, parameters={"sha": bad, "before": before, "repo_url": repo.url}, timeout=0)
    run = wait_for_state(run.id, _final, worker=hubploy_worker)
    assert (run.state.type.value, run.state.name) == ("FAILED", "ProdFailed"), run.state.message
    assert "rolled back" in run.state.message, run.state.message  # JupyterHub never got ready:
    assert f"helm upgrade of {repo.hub}-prod timed out after 2m" in run.state.message  # helm gave up
    history = repo.revisions("prod")
    assert history[-1]["status"] == "deployed"
    assert f"Rollback to {good_revision}" in history[-1]["description"]


def test_prod_push_that_does_not_validate_deploys_nothing(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker
) -> None:
    repo = deploy_repo
    before, sha = _push_to_prod(
        repo, {f"deployments/{repo.hub}/hubploy.yaml": "images: [unclosed\n"}, "broken hubploy.yaml"
    )
    run = run_deployment(PROD, parameters={"sha": sha, "before": before, "repo_url": repo.url}, timeout=0)
    run = wait_for_state(run.id, _final, worker=hubploy_worker)
    assert run.state.is_failed(), run.state.message
    assert "hubploy.yaml" in run.state.message
    assert repo.revisions("prod") == []
