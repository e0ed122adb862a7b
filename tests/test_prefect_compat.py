"""Canaries for the Prefect internals behind flows/prefect_compat.py: one test per internal, each
asserting the shape hubploy relies on and failing with a message that names the internal and what
changed. They need no server (except the slot refusal, which is the server's behaviour); the hot window
and the deploy locks are tested end to end against a real server elsewhere."""

from __future__ import annotations

import inspect
import re
import socket
import threading
import tomllib
import uuid
from collections.abc import Iterator

import prefect
import prefect.flow_engine
import prefect.flow_runs
import pytest
from conftest import PROJECT_ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from prefect.client.schemas.objects import State
from prefect.client.schemas.responses import (
    OrchestrationResult,
    SetStateStatus,
    StateAbortDetails,
    StateAcceptDetails,
)
from prefect.context import FlowRunContext
from prefect.exceptions import Abort, Pause
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Pending, Suspended

from flows import prefect_compat as compat


def changed(internal: str, what: str) -> str:
    return f"Prefect {prefect.__version__} changed {internal}: {what}; see flows/prefect_compat.py"


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_installed_prefect_is_the_pinned_tested_range() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pinned = [Requirement(d) for d in project["dependencies"] if Requirement(d).name == "prefect"]
    assert [str(r.specifier) for r in pinned] == [str(SpecifierSet(compat.TESTED_PREFECT))], (
        f"pyproject.toml pins prefect {[str(r.specifier) for r in pinned]}, the canaries were run with "
        f"{compat.TESTED_PREFECT}"
    )
    assert prefect.__version__ in SpecifierSet(compat.TESTED_PREFECT), (
        f"Prefect {prefect.__version__} is outside the tested range {compat.TESTED_PREFECT}: run these "
        "canaries and the prefect tier with it, then widen TESTED_PREFECT and pyproject.toml"
    )


def test_flow_run_suspension_request() -> None:
    internal = "prefect._flow_run_suspension.FlowRunSuspensionRequest"
    request = compat.FlowRunSuspensionRequest()
    for method in ("mark_requested", "is_requested", "raise_if_requested"):
        assert callable(getattr(request, method, None)), changed(internal, f"it has no method {method}()")
    assert not request.is_requested(), changed(internal, "a new request is already marked")
    state = Suspended(pause_key="k")
    request.mark_requested(state)
    with pytest.raises(Pause) as raised:
        request.raise_if_requested()
    assert raised.value.state is state, changed(internal, "a marked request no longer raises Pause(state)")

    field = FlowRunContext.model_fields.get("flow_run_suspension_request")
    assert field is not None, changed("FlowRunContext.flow_run_suspension_request", "the field is gone")
    assert field.default_factory is compat.FlowRunSuspensionRequest, changed(
        "FlowRunContext.flow_run_suspension_request", f"its default is {field.default_factory!r}"
    )
    context = FlowRunContext.model_construct(flow_run_suspension_request=request)
    compat.detach_suspension_request(context)
    assert not context.flow_run_suspension_request.is_requested(), changed(
        "FlowRunContext.flow_run_suspension_request", "a fresh request assigned to it is marked"
    )


def test_suspend_flow_run_ends_the_process_with_pause_carrying_the_suspended_state() -> None:
    state = Suspended(pause_key="k")
    assert compat.suspended_state(Pause(state=state)) is state, changed(
        "prefect.exceptions.Pause", "it no longer carries `state`"
    )
    source = inspect.getsource(prefect.flow_runs.suspend_flow_run)
    assert "raise Pause(state=state)" in source, changed(
        "prefect.flow_runs.suspend_flow_run", "it no longer exits the process with Pause(state=<Suspended>)"
    )


def test_maintain_concurrency_lease() -> None:
    internal = "prefect.concurrency._leases.maintain_concurrency_lease"
    assert parameters(compat.maintain_concurrency_lease) == [
        "lease_id",
        "lease_duration",
        "raise_on_lease_renewal_failure",
        "suppress_warnings",
    ], changed(internal, f"its parameters are {parameters(compat.maintain_concurrency_lease)}")


def test_the_engine_renews_a_deployment_lease_for_300_seconds() -> None:
    source = inspect.getsource(prefect.flow_engine)
    durations = re.findall(r"maintain_concurrency_lease\(\s*lease_id,\s*(\d+)", source)
    assert durations and set(durations) == {str(compat.ENGINE_LEASE_SECONDS)}, changed(
        "prefect.flow_engine",
        f"it renews a deployment's lease with durations {durations}, not {compat.ENGINE_LEASE_SECONDS} s",
    )


