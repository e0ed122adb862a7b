"""Pushes to prod made outside the lifecycle (a merge on GitHub, a hotfix merge): still validated,
deployed with health checks and rolled back on failure, for the hubs the push changed, wave after wave
with ``rollout`` in hubploy-repo.yaml (``WaveFailed`` when a wave stops the line)."""

from __future__ import annotations

from prefect import flow
from prefect.states import Completed, State

from flows.lifecycle import deploy_all, failure_state, notice_of_failure
from flows.tasks.lifecycle import checkout_commit, plan_commit, validate_hubs
from hubploy.layout import load_repo


@flow(name="hubploy-prod-deploy", persist_result=True, log_prints=True)
def prod_deploy(
    sha: str,
    repo_url: str,
    before: str | None = None,
    trigger: str = "manual",
    repo_full_name: str | None = None,
) -> State:
    tree = checkout_commit(repo_url, sha)
    change = plan_commit(tree, sha, before)
    if change.plan.empty:
        return Completed(name="NothingToDeploy", message=change.plan.summary())
    hubs = change.plan.hub_names
    validate_hubs(tree, hubs)
    results = deploy_all(tree, hubs, "prod", trigger=f"prod push {sha[:12]} ({trigger})")
    failed = failure_state(results, "ProdFailed", "prod deploy failed and was rolled back")
    if failed:
        return notice_of_failure(load_repo(tree).settings, failed)
    return Completed(message=f"prod runs {sha[:12]} for {', '.join(hubs)}")
