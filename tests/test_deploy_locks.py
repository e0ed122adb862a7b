"""The deploy locks (flows/tasks/locks.py) against a real Prefect server: ``process_slot`` (the
process-local FIFO in front of a cluster's global concurrency limit) and ``deploy_locks``; the gate alone,
against a stand-in server, is in tests/test_locks_gate.py. Behaviour only; the timing is in bench/locks.py.
Every wait has a generous timeout, there only so that a broken gate fails instead of hanging."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import multiprocessing
import secrets
import threading
import time
from multiprocessing.sharedctypes import Synchronized
from types import SimpleNamespace
from typing import Any

import pytest
from helpers.threads import HANG, Occupancy, join, start, wait_until

from hubploy.config.models import Cluster

pytestmark = pytest.mark.prefect


def _limit_name() -> str:
    return f"cluster-test-{secrets.token_hex(4)}"


def _active_slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def _queued(name: str) -> int:
    from flows.tasks.locks import gate

    return gate(name).waiting()


def test_never_more_holders_than_slots_and_none_left_on_the_server(prefect_api: str) -> None:
    from flows.tasks.locks import ensure_limit, process_slot

    name = _limit_name()
    ensure_limit(name, 3)
    occupancy = Occupancy()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with process_slot(name, 3):
                occupancy.hold(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    join([start(one) for _ in range(12)])
    assert not errors, errors
    assert occupancy.done == 12
    assert occupancy.peak <= 3
    assert _active_slots(name) == 0


def test_waiting_tasks_of_a_process_get_the_slot_first_come_first_served(prefect_api: str) -> None:
    from flows.tasks.locks import ensure_limit, process_slot

    name = _limit_name()
    ensure_limit(name, 1)
    order: list[int] = []
    holding, let_go = threading.Event(), threading.Event()

    def first() -> None:
        with process_slot(name, 1):
            holding.set()
            let_go.wait(HANG)

    def waiter(n: int) -> None:
        with process_slot(name, 1):
            order.append(n)

    threads = [start(first)]
    assert holding.wait(HANG)
    for n in range(8):
        threads.append(start(waiter, n))
        wait_until(lambda queued=n + 1: _queued(name) == queued)  # n is queued behind 0 .. n-1
    let_go.set()
    join(threads)
    assert order == list(range(8))
    assert _active_slots(name) == 0


def test_an_exception_in_the_block_passes_the_slot_on_and_leaks_nothing(prefect_api: str) -> None:
    from flows.tasks.locks import ensure_limit, process_slot

    name = _limit_name()
    ensure_limit(name, 1)
    with pytest.raises(RuntimeError, match="deploy failed"), process_slot(name, 1):
        raise RuntimeError("deploy failed")
    assert _active_slots(name) == 0  # released on the server before the block's error propagates

    entered = threading.Event()
    holding, let_go = threading.Event(), threading.Event()

    def failing() -> None:
        with contextlib.suppress(RuntimeError), process_slot(name, 1):
            holding.set()
            let_go.wait(HANG)
            raise RuntimeError("deploy failed")

    def waiter() -> None:
        with process_slot(name, 1):
            entered.set()

    threads = [start(failing)]
    assert holding.wait(HANG)
    threads.append(start(waiter))
    wait_until(lambda: _queued(name) == 1)
    let_go.set()
    join(threads)
    assert entered.is_set()
    assert _active_slots(name) == 0


def test_a_missing_limit_is_an_error_for_every_waiting_task(prefect_api: str) -> None:
    from flows.prefect_compat import ConcurrencySlotAcquisitionError
    from flows.tasks.locks import process_slot

    name = _limit_name()  # never created
    with pytest.raises(ConcurrencySlotAcquisitionError, match="must be created"), process_slot(name, 1):
        pytest.fail("entered a slot of a limit that does not exist")

    errors: list[BaseException] = []

    def one() -> None:
        try:
            with process_slot(name, 1):
                pass
        except ConcurrencySlotAcquisitionError as exc:
            errors.append(exc)

    join([start(one) for _ in range(4)])
    assert len(errors) == 4


def _hold_in_threads(
    name: str, limit: int, threads: int, current: Synchronized, peak: Synchronized, done: Synchronized
) -> None:
    """In a spawned process: ``threads`` threads each hold a slot of ``name`` for a moment."""
    from flows.tasks.locks import process_slot

    def one() -> None:
        with process_slot(name, limit):
            with current.get_lock():
                current.value += 1
                peak.value = max(peak.value, current.value)
            time.sleep(0.1)
            with current.get_lock():
                current.value -= 1
        with done.get_lock():
            done.value += 1

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_the_server_limit_bounds_two_processes_together(prefect_api: str) -> None:
    from flows.tasks.locks import ensure_limit

    name = _limit_name()
    ensure_limit(name, 3)
    spawn = multiprocessing.get_context("spawn")  # PREFECT_API_URL is in the environment it inherits
    current, peak, done = spawn.Value("i", 0), spawn.Value("i", 0), spawn.Value("i", 0)
    processes = [
        spawn.Process(target=_hold_in_threads, args=(name, 3, 6, current, peak, done)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=HANG)
        assert process.exitcode == 0
    assert done.value == 12
    assert peak.value <= 3
    assert _active_slots(name) == 0


LOG = logging.getLogger("test_deploy_locks")


def _hub(cluster: str) -> Any:
    """Just what deploy_locks reads of a hub: its cluster (named by the kube context)."""
    kubeconfig = {"filename": "kubeconfig.yaml", "context": cluster}
    cluster_config = Cluster(provider="kubeconfig", kubeconfig=kubeconfig)
    return SimpleNamespace(config=SimpleNamespace(cluster=cluster_config))


def _record_server_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The names of every ``concurrency`` request the deploy locks make, in order."""
    from flows.tasks import locks

    asked: list[Any] = []
    real_concurrency = locks.concurrency

    def recorded(names: Any, **kwargs: Any) -> Any:
        asked.append(names)
        return real_concurrency(names, **kwargs)

    monkeypatch.setattr(locks, "concurrency", recorded)
    return asked


