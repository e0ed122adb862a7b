"""Threads for the lock tests: start them in a copy of this context, join them, wait for a condition
(each with a generous timeout, there only so that a broken lock fails instead of hanging), and count
how many hold a slot at once."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

HANG = 120  # seconds: only a guard against a hang


def start(target: Callable[..., None], *args: Any) -> threading.Thread:
    """A thread running ``target`` in a copy of this context (whose Prefect settings name the test server)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), daemon=True)
    thread.start()
    return thread


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=HANG)
        assert not thread.is_alive(), "a thread waiting for a slot hung"


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


class Occupancy:
    """Counts the holders of a slot at the same time, and the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.done = 0

    def hold(self, seconds: float) -> None:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)
        time.sleep(seconds)
        with self._lock:
            self.current -= 1
            self.done += 1
