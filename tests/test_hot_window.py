"""The parts of the approval hot window (flows/hot_window.py) that lean on Prefect internals, against
Prefect's own code and a real server: claiming a resumed run against a worker, the deployment
concurrency lease renewal that a suspension revokes, and the window setting. The hot window end to end
is in tests/test_lifecycle.py."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import uuid4

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import Abort
from prefect.logging import disable_run_logger
from prefect.states import Pending, Running, Scheduled

from flows.approval import HOT_WINDOW, HOT_WINDOW_ENV, hot_window
from flows.hot_window import _claim
from flows.prefect_compat import (
    ENGINE_LEASE_SECONDS,
    CancelledError,
    maintain_concurrency_lease,
    propose_state_sync,
    stop_lease_renewal,
)


@flow(name="hot-window-claim")
def resumed() -> None:
    """Stands for a resumed lifecycle run: a Scheduled flow run that a worker may pick up."""


@pytest.mark.prefect
def test_the_claim_of_a_resumed_run_excludes_a_worker(prefect_api: str) -> None:
    with get_client(sync_client=True) as client:
        claimed = client.create_flow_run(resumed, state=Scheduled())
        assert _claim(client, claimed.id).is_running()
        with pytest.raises(Abort):  # what a worker's _propose_pending_state gets: it starts no process
            propose_state_sync(client, Pending(), flow_run_id=claimed.id)

        taken = client.create_flow_run(resumed, state=Scheduled())
        assert propose_state_sync(client, Pending(), flow_run_id=taken.id).is_pending()  # a worker was first
        assert _claim(client, taken.id) is None
        # why the claim proposes Pending first: Running alone would be accepted next to the worker's run
        assert client.set_flow_run_state(taken.id, Running()).status == SetStateStatus.ACCEPT


def wait_for_cancellation(seconds: float) -> None:
    """Run Python code for ``seconds``: an exception injected into this thread lands between two
    instructions, and is raised from here."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(0.05)


@pytest.mark.prefect
def test_a_revoked_lease_cancels_the_waiting_flow_unless_its_renewal_is_stopped(prefect_api: str) -> None:
    # A lease unknown to the server answers 410 Gone, as the lease of a suspended run does. The engine
    # renews a deployment's lease this way (flow_engine: raise_on_lease_renewal_failure=True); the first
    # renewal is immediate, so the failure shows within the client's retries instead of 225 s.
    started = time.monotonic()
    with (
        pytest.raises(CancelledError),
        maintain_concurrency_lease(uuid4(), ENGINE_LEASE_SECONDS, raise_on_lease_renewal_failure=True),
    ):
        wait_for_cancellation(60)
    cancelled_after = time.monotonic() - started

    lease = uuid4()
    with maintain_concurrency_lease(lease, ENGINE_LEASE_SECONDS, raise_on_lease_renewal_failure=True):
        assert stop_lease_renewal(lease)
        wait_for_cancellation(2 * cancelled_after + 2)  # no CancelledError


def test_an_unknown_lease_renewal_cannot_be_stopped() -> None:
    assert not stop_lease_renewal(uuid4())


def test_hot_window_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOT_WINDOW_ENV, raising=False)
    assert hot_window() == HOT_WINDOW == timedelta(minutes=15)
    monkeypatch.setenv(HOT_WINDOW_ENV, "2.5")
    assert hot_window() == timedelta(seconds=2.5)
    monkeypatch.setenv(HOT_WINDOW_ENV, "0")
    assert hot_window() == timedelta(0)
    monkeypatch.setenv(HOT_WINDOW_ENV, "-3")
    assert hot_window() == timedelta(0)
    monkeypatch.setenv(HOT_WINDOW_ENV, "soon")
    with disable_run_logger():
        assert hot_window() == HOT_WINDOW