@pytest.fixture
def unreachable_api() -> Iterator[None]:
    """An API URL nobody answers: a lease renewal fails and retries, never reaching a server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        yield


def test_the_lease_renewal_thread_and_its_stop_event(unreachable_api: None) -> None:
    internal = "the lease renewal thread of prefect.concurrency._leases"
    lease = uuid.uuid4()
    with compat.maintain_concurrency_lease(lease, compat.ENGINE_LEASE_SECONDS, suppress_warnings=True):
        threads = {t.name: t for t in threading.enumerate()}
        thread = threads.get(f"{compat.LEASE_THREAD_PREFIX}{lease}")
        assert thread is not None, changed(
            internal, f"no thread is named {compat.LEASE_THREAD_PREFIX}<lease id>: {sorted(threads)}"
        )
        target = getattr(thread, "_target", None)
        assert callable(target), changed(internal, "threading.Thread._target is not its target function")
        handler = inspect.getclosurevars(target).nonlocals.get("_run_with_failure_handler")
        assert callable(handler), changed(
            internal, "its target does not close over _run_with_failure_handler"
        )
        stop = inspect.getclosurevars(handler).nonlocals.get("stop_event")
        assert isinstance(stop, threading.Event), changed(
            internal, "_run_with_failure_handler has no stop_event"
        )
        assert compat.lease_renewal_stop_event(lease) is stop
        assert compat.stop_lease_renewal(lease) and stop.is_set()
        thread.join(timeout=10)
        assert not thread.is_alive(), changed(internal, "setting its stop_event does not end the renewal")
    assert not compat.stop_lease_renewal(uuid.uuid4())


class AnsweringClient:
    """Stands for a SyncPrefectClient whose server answers a state proposal with ``status``."""

    def __init__(self, status: SetStateStatus) -> None:
        self.status = status

    def set_flow_run_state(
        self, flow_run_id: uuid.UUID, state: State, force: bool = False
    ) -> OrchestrationResult:
        aborted = self.status is SetStateStatus.ABORT
        details = StateAbortDetails(reason="taken") if aborted else StateAcceptDetails()
        return OrchestrationResult(state=state.model_copy(), status=self.status, details=details)


def test_propose_state_sync() -> None:
    internal = "prefect.utilities.engine.propose_state_sync"
    assert parameters(compat.propose_state_sync) == ["client", "state", "flow_run_id", "force"], changed(
        internal, f"its parameters are {parameters(compat.propose_state_sync)}"
    )
    assert inspect.signature(compat.propose_state_sync).parameters["force"].default is False, changed(
        internal, "it forces the state by default"
    )
    accepted = compat.propose_state_sync(
        AnsweringClient(SetStateStatus.ACCEPT), Pending(), flow_run_id=uuid.uuid4()
    )
    assert isinstance(accepted, State) and accepted.is_pending(), changed(
        internal, f"an accepted proposal returns {accepted!r}, not the accepted state"
    )
    with pytest.raises(Abort):
        compat.propose_state_sync(AnsweringClient(SetStateStatus.ABORT), Pending(), flow_run_id=uuid.uuid4())


def test_cancelled_error_of_a_failed_lease_renewal() -> None:
    internal = "prefect._internal.concurrency.cancellation.CancelledError"
    error = compat.CancelledError
    assert issubclass(error, BaseException) and not issubclass(error, Exception), changed(
        internal, "it is no longer a BaseException outside Exception (an `except Exception` would stop it)"
    )


@pytest.mark.prefect
def test_a_slot_refused_while_the_limit_is_full_says_when_to_retry(prefect_api: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    internal = "prefect.concurrency._asyncio.ConcurrencySlotAcquisitionError"
    name = f"compat-canary-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with (
        concurrency(name, occupy=1, strict=True),
        pytest.raises(compat.ConcurrencySlotAcquisitionError) as refused,
        concurrency(name, occupy=1, strict=True, max_retries=0, raise_on_lease_renewal_failure=False),
    ):
        pytest.fail("got a slot of a full limit")
    wait = compat.retry_after(refused.value)
    cause = refused.value.__cause__
    assert wait is not None and wait > 0, changed(
        internal, f"its cause is {cause!r}, not the server's HTTP {compat.LOCKED} with Retry-After"
    )
    with (
        pytest.raises(compat.ConcurrencySlotAcquisitionError) as missing,
        concurrency(f"{name}-missing", occupy=1, strict=True, max_retries=0),
    ):
        pytest.fail("got a slot of a limit that does not exist")
    assert compat.retry_after(missing.value) is None
