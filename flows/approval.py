"""The human approval between staging and prod.

Design: a lifecycle run that comes from a deployment *suspends* (`suspend_flow_run`): the run shows
`Suspended` with the approval form, and the approval survives the death of the process that was
waiting — on resume the run is rescheduled to the worker and re-enters the flow, where every task
before the approval returns its persisted result. A run started outside a deployment (a plain script
or test) cannot be suspended, so it *pauses* instead and keeps its process alive.

Hot window: after suspending, the flow-run process does not exit at once. For `HOT_WINDOW` (15 min;
`HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS` overrides it, 0 turns it off) it polls the run every 0.5 s, and
a resume within that window continues the flow right in this process, without the worker starting a
new one and re-entering the cached tasks (flows/hot_window.py). The run is `Suspended` all the while,
so everything else is unchanged: the Resume form, `hubploy approve`, the timeout watch and
supersession below, and a killed process (a resume then goes through the worker). When the window
ends without a decision, or the worker takes the resumed run first, the process exits as after a
plain suspend. While it waits, the process holds a slot of its worker.

Timeouts: Prefect fails an expired pause with a generic "never resumed". To end a timed-out approval
in a named state with its reason, the lifecycle schedules a run of the `approval-timeout` deployment
at the deadline; if the run still waits for that same approval, it is set to
`Cancelled(name="ApprovalTimedOut")`. Prefect's own pause timeout (deadline + margin) is the backstop.

Supersession: when a newer lifecycle run for the same repository reaches its approval, every older
run of the same deployment still waiting for approval is cancelled with a note naming the newer run.
A waiting process sees the cancellation (or timeout) and exits without touching the run's state. The
newer run cancels while it holds the repository's promotion lock, and an approved run checks its own
history under that same lock before it promotes: an approval that raced the supersession is refused.

Integrity of a decision (``refusal``): the form carries the commit it shows, and a decision naming
another commit is refused; with ``approvers:`` in hubploy-repo.yaml, so is a decision whose approver is
not listed; an approval during a freeze window is refused too. A refused decision is logged and
recorded, and the run asks again. The form's default decision is reject.
"""

from __future__ import annotations

import enum
import os
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.context import FlowRunContext
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled
from pydantic import Field, create_model

from flows.hot_window import suspend_with_hot_window
from hubploy.config.repo_settings import Approvers, RepoSettings
from hubploy.errors import ApprovalError

TIMEOUT_DEPLOYMENT = "hubploy-approval-timeout/approval-timeout"
BACKSTOP_MARGIN = timedelta(minutes=10)
WAITING = [StateType.PAUSED]
HOT_WINDOW = timedelta(minutes=15)
HOT_WINDOW_ENV = "HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS"
AUDIT_KEY = "approval"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def current_deployment_id() -> str | None:
    """The deployment the current flow run was created from, if any."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return str(run.deployment_id) if run and run.deployment_id else None


class Decision(str, enum.Enum):  # noqa: UP042 (a StrEnum member's str() is its value)
    approve = "approve"
    reject = "reject"

    @property
    def noun(self) -> str:
        return "Approval" if self is Decision.approve else "Rejection"

    @property
    def past(self) -> str:
        return "approved" if self is Decision.approve else "rejected"


class Approval(RunInput):
    """The form shown in the Prefect UI ("Resume") and filled by `hubploy approve`."""

    decision: Decision = Field(
        Decision.reject,
        description=(
            "approve: promote this commit to prod. reject (the default): stop here; prod stays untouched."
        ),
    )
    sha: str = Field(
        "",
        description="The commit you decide on, as shown above (filled in). A decision that "
        "names another commit is refused.",
    )
    reason: str = Field("", description="Why (recorded in the audit trail).")
    approver: str = Field(
        "", description="Your name or email (the open-source Prefect server records no user)."
    )

    @property
    def who(self) -> str:
        """The approver as checked and recorded."""
        return self.approver.strip() or "unknown"

    @classmethod
    def for_commit(cls, sha: str) -> type[Approval]:
        """The form filled in with ``sha`` (``with_initial_data`` would drop the field's description)."""
        field = cls.model_fields["sha"]
        form: type[Approval] = create_model(
            cls.__name__, __base__=cls, sha=(str, Field(sha, description=field.description))
        )
        return form


def refusal(
    approval: Approval, sha: str, *, approvers: Approvers, settings: RepoSettings, env: str = "prod"
) -> str | None:
    """Why ``approval`` does not decide the promotion of ``sha`` to ``env``, or None when it does: it
    names another commit, its approver is not among ``approvers``, or it approves during a freeze
    window of ``settings``."""
    named = approval.sha.strip().lower()
    if named != sha.lower():
        return f"it names commit {named[:12] or '(none)'}, but this run promotes {sha[:12]}"
    try:
        approvers.check(env, approval.approver)
        if approval.decision is Decision.approve:
            settings.check_not_frozen()
    except ApprovalError as exc:
        return exc.message
    return None


def hot_window() -> timedelta:
    """How long a suspended run's process waits for a fast resume: HOT_WINDOW, or the number of
    seconds in HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS (0: exit at once, as a plain suspend)."""
    raw = os.environ.get(HOT_WINDOW_ENV)
    if raw is None:
        return HOT_WINDOW
    try:
        return timedelta(seconds=max(0.0, float(raw)))
    except (ValueError, OverflowError):
        get_run_logger().warning(
            "%s=%r is not a number of seconds; using %s", HOT_WINDOW_ENV, raw, HOT_WINDOW
        )
        return HOT_WINDOW


def wait_for_approval(description: str, *, sha: str, timeout: timedelta, key: str, watched: bool) -> Approval:
    """Suspend with a hot window (from a deployment) or pause (otherwise) until the form about ``sha``
    is submitted."""
    form = Approval.for_commit(sha).with_initial_data(description=description)
    if current_deployment_id():
        backstop = timeout + BACKSTOP_MARGIN if watched else timeout
        return suspend_with_hot_window(
            form, timeout=int(backstop.total_seconds()), key=key, window=min(hot_window(), backstop)
        )
    return pause_flow_run(wait_for_input=form, timeout=int(timeout.total_seconds()), key=key, poll_interval=2)


REFUSED = "refused: "


def outcome(refused: str | None) -> str:
    return f"{REFUSED}{refused}" if refused else "accepted"


def refusal_in(verdict: str) -> str | None:
    """Why the decision a verdict (an audit record's summary) is about was refused; None if it counted."""
    _, found, why = verdict.partition(f": {REFUSED}")
    return why if found else None


@task
def record_approval(sha: str, approval: Approval, round_number: int, refused: str | None) -> None:
    """The audit record of one decision: what was decided, by whom (the name that was checked), and
    whether it counted; its summary (the description) is the verdict `hubploy approve` reads back."""
    create_markdown_artifact(
        key=AUDIT_KEY,
        description=f"{approval.decision.value} of {sha[:12]} by {approval.who}: {outcome(refused)}",
        markdown="\n".join(
            [
                (
                    f"**{approval.decision.value}** of `{sha}` by {approval.who} (round {round_number}): "
                    f"{outcome(refused)}"
                ),
                "",
                "| decision | commit named | approver | reason | outcome |",
                "|---|---|---|---|---|",
                (
                    f"| {approval.decision.value} | `{approval.sha.strip() or '–'}` | {approval.who} | "
                    f"{approval.reason or '–'} | {outcome(refused)} |"
                ),
            ]
        ),
    )


def recorded_verdicts(run_id: UUID) -> list[str]:
    """The verdicts on the decisions submitted to run ``run_id`` so far, oldest first."""
    with get_client(sync_client=True) as client:
        records = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[AUDIT_KEY]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            )
        )
    return [a.description or "" for a in sorted(records, key=lambda a: a.created or EPOCH)]


