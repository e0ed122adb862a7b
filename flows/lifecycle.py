"""The change lifecycle for one staging commit: plan → validate → build → deploy staging →
approval in the Prefect UI → promote exactly that commit to prod → deploy prod.

Every step before the approval is a task whose result is persisted, so that a suspended run
re-enters after its approval without redoing them (see flows/approval.py for pause vs suspend).

Final states, each with its reason in the state message:
- ``NothingToDeploy`` (Completed): no change touches a hub, the chart or a shared file;
- ``StagingFailed`` (Failed): a staging deploy or health check failed and was rolled back; no
  approval was asked;
- ``Rejected`` / ``ApprovalTimedOut`` / ``Superseded`` (Cancelled): prod untouched;
- ``ApprovalRefused`` (Cancelled): every decision of many rounds was refused (another commit named, an
  approver not listed in ``approvers:``, a freeze window); prod untouched;
- ``ProdFailed`` (Failed): a prod deploy failed and was rolled back;
- ``Completed``: prod runs the approved commit.

Concurrency: staging deploys of one release never overlap (a lock per release, in deploy_hub). A
newer run reaching its approval cancels older runs of the same repo still waiting (Superseded), and
promotion + prod deploy hold a per-repository lock, so past the staging deploy one lifecycle per
repository acts at a time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.states import Cancelled, Completed, Failed, State

from flows.approval import (Decision, record_approval, refusal, schedule_timeout_watch,
                            supersede_waiting_runs, superseded_note, wait_for_approval)
from flows.build_images import build_images
from flows.tasks.github_status import DEFAULT_API_URL, report_status
from flows.tasks.deploy import deploy_hub
from flows.tasks.locks import ensure_limit, fleet_release_locks
from flows.tasks.lifecycle import (ChangeSet, approvers_in_force, checkout_commit, head_of, plan_commit,
                                   promote_commit, repo_key, validate_hubs)
from flows.tasks.render import prod_diffs
from hubploy.errors import HubployError
from hubploy.layout import load_repo

MAX_APPROVAL_ROUNDS = 20
CONTEXT = "hubploy/lifecycle"


def _run_id() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "local"


def deploy_all(tree: str, hubs: list[str], env: str, trigger: str) -> dict[str, dict[str, Any] | BaseException]:
    """Deploy hubs concurrently, holding their release locks (one request); each deploy_hub holds a
    slot of its cluster's limit."""
    with fleet_release_locks(tree, hubs, env):
        futures = {hub: deploy_hub.submit(hub, env, repo_path=tree, trigger=trigger) for hub in hubs}
        wait(list(futures.values()))
    results: dict[str, dict[str, Any] | BaseException] = {}
    for hub, future in futures.items():
        state = future.state
        results[hub] = future.result() if state.is_completed() else state.result(raise_on_failure=False)
    return results


def failure_state(results: dict[str, Any], name: str, what: str) -> State | None:
    """A Failed state named ``name`` listing the hubs whose deploy failed, or None when all succeeded."""
    failed = {hub: str(r) for hub, r in results.items() if isinstance(r, BaseException)}
    if not failed:
        return None
    return Failed(name=name, message=f"{what}: " + "; ".join(f"{h}: {m}" for h, m in failed.items()))


def describe(sha: str, change: ChangeSet, staging: dict[str, Any], diffs: dict[str, str], *,
             timeout_hours: float, note: str = "") -> str:
    """The markdown above the approval form: its sections in order, each a list of lines."""
    sections = [_heading(sha, timeout_hours, note), _staging_table(staging), _commit_list(sha, change),
                _prod_changes(diffs)]
    return "\n\n".join("\n".join(lines) for lines in sections)


def _heading(sha: str, timeout_hours: float, note: str) -> list[str]:
    lines = [f"> **{note}**", ""] if note else []
    return lines + [f"## Promote `{sha[:12]}` to prod?", "",
                    (f"Staging is deployed and healthy. Choose **approve** or **reject** (the default) "
                     f"below; the form is for commit `{sha}` only. Without a decision within "
                     f"{timeout_hours:g} h the run is cancelled and prod stays untouched.")]


def _staging_table(staging: dict[str, Any]) -> list[str]:
    lines = ["| hub | staging | revision | JupyterHub | images |", "|---|---|---|---|---|"]
    for hub, result in staging.items():
        images = ", ".join(f"`{i['name']}:{i['tag']}`" for i in result.get("images", [])) or "–"
        lines.append(f"| {hub} | {result.get('result')} | {result.get('revision_after')} | "
                     f"{result.get('hub_version') or '–'} | {images} |")
    return lines


def _commit_list(sha: str, change: ChangeSet) -> list[str]:
    lines = [f"### Commits `{(change.base or 'none')[:12]}..{sha[:12]}`", ""]
    lines += [f"- `{c[:10]}` {subject}" for c, subject in change.commits[:30]] or ["- (none)"]
    if len(change.commits) > 30:
        lines.append(f"- … and {len(change.commits) - 30} more")
    return lines


def _prod_changes(diffs: dict[str, str]) -> list[str]:
    lines = ["### What prod will change", ""]
    for hub, diff in diffs.items():
        shown = f"```diff\n{diff}\n```" if diff else "_no change to the rendered manifests_"
        lines += [f"**{hub}**", "", shown, ""]
    return lines


