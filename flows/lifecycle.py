"""The change lifecycle for one staging commit: plan → validate → build → deploy staging →
approval in the Prefect UI → promote exactly that commit to prod → deploy prod.

Every step before the approval is a task whose result is persisted, so that a suspended run
re-enters after its approval without redoing them (see flows/approval.py for pause vs suspend).

Final states, each with its reason in the state message:
- ``NothingToDeploy`` (Completed): no change touches a hub, the chart or a shared file;
- ``StagingFailed`` (Failed): a staging deploy or health check failed and was rolled back; no
  approval was asked;
- ``WaveFailed`` (Failed): with ``rollout`` in hubploy-repo.yaml, a staging or prod wave stopped the
  line (flows/waves.py); later waves untouched, no approval asked after a staging wave;
- ``Rejected`` / ``ApprovalTimedOut`` / ``Superseded`` (Cancelled): prod untouched; a promotion needs
  ``approvals.prod.required`` distinct approvers, and a reject by any one ends the run;
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

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.states import Cancelled, Completed, Failed, State

from flows.approval import (
    Approval,
    Decision,
    record_approval,
    refusal,
    schedule_timeout_watch,
    supersede_waiting_runs,
    superseded_note,
    wait_for_approval,
)
from flows.build_images import build_images
from flows.notify import tell
from flows.tasks.github_status import DEFAULT_API_URL, report_status
from flows.tasks.lifecycle import (
    ChangeSet,
    approvers_in_force,
    checkout_commit,
    head_of,
    plan_commit,
    promote_commit,
    repo_key,
    validate_hubs,
)
from flows.tasks.locks import ensure_limit
from flows.tasks.render import prod_diffs
from flows.waves import WAVE_FAILED, roll_out, wave_failed, waves_markdown
from hubploy.config.repo_settings import Notice, RepoSettings
from hubploy.errors import HubployError
from hubploy.layout import load_repo
from hubploy.rollout import HubOutcome, RolloutReport

MAX_APPROVAL_ROUNDS = 20
CONTEXT = "hubploy/lifecycle"


def _run_id() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "local"


def deploy_all(tree: str, hubs: list[str], env: str, trigger: str) -> RolloutReport:
    """Deploy hubs wave after wave (flows/waves.py; all at once without ``rollout``), holding their
    release locks (one request); each hub's deploy holds a slot of its cluster's limit."""
    return roll_out(tree, hubs, env, trigger=trigger)


def failure_state(report: RolloutReport, name: str, what: str) -> State | None:
    """``WaveFailed`` when a wave stopped the line; without ``rollout``, a Failed state named ``name``
    listing the hubs whose deploy failed; None when all succeeded (a held hub is no failure)."""
    if report.staged:
        return wave_failed(report)
    failed = {
        h.hub: h.message
        for h in report.hubs.values()
        if not h.outcome.ok and h.outcome is not HubOutcome.held
    }
    if not failed:
        return None
    return Failed(name=name, message=f"{what}: " + "; ".join(f"{h}: {m}" for h, m in failed.items()))


def notice_of_failure(settings: RepoSettings, state: State) -> State:
    """Tell the notification blocks that the run ends in ``state`` (failed; a wave may have stopped the
    line); returns ``state``."""
    if state.name == WAVE_FAILED:
        tell(settings, Notice.wave_failed, f"{state.name}: {state.message}")
    tell(settings, Notice.run_failed, f"{state.name}: {state.message}")
    return state


def notice_of_error(repo_url: str, sha: str, error: HubployError) -> None:
    """Tell the notification blocks that the run fails with ``error``, when the commit's settings can
    be read (its checkout task is cached); otherwise there is nobody configured to tell."""
    try:
        settings = load_repo(checkout_commit(repo_url, sha)).settings
    except HubployError:
        return
    tell(settings, Notice.run_failed, f"{type(error).__name__}: {error}")


def counted_approval(approvers: list[str], approval: Approval, required: int) -> tuple[list[str], str]:
    """The distinct approvers after ``approval`` (an approve), and what still lacks ("" when enough).
    With more than one approver required, an approval without a name cannot be told apart and does
    not count."""
    name = approval.approver.strip()
    if required > 1 and not name:
        return approvers, (
            f"an approval without a name does not count: {required} distinct approvers are needed"
        )
    if name.casefold() in {a.casefold() for a in approvers}:
        return approvers, f"{name} already approved; another approver is needed"
    approvers = [*approvers, name or "unknown"]
    if len(approvers) < required:
        return approvers, (
            f"{len(approvers)} of {required} approvals (by {', '.join(approvers)}); "
            "waiting for another approver"
        )
    return approvers, ""


def describe(
    sha: str,
    change: ChangeSet,
    staging: dict[str, Any],
    diffs: dict[str, str],
    *,
    timeout_hours: float,
    note: str = "",
    waves: RolloutReport | None = None,
) -> str:
    """The markdown above the approval form: its sections in order, each a list of lines (with
    ``waves``: the waves staging ran in)."""
    sections = [
        _heading(sha, timeout_hours, note),
        _staging_table(staging),
        _staging_waves(waves),
        _commit_list(sha, change),
        _prod_changes(diffs),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines)


def _heading(sha: str, timeout_hours: float, note: str) -> list[str]:
    lines = [f"> **{note}**", ""] if note else []
    return lines + [
        f"## Promote `{sha[:12]}` to prod?",
        "",
        (
            f"Staging is deployed and healthy. Choose **approve** or **reject** (the default) "
            f"below; the form is for commit `{sha}` only. Without a decision within "
            f"{timeout_hours:g} h the run is cancelled and prod stays untouched."
        ),
    ]


def _staging_table(staging: dict[str, Any]) -> list[str]:
    lines = ["| hub | staging | revision | JupyterHub | images |", "|---|---|---|---|---|"]
    for hub, result in staging.items():
        images = ", ".join(f"`{i['name']}:{i['tag']}`" for i in result.get("images", [])) or "–"
        lines.append(
            f"| {hub} | {result.get('result')} | {result.get('revision_after')} | "
            f"{result.get('hub_version') or '–'} | {images} |"
        )
    return lines


def _staging_waves(waves: RolloutReport | None) -> list[str]:
    return ["### Staging waves", "", *waves_markdown(waves)] if waves is not None and waves.staged else []


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


def github_reporter(
    block: str | None, repo_full_name: str | None, sha: str, api_url: str = DEFAULT_API_URL
) -> Callable[[str, str], None]:
    """report(state, description): a `hubploy/lifecycle` commit status, when GitHub is configured.
    A failure to report is logged, never fatal to the deploy."""

    def report(state: str, description: str) -> None:
        if not (block and repo_full_name):
            return
        try:
            report_status(
                block,
                repo_full_name,
                sha,
                state,  # type: ignore[arg-type]
                CONTEXT,
                description,
                api_url=api_url,
            )
        except HubployError as exc:
            get_run_logger().warning("could not report to GitHub: %s", exc)

    return report


@flow(name="hubploy-lifecycle", persist_result=True, log_prints=True)
def lifecycle(
    sha: str,
    repo_url: str,
    before: str | None = None,
    trigger: str = "manual",
    approval_timeout_hours: float | None = None,
    repo_full_name: str | None = None,
    github_credentials_block: str | None = None,
    github_api_url: str = DEFAULT_API_URL,
) -> State:
    """Take one staging commit of the deployment repository at ``repo_url`` through to prod.
    ``github_api_url``: the REST base (GitHub Enterprise: https://HOST/api/v3)."""
    report = github_reporter(github_credentials_block, repo_full_name, sha, github_api_url)
    try:
        state = _lifecycle(sha, repo_url, before, trigger, approval_timeout_hours, report)
    except HubployError as exc:
        report("failure", str(exc))
        notice_of_error(repo_url, sha, exc)
        raise
    report("success" if state.is_completed() else "failure", f"{state.name}: {state.message or ''}")
    return state


def _lifecycle(
    sha: str,
    repo_url: str,
    before: str | None,
    trigger: str,
    approval_timeout_hours: float | None,
    report: Callable[[str, str], None],
) -> State:
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
        return notice_of_failure(settings, failed)
    lock = f"promote-{repo_key(repo_url)}"
    ensure_limit(lock, 1)
    with concurrency(lock, occupy=1):  # an older run's approval and this supersession never interleave
        supersede_waiting_runs(run_id, repo_url, sha)
    diffs = prod_diffs(tree, hubs)
    allowed = approvers_in_force(repo_url, prod_head, tree)
    timeout_hours = approval_timeout_hours or settings.approval_timeout_hours
    report("pending", "staging is healthy; waiting for approval")
    required = settings.approvals.prod.required
    approvers: list[str] = []  # the distinct approvers whose approval counted so far
    note = ""
    for round_number in range(1, MAX_APPROVAL_ROUNDS + 1):
        key = f"approval-{round_number}"
        watched = schedule_timeout_watch(run_id, key, timeout_hours)
        tell(
            settings,
            Notice.approval_waiting,
            f"{sha[:12]} waits for approval to reach prod ({', '.join(hubs)}). {note}".strip(),
        )
        records = {hub: dict(h.record) for hub, h in staging.hubs.items()}
        description = describe(
            sha, change, records, diffs, timeout_hours=timeout_hours, note=note, waves=staging
        )
        approval = wait_for_approval(
            description, sha=sha, timeout=timedelta(hours=timeout_hours), key=key, watched=watched
        )
        refused = refusal(approval, sha, approvers=allowed, settings=settings)
        record_approval(sha, approval, round_number, refused)
        if refused is not None:
            note = f"{approval.decision.noun} by {approval.who} refused: {refused}."
            logger.warning("%s", note)
            continue
        if approval.decision is not Decision.approve:
            return Cancelled(
                name="Rejected",
                message=f"rejected by {approval.who}: {approval.reason or 'no reason given'}; prod untouched",
            )
        approvers, note = counted_approval(approvers, approval, required)
        if not note:
            break
        logger.info("%s", note)
    else:
        return Cancelled(
            name="ApprovalRefused",
            message=f"{note} Gave up after {MAX_APPROVAL_ROUNDS} rounds; prod untouched",
        )
    approved_by = ", ".join(approvers)
    with concurrency(lock, occupy=1):
        superseded = superseded_note(run_id)
        if superseded is not None:
            message = (
                f"the approval by {approved_by} arrived after this run was superseded "
                f"({superseded}): refused; prod untouched"
            )
            logger.warning("%s", message)
            return Cancelled(name="Superseded", message=message)
        logger.info("approved by %s: %s", approved_by, approval.reason or "no reason given")
        message = (
            f"Promote {sha[:12]} to {settings.prod_branch}\n\nApproved by {approved_by}: "
            f"{approval.reason or 'no reason given'}\nhubploy lifecycle run {run_id}"
        )
        promotion = promote_commit(repo_url, sha, message, settings.staging_branch, settings.prod_branch)
        prod = deploy_all(tree, hubs, "prod", trigger=f"lifecycle {run_id} promotion of {sha[:12]}")
    failed = failure_state(prod, "ProdFailed", "prod deploy failed and was rolled back")
    if failed:
        return notice_of_failure(settings, failed)
    return Completed(
        message=f"prod runs {sha[:12]} (merge {promotion.prod_after[:12]}) for {', '.join(hubs)}"
    )
