"""The one seam between hubploy and Prefect's internals.

Everything hubploy takes from Prefect that is not public API (a private module ``prefect._…``, an
underscored name, or a detail of how the engine works) is reached through this module and nowhere
else. tests/test_prefect_compat.py holds one canary test per internal below: when a Prefect upgrade
changes one, its canary fails with a message naming the internal and what changed. pyproject.toml
pins the Prefect range these canaries pass with (``TESTED_PREFECT``).

The internals, as of Prefect 3.9.1:

1. ``prefect._flow_run_suspension.FlowRunSuspensionRequest`` and the field
   ``FlowRunContext.flow_run_suspension_request`` holding it: the engine exits the process at the
   next task call while the request is marked (:func:`detach_suspension_request`).
2. ``prefect.exceptions.Pause`` carrying the accepted ``Suspended`` state: how ``suspend_flow_run``
   ends the flow-run process (:func:`suspended_state`).
3. ``prefect.concurrency._leases.maintain_concurrency_lease``: renews a concurrency lease in a thread.
4. ``ENGINE_LEASE_SECONDS``: the engine renews a deployment's concurrency lease for 300 s (every 75 %).
5. The renewal thread: named ``concurrency-lease-renewal-<lease id>``; its target (``Thread._target``)
   is a closure over ``_run_with_failure_handler``, itself a closure over the ``stop_event`` that ends
   the renewal (:func:`stop_lease_renewal`).
6. ``prefect.utilities.engine.propose_state_sync``: proposes a flow-run state as the engine and the
   workers do, raising ``Abort`` when the server aborts the proposal.
7. ``prefect.concurrency._asyncio.ConcurrencySlotAcquisitionError``: what a refused slot request
   raises, from the server's ``httpx.HTTPStatusError`` (HTTP 423 with ``Retry-After`` while the limit
   is full; :func:`retry_after`).
8. ``prefect._internal.concurrency.cancellation.CancelledError``: what a failed lease renewal raises
   in the thread it cancels (the tests wait for it).
"""

from __future__ import annotations

import inspect
import threading
from uuid import UUID

from prefect._flow_run_suspension import FlowRunSuspensionRequest
from prefect._internal.concurrency.cancellation import CancelledError
from prefect.client.schemas.objects import State
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.utilities.engine import propose_state_sync

__all__ = [
    "ENGINE_LEASE_SECONDS",
    "LEASE_THREAD_PREFIX",
    "TESTED_PREFECT",
    "CancelledError",
    "ConcurrencySlotAcquisitionError",
    "detach_suspension_request",
    "lease_renewal_stop_event",
    "maintain_concurrency_lease",
    "propose_state_sync",
    "retry_after",
    "stop_lease_renewal",
    "suspended_state",
]

TESTED_PREFECT = ">=3.9.1,<3.10"  # the range in pyproject.toml; the canaries pass with it
ENGINE_LEASE_SECONDS = 300  # prefect.flow_engine: maintain_concurrency_lease(lease_id, 300, ...)
LEASE_THREAD_PREFIX = "concurrency-lease-renewal-"  # prefect.concurrency._leases names its threads so
LOCKED = 423  # the server's answer to a slot request while the limit is full


def detach_suspension_request(context: FlowRunContext) -> None:
    """Give the flow run a fresh, unmarked suspension request: the engine checks the request at every
    task call and at the flow's end, and exits the process while it is marked. The engine's
    suspension observer keeps the old object, so a late notice of a suspension cannot stop the run."""
    context.flow_run_suspension_request = FlowRunSuspensionRequest()


def suspended_state(pause: Pause) -> State | None:
    """The state a ``Pause`` raised by ``suspend_flow_run`` carries: the run's accepted Suspended state."""
    return pause.state


def lease_renewal_stop_event(lease_id: UUID) -> threading.Event | None:
    """The event that stops this process's renewal of lease ``lease_id``, or None when no renewal
    thread of that lease runs or its stop event cannot be found."""
    thread = next((t for t in threading.enumerate() if t.name == f"{LEASE_THREAD_PREFIX}{lease_id}"), None)
    target = getattr(thread, "_target", None)
    if target is None:
        return None
    handler = inspect.getclosurevars(target).nonlocals.get("_run_with_failure_handler")
    stop = inspect.getclosurevars(handler).nonlocals.get("stop_event") if callable(handler) else None
    return stop if isinstance(stop, threading.Event) else None


def stop_lease_renewal(lease_id: UUID) -> bool:
    """Stop this process's renewal of lease ``lease_id`` as the engine itself does when a flow returns
    (by setting its stop event); False when the renewal cannot be found and stopped."""
    stop = lease_renewal_stop_event(lease_id)
    if stop is None:
        return False
    stop.set()
    return True


def retry_after(error: BaseException) -> float | None:
    """The server's ``Retry-After`` when it refused a slot because the limit is full (HTTP 423), else
    None (any other failure: a missing limit, no answer, an error of the server)."""
    response = getattr(error.__cause__, "response", None)
    if response is None or getattr(response, "status_code", None) != LOCKED:
        return None
    return float(response.headers.get("Retry-After", 1.0))
