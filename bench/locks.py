#!/usr/bin/env python
"""Micro-benchmark of the cluster lock in a fleet deploy, without helm (CPU-light, so robust to a
busy machine): N tasks in one flow, each holding a slot of a `cluster_concurrency`-slot global
concurrency limit for HOLD seconds, as deploy_hub does. Ideal wall time: ceil(N / slots) * HOLD.
A handoff is the time from the k-th block's end to the (k + slots)-th block's start: how long a freed
slot stays unused (ideal: 0; a slot first acquired late counts here too).

    .venv/bin/python bench/locks.py [--tasks 16] [--slots 4] [--hold 1.0] [--database sqlite|postgres]

Variants: `server only` (every task asks the Prefect server for the slot and sleeps its Retry-After
when refused: what deploy_locks did), `local queue + server` (a process-local semaphore of the same
size in front of it: each handoff is still a server release then a server acquire), the same two with
`own polling`, `process_slot` (what deploy_locks does: a process-local FIFO whose keeper threads hold
the server slots and hand them from task to task without a server round trip) and `local only` (no
server limit: the cost of the tasks themselves).
Starts a private Prefect server (on SQLite, or on PostgreSQL with --database postgres) and counts the
server's answers by status: 503 is a database that was busy (SQLite: "database is locked").
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import random
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from common import PrefectStack, sandbox, say, table, token

STATUSES: collections.Counter[int] = collections.Counter()  # responses of the Prefect server, by status


def count_statuses() -> None:
    """Count every HTTP response this process gets (Prefect's clients are httpx clients)."""
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, *args: Any, **kwargs: Any) -> httpx.Response:
        response = sync_send(self, *args, **kwargs)
        STATUSES[response.status_code] += 1
        return response

    async def asend(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> httpx.Response:
        response = await async_send(self, *args, **kwargs)
        STATUSES[response.status_code] += 1
        return response

    httpx.Client.send, httpx.AsyncClient.send = send, asend  # type: ignore[method-assign]


VARIANTS = (
    "server only",
    "local queue + server",
    "own polling",
    "local queue + own polling",
    "process_slot (shipped)",
    "local only (no server limit)",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the Prefect server's database (default sqlite)",
    )
    args = parser.parse_args()

    stack = PrefectStack(sandbox(), database=args.database)
    stack.start_server()
    count_statuses()
    try:
        from prefect import flow, task
        from prefect.concurrency.sync import concurrency
        from prefect.futures import wait
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
        from prefect.task_runners import ThreadPoolTaskRunner

        from flows.tasks.locks import ensure_limit, process_slot

        local_slots: dict[str, threading.BoundedSemaphore] = {}
        guard = threading.Lock()

        def local_queue(name: str) -> threading.BoundedSemaphore:
            with guard:
                return local_slots.setdefault(name, threading.BoundedSemaphore(args.slots))

        from flows.prefect_compat import ConcurrencySlotAcquisitionError, retry_after

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
                        if retry_after(exc) is None:
                            raise
                    time.sleep(delay + random.uniform(0, delay))
                    delay = min(delay * 2, 1.0)
                yield

        @task
        def hold(name: str, variant: str, seconds: float) -> None:
            queue = local_queue(name) if "local" in variant else contextlib.nullcontext()
            if variant == "process_slot (shipped)":
                server: Any = process_slot(name, args.slots)
            elif variant == "local only (no server limit)":
                server = contextlib.nullcontext()
            elif "polling" in variant:
                server = polled(name)
            else:
                server = concurrency(name, occupy=1, strict=True)
            with queue, server:
                entered = time.perf_counter()
                time.sleep(seconds)
                held.append((entered, time.perf_counter()))

        @flow(task_runner=ThreadPoolTaskRunner(max_workers=16))
        def fleet(name: str, variant: str) -> None:
            wait([hold.submit(name, variant, args.hold) for _ in range(args.tasks)])

        held: list[tuple[float, float]] = []  # (entered, left) of each task's block, this round

        def handoffs() -> list[float]:
            """For each task after the first `slots`: from the k-th block's end to the (k+slots)-th start."""
            starts = sorted(entered for entered, _ in held)
            ends = sorted(left for _, left in held)
            return [start - end for start, end in zip(starts[args.slots :], ends, strict=False)]

        rows = []
        ideal = math.ceil(args.tasks / args.slots) * args.hold
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            for n in range(args.rounds):
                for label in VARIANTS:
                    name = f"cluster-bench-{token()}"
                    ensure_limit(name, args.slots)
                    held.clear()
                    STATUSES.clear()
                    start = time.perf_counter()
                    fleet(name, label)
                    took = time.perf_counter() - start
                    gaps = handoffs()
                    say(f"round {n + 1} {label}: {took:.1f} s")
                    rows.append(
                        (
                            n + 1,
                            label,
                            f"{took:.1f} s",
                            f"{ideal:.1f} s",
                            f"{took / ideal:.2f}",
                            f"{1000 * statistics.median(gaps):.0f} ms",
                            f"{1000 * max(gaps):.0f} ms",
                            STATUSES[503],
                            STATUSES[423],
                        )
                    )
        print(f"database: {args.database}")
        print(
            table(
                rows,
                (
                    "round",
                    "variant",
                    "wall time",
                    "ideal",
                    "wall / ideal",
                    "handoff median",
                    "handoff max",
                    "503 (busy)",
                    "423 (limit full)",
                ),
            )
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