def test_a_run_waiting_for_its_release_lock_holds_no_cluster_slot(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.tasks.locks import deploy_locks, limit_name

    cluster = f"test-{secrets.token_hex(4)}"
    repo: Any = SimpleNamespace(settings=SimpleNamespace(cluster_concurrency=2))
    busy, other = f"busy-{cluster}", f"other-{cluster}"
    holding, let_go, second_in = threading.Event(), threading.Event(), threading.Event()
    asked = _record_server_requests(monkeypatch)

    def first() -> None:
        with deploy_locks(repo, _hub(cluster), busy, LOG) as slot, slot():
            holding.set()
            let_go.wait(HANG)

    def same_release() -> None:
        with deploy_locks(repo, _hub(cluster), busy, LOG) as slot, slot():
            second_in.set()

    threads = [start(first)]
    assert holding.wait(HANG)
    threads.append(start(same_release))
    wait_until(lambda: asked.count([limit_name("deploy", busy)]) == 2)  # it waits for the release lock
    entered_other = threading.Event()

    def other_release() -> None:
        with deploy_locks(repo, _hub(cluster), other, LOG) as slot, slot():
            entered_other.set()

    threads.append(start(other_release))
    assert entered_other.wait(HANG), (
        "a run waiting for its release lock blocked another release's cluster slot"
    )
    assert not second_in.is_set()
    let_go.set()
    join(threads)
    assert second_in.is_set()
    assert _active_slots(limit_name("cluster", cluster)) == 0


def test_a_fleet_takes_its_release_locks_once_and_its_tasks_reuse_them(
    prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.tasks.locks import limit_name, release_lock, release_locks

    releases = [f"fleet-{secrets.token_hex(3)}-{i}" for i in range(3)]
    asked = _record_server_requests(monkeypatch)
    outside = contextvars.copy_context()  # another run: it holds none of the fleet's locks
    other_in = threading.Event()

    def other_run() -> None:
        with release_lock(releases[1]):
            other_in.set()

    with release_locks(releases):
        assert asked == [sorted(limit_name("deploy", r) for r in releases)]
        assert all(_active_slots(limit_name("deploy", r)) == 1 for r in releases)
        inside: list[bool] = []

        def task_of_the_fleet() -> None:
            with release_lock(releases[2]):
                inside.append(True)

        join([start(task_of_the_fleet)])
        assert inside == [True] and len(asked) == 1, "a task of the fleet asked the server again"
        thread = threading.Thread(target=outside.run, args=(other_run,), daemon=True)
        thread.start()
        wait_until(lambda: len(asked) == 2)
        time.sleep(0.5)
        assert not other_in.is_set(), "another run got a release lock the fleet holds"
    join([thread])
    assert other_in.is_set()
    assert all(_active_slots(limit_name("deploy", r)) == 0 for r in releases)
