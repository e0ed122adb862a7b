"""Faults in the change lifecycle (issue 8), on the sandbox with a real Prefect server and a real process
worker running prefect.yaml's deployments: a helm failure, a failing health check, an approval rejected,
an approval timed out, the worker killed while a run waits for approval, and two pushes racing.

In every case nothing is lost: prod is untouched unless approved (helm history and the prod branch),
staging is rolled back where it failed, no release is left `pending-*`, and every run ends in a clearly
named final state. Repos and helpers are tests/test_lifecycle.py's (`deploy_repo`: a fresh hub, a bare
origin, `health_check_timeout: 30`).
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from fixtures.prefect_worker import LEASE_RENEWAL_FRACTION, Worker, wait_for_state
from helpers.cli import run_cli
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from test_lifecycle import (  # noqa: F401 (deploy_repo is a fixture)
    CONTINUING_IN,
    WAITING_IN,
    DeployRepo,
    change_values,
    deploy_repo,
    final,
    paused,
    process_alive,
    wait_for_process_exit,
    wait_for_process_log,
)

from flows.prefect_compat import ENGINE_LEASE_SECONDS

pytestmark = [pytest.mark.reliability, pytest.mark.sandbox, pytest.mark.prefect]

FINAL_NAMES = {
    "NothingToDeploy",
    "StagingFailed",
    "Rejected",
    "ApprovalTimedOut",
    "Superseded",
    "ProdFailed",
    "Completed",
}


def paused_or_final(run) -> bool:  # type: ignore[no-untyped-def]
    return paused(run) or final(run)


def state_of(run) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return run.state.type.value, run.state.name


def assert_no_pending(repo: DeployRepo) -> None:
    for env in ("staging", "prod"):
        statuses = [r["status"] for r in repo.revisions(env)]
        assert not [s for s in statuses if s.startswith("pending")], f"{env}: {statuses}"


def assert_prod_untouched(repo: DeployRepo, prod_before: str) -> None:
    assert repo.origin_git("rev-parse", "prod") == prod_before, "the prod branch moved without an approval"
    assert repo.revisions("prod") == [], "prod has a helm release without an approval"


def build_and_deploy_staging(repo: DeployRepo) -> int:
    """A first good staging revision, made with the CLI (as an operator would); its revision."""
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    first = run_cli("deploy", repo.hub, "hub", "staging", cwd=repo.work.root, env=repo.sandbox.env)
    assert first.returncode == 0, first.stderr
    return repo.revisions("staging")[-1]["revision"]


def hub_answers(repo: DeployRepo, env: str = "staging", timeout: float = 60) -> str:
    """The JupyterHub version the hub of ``env`` answers with through its proxy-public Service (waits)."""
    return repo.sandbox.hub_version(f"{repo.hub}-{env}", timeout)


def helm_failure_then_failing_health_check(repo: DeployRepo, hubploy_worker: Worker) -> None:
    prod_before = repo.origin_git("rev-parse", "prod")
    good = build_and_deploy_staging(repo)
    history = repo.revisions("staging")

    # a chart template error: preflight (helm template) fails, no new revision
    broken_chart = repo.push(
        {"hub/templates/broken.yaml": "kind: ConfigMap\ndata:\n  x: {{ .Values.no.such.key }}\n"},
        "a template that cannot render",
    )
    run = wait_for_state(repo.start(broken_chart), paused_or_final, worker=hubploy_worker)
    assert state_of(run) == ("FAILED", "StagingFailed"), run.state.message
    assert "no approval asked" in run.state.message and "broken.yaml" in run.state.message, run.state.message
    assert "nil pointer" in run.state.message, run.state.message
    assert repo.revisions("staging") == history, "a release revision was made for a chart that cannot render"
    assert_prod_untouched(repo, prod_before)

    # a values schema violation (hub/values.schema.json): preflight fails too
    values = yaml.safe_load((repo.work.root / repo.config("common.yaml")).read_text())
    values["jupyterhub"]["hub"]["config"] = "not a mapping"
    schema = repo.push({repo.config("common.yaml"): yaml.safe_dump(values)}, "values the schema refuses")
    run = wait_for_state(repo.start(schema), paused_or_final, worker=hubploy_worker)
    assert state_of(run) == ("FAILED", "StagingFailed"), run.state.message
    assert repo.revisions("staging") == history
    assert_prod_untouched(repo, prod_before)

    # a hub config with which JupyterHub never gets ready: helm gives up (helm_timeout), rolled back
    values["jupyterhub"]["hub"]["config"] = {"JupyterHub": {"authenticator_class": "no-such-authenticator"}}
    broken_hub = repo.work.commit(
        {repo.config("common.yaml"): yaml.safe_dump(values)},
        "break the hub config",
        remove=("hub/templates/broken.yaml",),
    )
    repo.work.git("push", "--quiet", repo.url, "staging")
    run = wait_for_state(repo.start(broken_hub), paused_or_final, worker=hubploy_worker)
    assert state_of(run) == ("FAILED", "StagingFailed"), run.state.message
    assert f"helm upgrade of {repo.hub}-staging timed out after 2m" in run.state.message, run.state.message
    after = repo.revisions("staging")
    assert after[-1]["status"] == "deployed" and f"Rollback to {good}" in after[-1]["description"], after
    assert [r["status"] for r in after].count("deployed") == 1
    assert hub_answers(repo), "the previous revision is not serving"
    assert_prod_untouched(repo, prod_before)
    assert_no_pending(repo)


def rejected_approval(repo: DeployRepo, hubploy_worker: Worker) -> None:
    prod_before = repo.origin_git("rev-parse", "prod")
    sha = change_values(repo, "# reject me\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    assert repo.revisions("staging")[-1]["status"] == "deployed"
    assert_prod_untouched(repo, prod_before)
    rejected = run_cli(
        "approve", str(run_id), "--reject", "--reason", "not today", "--as", "rel", cwd=repo.work.root
    )
    assert rejected.returncode == 0, rejected.stderr
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert state_of(run) == ("CANCELLED", "Rejected") and "prod untouched" in run.state.message
    assert_prod_untouched(repo, prod_before)
    assert_no_pending(repo)
    again = run_cli("approve", str(run_id), cwd=repo.work.root)  # a late approval changes nothing
    assert again.returncode == 1 and "Traceback" not in again.stderr
    time.sleep(2)
    assert_prod_untouched(repo, prod_before)


def approval_timed_out(repo: DeployRepo, hubploy_worker: Worker) -> None:
    prod_before = repo.origin_git("rev-parse", "prod")
    run_id = repo.start(change_values(repo, "# nobody answers\n"), approval_timeout_hours=0.003)  # about 11 s
    wait_for_state(run_id, paused, worker=hubploy_worker)
    run = wait_for_state(run_id, final, timeout=240, worker=hubploy_worker)
    assert state_of(run) == ("CANCELLED", "ApprovalTimedOut"), run.state.message
    assert "prod untouched" in run.state.message
    late = run_cli("approve", str(run_id), cwd=repo.work.root)
    assert late.returncode == 1 and "Traceback" not in late.stderr
    time.sleep(2)
    assert_prod_untouched(repo, prod_before)
    assert_no_pending(repo)


def test_worker_killed_while_waiting_then_approved(
    deploy_repo: DeployRepo,  # noqa: F811
    hubploy_worker: Worker,
) -> None:
    repo = deploy_repo
    prod_before = repo.origin_git("rev-parse", "prod")
    sha = change_values(repo, "# survive a killed worker\n")
    run_id = repo.start(sha)
    wait_for_state(run_id, paused, worker=hubploy_worker)
    waiting = wait_for_process_log(run_id, WAITING_IN)  # in its hot window
    hubploy_worker.kill()  # SIGKILL of the worker and of the flow process waiting for the approval
    try:
        wait_for_process_exit(waiting, timeout=10)
        time.sleep(3)
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).state.is_paused(), "the wait was lost with the process"
        assert_prod_untouched(repo, prod_before)
    finally:
        hubploy_worker.start()
    approved = run_cli(
        "approve", str(run_id), "--reason", "after the crash", "--as", "rel", cwd=repo.work.root
    )
    assert approved.returncode == 0, approved.stderr
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert state_of(run) == ("COMPLETED", "Completed"), run.state.message
    assert repo.prod_parents()[1] == sha
    assert [r["status"] for r in repo.revisions("prod")] == ["deployed"]
    assert_no_pending(repo)


def test_a_run_in_the_hot_window_outlives_its_revoked_deployment_lease(
    deploy_repo: DeployRepo,  # noqa: F811
    hubploy_worker: Worker,
) -> None:
    """The lifecycle deployment has a concurrency limit, so its flow-run process renews a deployment
    lease, which the suspension revokes. Unless the hot window stops that renewal, the engine cancels the
    waiting process at the next renewal (75 % of the lease, at most 225 s later; 30 s for the test
    worker, whose processes renew at LEASE_RENEWAL_FRACTION) and the run ends Crashed."""
    repo = deploy_repo
    sha = change_values(repo, "# approved after a lease renewal period\n")
    run_id = repo.start(sha)
    suspended = wait_for_state(run_id, paused, worker=hubploy_worker).state
    assert suspended.state_details.deployment_concurrency_lease_id, "no deployment lease: nothing to outlive"
    waiting = wait_for_process_log(run_id, WAITING_IN)
    past_renewal = time.monotonic() + LEASE_RENEWAL_FRACTION * ENGINE_LEASE_SECONDS + 15
    with get_client(sync_client=True) as client:
        while time.monotonic() < past_renewal:
            state = client.read_flow_run(run_id).state
            assert state.id == suspended.id, f"the waiting run became {state.name}: {state.message}"
            time.sleep(5)
    assert process_alive(waiting)
    approved = run_cli(
        "approve", str(run_id), "--reason", "after a renewal", "--as", "rel", cwd=repo.work.root
    )
    assert approved.returncode == 0, approved.stderr
    run = wait_for_state(run_id, final, worker=hubploy_worker)
    assert state_of(run) == ("COMPLETED", "Completed"), run.state.message
    assert wait_for_process_log(run_id, CONTINUING_IN) == waiting
    assert repo.prod_parents()[1] == sha
    assert [r["status"] for r in repo.revisions("prod")] == ["deployed"]


def two_pushes_racing(repo: DeployRepo, hubploy_worker: Worker) -> None:
    prod_before = repo.origin_git("rev-parse", "prod")
    older_sha = change_values(repo, "# older push\n")
    newer_sha = change_values(repo, "# newer push\n")
    older, newer = repo.start(older_sha), repo.start(newer_sha)  # started together
    runs = {
        older: wait_for_state(older, paused_or_final, worker=hubploy_worker),
        newer: wait_for_state(newer, paused_or_final, worker=hubploy_worker),
    }
    assert paused(runs[newer]), state_of(runs[newer])
    time.sleep(3)  # give a supersede in flight time to land
    with get_client(sync_client=True) as client:
        older_run = client.read_flow_run(older)
    assert_prod_untouched(repo, prod_before)
    if paused(older_run):  # both waiting (the older reached the form last): reject the older
        resume_flow_run(
            older,
            run_input={"decision": "reject", "sha": older_sha, "reason": "the newer one", "approver": "rel"},
        )
    older_run = wait_for_state(older, final, worker=hubploy_worker)
    assert state_of(older_run) in {("CANCELLED", "Superseded"), ("CANCELLED", "Rejected")}, (
        older_run.state.message
    )
    if older_run.state.name == "Superseded":
        assert str(newer) in older_run.state.message
    assert_prod_untouched(repo, prod_before)

    resume_flow_run(
        newer, run_input={"decision": "approve", "sha": newer_sha, "reason": "race winner", "approver": "rel"}
    )
    run = wait_for_state(newer, final, worker=hubploy_worker)
    assert state_of(run) == ("COMPLETED", "Completed"), run.state.message
    assert repo.prod_parents()[1] == newer_sha, "prod got a commit nobody approved"
    assert [r["status"] for r in repo.revisions("prod")] == ["deployed"]
    staging = [r["status"] for r in repo.revisions("staging")]
    assert staging[-1] == "deployed" and set(staging) <= {"deployed", "superseded"}, staging
    assert_no_pending(repo)
    for run_id in (older, newer):
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).state.name in FINAL_NAMES


SCENARIOS = {
    "helm failure, schema violation and failing health check": helm_failure_then_failing_health_check,
    "approval rejected": rejected_approval,
    "approval timed out": approval_timed_out,
    "two pushes racing": two_pushes_racing,
}


def test_faults_side_by_side(deploy_repos, hubploy_worker: Worker) -> None:  # type: ignore[no-untyped-def]
    """The scenarios above, each on its own fresh hub, run at the same time (they mostly wait: for
    helm, for health checks, for approvals) to keep the suite's wall time down."""
    repos = {name: deploy_repos() for name in SCENARIOS}
    failures: dict[str, BaseException] = {}
    timings: dict[str, float] = {}

    def run(name: str) -> None:
        started = time.monotonic()
        try:
            SCENARIOS[name](repos[name], hubploy_worker)
        except BaseException as exc:  # noqa: BLE001 — reported below, with the scenario's name
            failures[name] = exc
        timings[name] = time.monotonic() - started

    contexts = {name: contextvars.copy_context() for name in SCENARIOS}  # this test's Prefect settings
    with ThreadPoolExecutor(len(SCENARIOS)) as pool:
        list(pool.map(lambda name: contexts[name].run(run, name), SCENARIOS))
    print("\n" + "\n".join(f"timing: {name}: {seconds:.0f} s" for name, seconds in timings.items()))
    if failures:
        name, exc = next(iter(failures.items()))
        others = "; ".join(
            f"{n}: {(str(e).splitlines() or [repr(e)])[0]}" for n, e in list(failures.items())[1:]
        )
        raise AssertionError(f"{name}: {exc}" + (f"\n(also failed: {others})" if others else "")) from exc