def github_reporter(block: str | None, repo_full_name: str | None, sha: str,
                    api_url: str = DEFAULT_API_URL) -> Callable[[str, str], None]:
    """report(state, description): a `hubploy/lifecycle` commit status, when GitHub is configured.
    A failure to report is logged, never fatal to the deploy."""

    def report(state: str, description: str) -> None:
        if not (block and repo_full_name):
            return
        try:
            report_status(block, repo_full_name, sha, state, CONTEXT, description,  # type: ignore[arg-type]
                          api_url=api_url)
        except HubployError as exc:
            get_run_logger().warning("could not report to GitHub: %s", exc)

    return report


@flow(name="hubploy-lifecycle", persist_result=True, log_prints=True)
def lifecycle(sha: str, repo_url: str, before: str | None = None, trigger: str = "manual",
              approval_timeout_hours: float | None = None, repo_full_name: str | None = None,
              github_credentials_block: str | None = None, github_api_url: str = DEFAULT_API_URL) -> State:
    """Take one staging commit of the deployment repository at ``repo_url`` through to prod.
    ``github_api_url``: the REST base (GitHub Enterprise: https://HOST/api/v3)."""
    report = github_reporter(github_credentials_block, repo_full_name, sha, github_api_url)
    try:
        state = _lifecycle(sha, repo_url, before, trigger, approval_timeout_hours, report)
    except HubployError as exc:
        report("failure", str(exc))
        raise
    report("success" if state.is_completed() else "failure", f"{state.name}: {state.message or ''}")
    return state


def _lifecycle(sha: str, repo_url: str, before: str | None, trigger: str, approval_timeout_hours: float | None,
               report: Callable[[str, str], None]) -> State:
    logger = get_run_logger()
    run_id = _run_id()
    report("pending", "planning, building and deploying staging")
    tree = checkout_commit(repo_url, sha)
    settings = load_repo(tree).settings
    prod_head = head_of(repo_url, settings.prod_branch)
    change = plan_commit(tree, sha, prod_head or before)
    if change.plan.empty:
        return Completed(name="NothingToDeploy", message=change.plan.summary())
    hubs = change.plan.hub_names
    validate_hubs(tree, hubs)
    build_images(hubs=hubs, repo_path=tree, push=True, check_registry=True)
    staging = deploy_all(tree, hubs, "staging", trigger=f"lifecycle {run_id} ({trigger})")
    failed = failure_state(staging, "StagingFailed", "staging failed, no approval asked")
    if failed:
        return failed
    lock = f"promote-{repo_key(repo_url)}"
    ensure_limit(lock, 1)
    with concurrency(lock, occupy=1):  # an older run's approval and this supersession never interleave
        supersede_waiting_runs(run_id, repo_url, sha)
    diffs = prod_diffs(tree, hubs)
    approvers = approvers_in_force(repo_url, prod_head, tree)
    timeout_hours = approval_timeout_hours or settings.approval_timeout_hours
    report("pending", "staging is healthy; waiting for approval")
    note = ""
    for round_number in range(1, MAX_APPROVAL_ROUNDS + 1):
        key = f"approval-{round_number}"
        watched = schedule_timeout_watch(run_id, key, timeout_hours)
        description = describe(sha, change, staging, diffs, timeout_hours=timeout_hours, note=note)
        approval = wait_for_approval(description, sha=sha, timeout=timedelta(hours=timeout_hours), key=key,
                                     watched=watched)
        refused = refusal(approval, sha, approvers=approvers, settings=settings)
        record_approval(sha, approval, round_number, refused)
        if refused is None:
            break
        note = f"{approval.decision.noun} by {approval.who} refused: {refused}."
        logger.warning("%s", note)
    else:
        return Cancelled(name="ApprovalRefused",
                         message=f"{note} Gave up after {MAX_APPROVAL_ROUNDS} rounds; prod untouched")
    if approval.decision is not Decision.approve:
        return Cancelled(name="Rejected", message=f"rejected by {approval.who}: "
                                                  f"{approval.reason or 'no reason given'}; prod untouched")
    with concurrency(lock, occupy=1):
        superseded = superseded_note(run_id)
        if superseded is not None:
            message = (f"the approval by {approval.who} arrived after this run was superseded "
                       f"({superseded}): refused; prod untouched")
            logger.warning("%s", message)
            return Cancelled(name="Superseded", message=message)
        logger.info("approved by %s: %s", approval.who, approval.reason or "no reason given")
        message = (f"Promote {sha[:12]} to {settings.prod_branch}\n\nApproved by {approval.who}: "
                   f"{approval.reason or 'no reason given'}\nhubploy lifecycle run {run_id}")
        promotion = promote_commit(repo_url, sha, message, settings.staging_branch, settings.prod_branch)
        prod = deploy_all(tree, hubs, "prod", trigger=f"lifecycle {run_id} promotion of {sha[:12]}")
    failed = failure_state(prod, "ProdFailed", "prod deploy failed and was rolled back")
    if failed:
        return failed
    return Completed(message=f"prod runs {sha[:12]} (merge {promotion.prod_after[:12]}) for {', '.join(hubs)}")
