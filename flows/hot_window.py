"""Suspend a flow run, but keep its process for a short *hot window* so that a quick resume continues
right here instead of restarting the flow in a new process (Prefect 3.9.1).

`suspend_with_hot_window` calls Prefect's own `suspend_flow_run`, so the run is in exactly the
`Suspended` state (with its input form) that a plain suspend leaves, and a killed process loses
nothing: a resume reschedules the run to the worker as usual. Instead of exiting at once, the
process polls the run for ``window``:

- resumed (a `Scheduled` "Resuming" state): the process claims the run back by proposing `Pending`,
  then `Running`, without force, and continues with the submitted input when both are accepted;
- anything else (still suspended at the end of the window, the worker took the resumed run, the
  claim was refused, the run was cancelled or timed out): it exits exactly as `suspend_flow_run` does
  (by re-raising Prefect's `Pause`), and never writes a state, so a final state set by someone else
  stands.

Two engine mechanisms of a flow-run process assume that a suspended run's process is gone, and are
handled here: the suspension observer (it marks the run as suspended, which would make the next task
call exit the process) and the renewal of the deployment concurrency lease (suspending revokes it;
the next renewal, at most 225 s later, would cancel the flow and leave the run `Crashed`). Both lean
on Prefect internals, reached through flows/prefect_compat.py.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack
from datetime import timedelta
from typing import TypeGuard, TypeVar
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Abort, Pause
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput, keyset_from_paused_state
from prefect.states import Pending, Running

from flows.prefect_compat import (
    ENGINE_LEASE_SECONDS,
    detach_suspension_request,
    maintain_concurrency_lease,
    propose_state_sync,
    stop_lease_renewal,
    suspended_state,
)

POLL_SECONDS = 0.5

R = TypeVar("R", bound=RunInput)

_claimed_leases = ExitStack()  # renewals of the leases taken by a claim, until the process exits


def suspend_with_hot_window(wait_for_input: type[R], *, timeout: int, key: str, window: timedelta) -> R:
    """`suspend_flow_run(wait_for_input, timeout=timeout, key=key)`, continuing in this process when
    the run is resumed within ``window``; otherwise the process exits as after a plain suspend."""
    try:
        return suspend_flow_run(wait_for_input=wait_for_input, timeout=timeout, key=key)
    except Pause as pause:
        suspended = suspended_state(pause)
        if window <= timedelta(0) or not _is_own_suspension(suspended, key):
            raise
        answer = _continue_if_resumed(wait_for_input, suspended, window)
        if answer is None:
            raise
        return answer


def _is_own_suspension(state: State | None, key: str) -> TypeGuard[State]:
    return bool(
        state and state.is_paused() and state.name == "Suspended" and state.state_details.pause_key == key
    )


def _continue_if_resumed(wait_for_input: type[R], suspended: State, window: timedelta) -> R | None:
    """The submitted input when this process resumed the run within ``window``, else None."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # suspend_flow_run checked both
    run_id = context.flow_run.id
    lease = suspended.state_details.deployment_concurrency_lease_id
    # The engine cancels the flow when a renewal fails; suspending revoked the lease, so the next renewal
    # (at most 225 s later) would end the run `Crashed` while it waits.
    if lease and not stop_lease_renewal(lease):
        logger.warning(
            "approval hot window unavailable: this Prefect version renews lease %s in a way "
            "hubploy cannot stop; the process exits and a resume restarts the run",
            lease,
        )
        return None
    logger.info(
        "waiting for approval in flow-run process %s for up to %.0f s (hot window); after that the "
        "process exits and a resume restarts the run through the worker",
        os.getpid(),
        window.total_seconds(),
    )
    with get_client(sync_client=True) as client:
        state = _await_change(client, run_id, suspended, window)
        if state is None:
            logger.info("no decision within the hot window: the process exits, the run stays suspended")
            return None
        if not state.is_scheduled():
            logger.info(
                "the run left the approval as %s (%s): the process exits", state.name, state.message or ""
            )
            return None
        claimed = _claim(client, run_id)
        if claimed is None:
            logger.info(
                "the resumed run went to the worker (it claimed the run first, or the deployment's "
                "concurrency limit is reached): this process exits"
            )
            return None
    detach_suspension_request(context)  # it runs again here: no later task call may exit the process
    if lease := claimed.state_details.deployment_concurrency_lease_id:
        _claimed_leases.enter_context(
            maintain_concurrency_lease(lease, ENGINE_LEASE_SECONDS, suppress_warnings=True)
        )
    logger.info("resumed within the hot window: continuing in flow-run process %s", os.getpid())
    # load is sync here (no event loop in a flow-run process): the instance, never a coroutine
    return wait_for_input.load(keyset_from_paused_state(suspended))  # type: ignore[return-value]


def _await_change(
    client: SyncPrefectClient, run_id: UUID, suspended: State, window: timedelta
) -> State | None:
    """Poll the run until its state is no longer ``suspended``; that new state, or None at the end of
    the window (or when the server cannot be read: the run is safe in its suspended state)."""
    deadline = time.monotonic() + window.total_seconds()
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        try:
            state = client.read_flow_run(run_id).state
        except Exception as exc:  # noqa: BLE001 — the wait is an optimisation; never fail the run for it
            get_run_logger().warning("hot window ended early, could not read the run: %s", exc)
            return None
        if state is not None and state.id != suspended.id:
            return state
    return None


def _claim(client: SyncPrefectClient, run_id: UUID) -> State | None:
    """Take the resumed run back from the work pool: the accepted `Running` state, or None.

    Both states are proposed without force, as a worker and the engine propose them
    (`propose_state_sync`: an HTTP retry of an accepted proposal comes back as that same state).
    `Pending` first, because it is the exclusive step: the server (PreventPendingTransitions) aborts a
    `Pending` proposal for a run that is already Pending or Running, and a worker proposes `Pending`
    before it starts a process. A `Running` proposal alone would be accepted after a worker's
    `Pending` too, and both would run the flow.

    What the process worker does when it picks up the resumed run after this claim (read in
    prefect/workers/base.py, 3.9.1): a worker started with --limit already holds a slot for this flow-run
    id (this process is its child) and skips the run as a "duplicate submission"; any other worker has its
    `Pending` aborted in `_propose_pending_state` ("Aborted submission of flow run"), releases the slot and
    starts no process. Conversely, when a worker proposed `Pending` first, ours is aborted and we exit.
    """
    try:
        if not propose_state_sync(client, Pending(), flow_run_id=run_id).is_pending():
            return None  # e.g. AwaitingConcurrencySlot: the deployment's concurrency limit is reached
        running = propose_state_sync(client, Running(), flow_run_id=run_id)
    except Abort:
        return None
    return running if running.is_running() else None