@task(retries=3, retry_delay_seconds=[1, 3, 10])
def schedule_timeout_watch(run_id: str, key: str, hours: float) -> bool:
    """Schedule the approval-timeout check at the deadline; False when that deployment is missing."""
    if not current_deployment_id():
        return False
    deadline = datetime.now(UTC) + timedelta(hours=hours)
    try:
        run_deployment(
            TIMEOUT_DEPLOYMENT,
            parameters={"flow_run_id": run_id, "pause_key": key, "hours": hours},
            scheduled_time=deadline,
            timeout=0,
            as_subflow=False,
        )
    except ObjectNotFound as exc:
        get_run_logger().warning(
            "approval timeout watch not scheduled (%s); Prefect's pause timeout applies", exc
        )
        return False
    return True


@task(retries=3, retry_delay_seconds=[1, 3, 10])
def supersede_waiting_runs(run_id: str, repo_url: str, sha: str) -> list[str]:
    """Cancel older runs of this deployment, for the same repository, still waiting for approval."""
    deployment_id = current_deployment_id()
    if not deployment_id:
        return []
    cancelled = []
    with get_client(sync_client=True) as client:
        waiting = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=WAITING))
            ),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
        )
        me = client.read_flow_run(UUID(run_id))
        for other in waiting:
            if str(other.id) == run_id or other.parameters.get("repo_url") != repo_url:
                continue
            if other.created and me.created and other.created > me.created:
                continue  # a newer run is already waiting: it supersedes us, not the other way round
            note = f"superseded by newer lifecycle run {me.name} ({run_id}) for {sha[:12]}; prod untouched"
            client.set_flow_run_state(other.id, Cancelled(name="Superseded", message=note), force=True)
            get_run_logger().info("cancelled waiting run %s: %s", other.name, note)
            cancelled.append(str(other.id))
    return cancelled


@task(retries=3, retry_delay_seconds=[1, 3, 10], cache_policy=NO_CACHE)
def superseded_note(run_id: str) -> str | None:
    """The note of the supersession that cancelled this run while it waited, if one did (read from the
    run's state history: a resume that raced the cancellation may have moved the run on since)."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(UUID(run_id))
    notes = (s.message or "superseded" for s in states if s.is_cancelled() and s.name == "Superseded")
    return next(notes, None)


@flow(name="hubploy-approval-timeout", log_prints=True)
def approval_timeout(flow_run_id: str, pause_key: str, hours: float) -> str:
    """Runs at an approval's deadline: cancel the lifecycle run if it still waits for that approval."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        state = run.state
        if state is None or not state.is_paused() or state.state_details.pause_key != pause_key:
            return f"run {run.name} no longer waits for approval {pause_key}: nothing to do"
        message = f"no approval within {hours:g} h; prod untouched"
        client.set_flow_run_state(run.id, Cancelled(name="ApprovalTimedOut", message=message), force=True)
        return f"run {run.name}: {message}"
