"""The process-local FIFO gate of flows/tasks/locks.py against a stand-in slot server: how many tasks hold
a slot at once, in which order they get it, how often the server is asked, and that no slot outlives the
tasks. The same gate against a real Prefect server is in tests/test_deploy_locks.py."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest
from helpers.threads import HANG, Occupancy, join, start, wait_until

from flows.tasks.locks import SlotGate


class Full(Exception):
    """The stand-in server refuses: the limit is full."""


class Missing(Exception):
    """The stand-in server refuses: no such limit."""


class StandInServer:
    """Global concurrency limits in memory, counting the requests and the slots held."""

    def __init__(self, **limits: int) -> None:
        self.limits = limits
        self.held: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()

    def bind(self) -> Callable[[], AbstractContextManager[object]]:
        return contextlib.nullcontext

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._lock:
            self.requests += 1
            if name not in self.limits:
                raise Missing(name)
            if self.held[name] >= self.limits[name]:
                raise Full(name)
            self.held[name] += 1
        try:
            yield
        finally:
            with self._lock:
                self.held[name] -= 1

    def retry_after(self, error: BaseException) -> float | None:
        return 0.01 if isinstance(error, Full) else None


def test_never_more_holders_than_slots_and_none_left_on_the_server() -> None:
    server = StandInServer(cluster=3)
    gate = SlotGate("cluster", server)
    occupancy = Occupancy()

    def task() -> None:
        with gate.slot(3):
            occupancy.hold(0.02)

    join([start(task) for _ in range(12)])
    assert occupancy.done == 12 and 1 <= occupancy.peak <= 3
    assert server.held["cluster"] == 0


def test_a_slot_left_goes_to_the_longest_waiting_task_without_asking_the_server() -> None:
    server = StandInServer(cluster=1)
    gate = SlotGate("cluster", server)
    holding, let_go, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with gate.slot(1):
            holding.set()
            let_go.wait(HANG)

    def waiter(n: int) -> None:
        with gate.slot(1):
            order.append(n)

    threads = [start(first)]
    assert holding.wait(HANG)
    for n in range(8):
        threads.append(start(waiter, n))
        wait_until(lambda queued=n + 1: gate.waiting() == queued)
    let_go.set()
    join(threads)
    assert order == list(range(8))
    assert server.requests == 1, "the slot went back to the server between two tasks of the process"
    assert server.held["cluster"] == 0


def test_a_full_limit_is_asked_again_until_another_process_leaves_it() -> None:
    server = StandInServer(cluster=1)
    gate = SlotGate("cluster", server)
    entered = threading.Event()

    def task() -> None:
        with gate.slot(1):
            entered.set()

    with server.hold("cluster"):  # another process holds the only slot
        thread = start(task)
        wait_until(lambda: server.requests >= 3)
        assert not entered.is_set()
    join([thread])
    assert entered.is_set() and server.held["cluster"] == 0


def test_an_exception_in_the_block_passes_the_slot_on_and_leaks_nothing() -> None:
    server = StandInServer(cluster=1)
    gate = SlotGate("cluster", server)
    with pytest.raises(RuntimeError, match="deploy failed"), gate.slot(1):
        raise RuntimeError("deploy failed")
    assert server.held["cluster"] == 0  # released on the server before the block's error propagates

    holding, let_go, entered = threading.Event(), threading.Event(), threading.Event()

    def failing() -> None:
        with contextlib.suppress(RuntimeError), gate.slot(1):
            holding.set()
            let_go.wait(HANG)
            raise RuntimeError("deploy failed")

    def waiter() -> None:
        with gate.slot(1):
            entered.set()

    threads = [start(failing)]
    assert holding.wait(HANG)
    threads.append(start(waiter))
    wait_until(lambda: gate.waiting() == 1)
    let_go.set()
    join(threads)
    assert entered.is_set() and server.held["cluster"] == 0


def test_a_missing_limit_is_an_error_for_every_waiting_task() -> None:
    gate = SlotGate("absent", StandInServer())
    with pytest.raises(Missing), gate.slot(1):
        pytest.fail("entered a slot of a limit that does not exist")
    errors: list[BaseException] = []

    def task() -> None:
        try:
            with gate.slot(1):
                pass
        except Missing as exc:
            errors.append(exc)

    join([start(task) for _ in range(4)])
    assert len(errors) == 4
