"""The parts of the approval hot window (flows/hot_window.py) that lean on Prefect internals, against
Prefect's own code and a real server: the deployment concurrency lease renewal that a suspension
revokes, and the window setting. The hot window end to end is in tests/test_lifecycle.py."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import uuid4

import pytest
from prefect._internal.concurrency.cancellation import CancelledError
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.logging import disable_run_logger

from flows.approval import HOT_WINDOW, HOT_WINDOW_ENV, hot_window
from flows.hot_window import LEASE_SECONDS, _stop_lease_renewal


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
    with (pytest.raises(CancelledError),
          maintain_concurrency_lease(uuid4(), LEASE_SECONDS, raise_on_lease_renewal_failure=True)):
        wait_for_cancellation(60)
    cancelled_after = time.monotonic() - started

    lease = uuid4()
    with maintain_concurrency_lease(lease, LEASE_SECONDS, raise_on_lease_renewal_failure=True):
        assert _stop_lease_renewal(lease)
        wait_for_cancellation(2 * cancelled_after + 2)  # no CancelledError


def test_an_unknown_lease_renewal_cannot_be_stopped() -> None:
    assert not _stop_lease_renewal(uuid4())


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
