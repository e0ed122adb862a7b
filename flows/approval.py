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
A waiting process sees the cancellation (or timeout) and exits without touching the run's state.
"""

from __future__ import annotations

import enum
import os
from datetime import datetime, timedelta, timezone
from uuid import UUID

from pydantic import Field
from prefect import flow, get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                            FlowRunFilterState, FlowRunFilterStateType)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from flows.hot_window import suspend_with_hot_window

TIMEOUT_DEPLOYMENT = "hubploy-approval-timeout/approval-timeout"
BACKSTOP_MARGIN = timedelta(minutes=10)
WAITING = [StateType.PAUSED]
HOT_WINDOW = timedelta(minutes=15)
HOT_WINDOW_ENV = "HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS"


def current_deployment_id() -> str | None:
    """The deployment the current flow run was created from, if any."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return str(run.deployment_id) if run and run.deployment_id else None


class Decision(str, enum.Enum):
    approve = "approve"
    reject = "reject"


class Approval(RunInput):
    """The form shown in the Prefect UI ("Resume") and filled by `hubploy approve`."""

    decision: Decision = Field(Decision.reject, description="approve: promote this commit to prod. "
                                                            "reject: stop here; prod stays untouched.")
    reason: str = Field("", description="Why (recorded in the audit trail).")
    approver: str = Field("", description="Your name or email (the open-source Prefect server records no user).")


def hot_window() -> timedelta:
    """How long a suspended run's process waits for a fast resume: HOT_WINDOW, or the number of
    seconds in HUBPLOY_APPROVAL_HOT_WINDOW_SECONDS (0: exit at once, as a plain suspend)."""
    raw = os.environ.get(HOT_WINDOW_ENV)
    if raw is None:
        return HOT_WINDOW
    try:
        return timedelta(seconds=max(0.0, float(raw)))
    except (ValueError, OverflowError):
        get_run_logger().warning("%s=%r is not a number of seconds; using %s", HOT_WINDOW_ENV, raw, HOT_WINDOW)
        return HOT_WINDOW


def wait_for_approval(description: str, *, timeout: timedelta, key: str, watched: bool) -> Approval:
    """Suspend with a hot window (from a deployment) or pause (otherwise) until the form is submitted."""
    form = Approval.with_initial_data(description=description)
    if current_deployment_id():
        backstop = timeout + BACKSTOP_MARGIN if watched else timeout
        return suspend_with_hot_window(form, timeout=int(backstop.total_seconds()), key=key,
                                       window=min(hot_window(), backstop))
    return pause_flow_run(wait_for_input=form, timeout=int(timeout.total_seconds()), key=key, poll_interval=2)


@task(retries=3, retry_delay_seconds=[1, 3, 10])
def schedule_timeout_watch(run_id: str, key: str, hours: float) -> bool:
    """Schedule the approval-timeout check at the deadline; False when that deployment is missing."""
    if not current_deployment_id():
        return False
    deadline = datetime.now(timezone.utc) + timedelta(hours=hours)
    try:
        run_deployment(TIMEOUT_DEPLOYMENT, parameters={"flow_run_id": run_id, "pause_key": key, "hours": hours},
                       scheduled_time=deadline, timeout=0, as_subflow=False)
    except ObjectNotFound as exc:
        get_run_logger().warning("approval timeout watch not scheduled (%s); Prefect's pause timeout applies", exc)
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
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=WAITING))),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])))
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
