#!/usr/bin/env python
"""Micro-benchmark of the cluster lock in a fleet deploy, without helm (CPU-light, so robust to a
busy machine): N tasks in one flow, each holding a slot of a `cluster_concurrency`-slot global
concurrency limit for HOLD seconds, as deploy_hub does. Ideal wall time: ceil(N / slots) * HOLD.

    .venv/bin/python bench/locks.py [--tasks 16] [--slots 4] [--hold 1.0]

Variants: `server only` (every task asks the Prefect server for the slot and sleeps its Retry-After
when refused: what deploy_locks does), `local queue + server` (a process-local semaphore of the same
size in front of it) and `local only` (no server limit: the cost of the tasks themselves).
Starts a private Prefect server unless PREFECT_API_URL answers.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PrefectStack, sandbox, say, table, token

VARIANTS = ("server only", "local queue + server", "own polling", "local queue + own polling",
            "local only (no server limit)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    stack = PrefectStack(sandbox())
    stack.start_server()
    try:
        from prefect import flow, task
        from prefect.concurrency.sync import concurrency
        from prefect.futures import wait
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.tasks.deploy import ensure_limit

        local_slots: dict[str, threading.BoundedSemaphore] = {}
        guard = threading.Lock()

        def local_queue(name: str) -> threading.BoundedSemaphore:
            with guard:
                return local_slots.setdefault(name, threading.BoundedSemaphore(args.slots))

        from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

        @contextlib.contextmanager
        def polled(name: str) -> Iterator[None]:
            """The server slot, asked without Prefect's serialised Retry-After wait: our own short backoff."""
            delay = 0.05
            with contextlib.ExitStack() as stack:
                while True:
                    try:
                        stack.enter_context(concurrency(name, occupy=1, strict=True, max_retries=0))
                        break
                    except ConcurrencySlotAcquisitionError as exc:
                        cause = exc.__cause__
                        if getattr(getattr(cause, "response", None), "status_code", None) != 423:
                            raise
                    time.sleep(delay + random.uniform(0, delay))
                    delay = min(delay * 2, 1.0)
                yield

        @task
        def hold(name: str, variant: str, seconds: float) -> None:
            queue = local_queue(name) if variant not in ("server only", "own polling") else contextlib.nullcontext()
            if variant == "local only (no server limit)":
                server: Any = contextlib.nullcontext()
            elif "polling" in variant:
                server = polled(name)
            else:
                server = concurrency(name, occupy=1, strict=True)
            with queue, server:
                time.sleep(seconds)

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=16))
        def fleet(name: str, variant: str) -> None:
            wait([hold.submit(name, variant, args.hold) for _ in range(args.tasks)])

        rows = []
        ideal = math.ceil(args.tasks / args.slots) * args.hold
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for n in range(args.rounds):
                for label in VARIANTS:
                    name = f"cluster-bench-{token()}"
                    ensure_limit(name, args.slots)
                    start = time.perf_counter()
                    fleet(name, label)
                    took = time.perf_counter() - start
                    say(f"round {n + 1} {label}: {took:.1f} s")
                    rows.append((n + 1, label, f"{took:.1f} s", f"{ideal:.1f} s", f"{took / ideal:.2f}"))
        print(table(rows, ("round", "variant", "wall time", "ideal", "wall / ideal")))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
