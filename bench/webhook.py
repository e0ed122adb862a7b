#!/usr/bin/env python
"""The GitHub webhook receiver under a burst of signed pushes (issue 15): `hubploy webhook serve` as a
user runs it, in front of a private Prefect server whose lifecycle, prod-deploy and pr-validation
deployments are the real flows (no worker: their runs stay Scheduled, so only run creation is measured).
Each round sends N distinct signed pushes to staging, C at a time over loopback, and reports the
answers, the latency of each delivery, the runs created (one per push, none twice; a delivery answered
"accepted" gets its run after its answer) and the receiver's memory (VmRSS after the round, VmHWM peak).

    .venv/bin/python bench/webhook.py [--pushes 200] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PrefectStack, _free_port, _status_kb, machine, sandbox, say, table

HUBPLOY = str(Path(sys.executable).parent / "hubploy")
SECRET_BLOCK = "bench-webhook-secret"


def deploy_real_flows(repo_url: str) -> dict[str, Any]:
    """The receiver's three deployments, from the real flows (their parameter schemas are enforced)."""
    from flows.lifecycle import lifecycle
    from flows.pr_validation import pr_validation
    from flows.prod_deploy import prod_deploy

    return {
        f"{fn.name}/{name}": fn.to_deployment(name=name, parameters={"repo_url": repo_url}).apply()
        for fn, name in (
            (lifecycle, "lifecycle"),
            (prod_deploy, "prod-deploy"),
            (pr_validation, "pr-validation"),
        )
    }


def signed_push(url: str, secret: str, delivery: str, sha: str, client: Any) -> tuple[int, str, float]:
    body = json.dumps(
        {
            "ref": "refs/heads/staging",
            "before": "0" * 39 + "1",
            "after": sha,
            "repository": {"full_name": "bench/deploy"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    start = time.perf_counter()
    response = client.post(
        url,
        content=body,
        timeout=60,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature,
        },
    )
    started = response.json().get("status", "") if response.status_code < 500 else ""
    return response.status_code, started, time.perf_counter() - start


def runs_for(deliveries: list[str], deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterIdempotencyKey,
    )

    keys = [f"github-{d}" for d in deliveries]
    found: list[Any] = []
    with get_client(sync_client=True) as client:
        for start in range(0, len(keys), 100):  # the API answers at most 200 runs at once
            found += client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=keys[start : start + 100]),
                ),
                limit=200,
            )
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import httpx
    from prefect.blocks.system import Secret

    stack = PrefectStack(sandbox())
    stack.start_server()
    receiver = None
    try:
        ids = deploy_real_flows("git://127.0.0.1/bench.git")
        secret = secrets.token_hex(32)
        Secret(value=secret).save(SECRET_BLOCK, overwrite=True)
        port = _free_port()
        log = open(stack.home / "webhook.log", "w")  # noqa: SIM115 - the receiver's, for its lifetime
        receiver = subprocess.Popen(
            [HUBPLOY, "webhook", "serve", "--port", str(port), "--secret-block", SECRET_BLOCK],
            env={**os.environ, "PREFECT_API_URL": stack.api_url},
            cwd=stack.home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not _answers(url):
            if receiver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start; see {stack.home / 'webhook.log'}")
            time.sleep(0.2)
        say(f"receiver pid {receiver.pid}: {_status_kb(receiver.pid, 'VmRSS') / 1024:.1f} MB RSS at start")
        rows = []
        for round_number in range(1, args.rounds + 1):
            pushes = [(str(uuid.uuid4()), secrets.token_hex(20)) for _ in range(args.pushes)]
            with (
                httpx.Client(limits=httpx.Limits(max_connections=args.concurrency)) as client,
                ThreadPoolExecutor(args.concurrency) as pool,
            ):
                start = time.perf_counter()
                answers = list(pool.map(lambda p: signed_push(f"{url}/webhook", secret, *p, client), pushes))
                wall = time.perf_counter() - start
            statuses = Counter(f"{code} {status}" for code, status, _ in answers)
            latencies = [seconds for _, _, seconds in answers]
            runs = runs_for([d for d, _ in pushes], ids["hubploy-lifecycle/lifecycle"])
            deadline = time.monotonic() + 600  # deliveries answered "accepted" get their run a little later
            while len(runs) < args.pushes and time.monotonic() < deadline:
                time.sleep(2)
                runs = runs_for([d for d, _ in pushes], ids["hubploy-lifecycle/lifecycle"])
            all_runs = time.perf_counter() - start
            per_sha = Counter(r.parameters.get("sha") for r in runs)
            rows.append(
                [
                    round_number,
                    args.pushes,
                    args.concurrency,
                    f"{wall:.1f}",
                    f"{all_runs:.1f}",
                    f"{percentile(latencies, 0.5) * 1000:.0f}",
                    f"{percentile(latencies, 0.95) * 1000:.0f}",
                    f"{max(latencies) * 1000:.0f}",
                    ", ".join(f"{k} x{v}" for k, v in sorted(statuses.items())),
                    len(runs),
                    sum(n - 1 for n in per_sha.values()),
                    f"{_status_kb(receiver.pid, 'VmRSS') / 1024:.1f}",
                    f"{_status_kb(receiver.pid, 'VmHWM') / 1024:.1f}",
                ]
            )
            say(f"round {round_number}: {statuses}, {len(runs)} runs")
        print()
        print(json.dumps(machine()))
        print(
            table(
                rows,
                [
                    "round",
                    "pushes",
                    "at once",
                    "answered in s",
                    "all runs in s",
                    "p50 ms",
                    "p95 ms",
                    "max ms",
                    "answers",
                    "runs",
                    "duplicates",
                    "RSS MB",
                    "peak RSS MB",
                ],
            )
        )
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(timeout=30)
        stack.stop()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
