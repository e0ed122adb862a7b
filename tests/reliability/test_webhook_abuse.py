"""Webhook abuse (issue 8) against the real receiver (`hubploy webhook serve`, secret from a Prefect
Secret block) and the real Prefect server, with stand-in deployments (tests/test_webhook.py's): every
refused delivery starts nothing, a replay starts nothing more, and a flood of 200 signed pushes at once,
with redeliveries, forged deliveries and pushes that need no run mixed in, is answered without one
error and gives exactly 200 runs, one per push (issue 15); a second flood shows the receiver's memory
bounded. bench/webhook.py measures the same burst."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

# The receiver harness and stand-in deployments of the webhook tests, reused as they are.
from prefect.blocks.system import Secret
from test_webhook import (  # noqa: F401
    LIFECYCLE,
    SECRET,
    SECRET_BLOCK,
    all_runs,
    cli_receiver_process,
    deliver,  # (fixtures)
    deployment_ids,
    push,
    receiver,
    runs_for,
    sha,
    signature,
)

pytestmark = [pytest.mark.reliability, pytest.mark.prefect]

Ids = dict[str, uuid.UUID]


def _no_runs_for(ids: Ids, commits: set[str]) -> list:
    return [
        r
        for r in all_runs(ids)
        if r.parameters.get("sha") in commits or r.parameters.get("before") in commits
    ]


def test_refused_deliveries_start_nothing(receiver: str, deployment_ids: Ids) -> None:  # noqa: F811
    commits: dict[str, str] = {}

    def body(case: str, branch: str = "staging") -> bytes:
        commits.setdefault(case, sha())
        return json.dumps(push(branch, commits[case])).encode()

    def raw(case: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        base = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": str(uuid.uuid4()),
        }
        return httpx.post(f"{receiver}/webhook", content=content, headers={**base, **headers}, timeout=60)

    signed_elsewhere = body("body-swapped")
    cases: dict[str, tuple[httpx.Response, set[int]]] = {
        "no signature": (deliver(receiver, "push", body=body("no signature"), sign=None), {401}),
        "empty signature": (deliver(receiver, "push", body=body("empty signature"), sign=""), {401}),
        "garbage signature": (
            deliver(receiver, "push", body=body("garbage signature"), sign="sha256=zz"),
            {401},
        ),
        "sha1 signature only": (
            raw("sha1", body("sha1 signature only"), {"X-Hub-Signature": "sha1=" + "0" * 40}),
            {401},
        ),
        "signed with another secret": (
            deliver(
                receiver,
                "push",
                body=body("signed with another secret"),
                sign=signature(body("signed with another secret"), "guess"),
            ),
            {401},
        ),
        "signature of another body": (
            deliver(receiver, "push", body=body("body-swapped2"), sign=signature(signed_elsewhere)),
            {401},
        ),
        "signature upper-case hex": (
            deliver(receiver, "push", body=body("upper"), sign=signature(body("upper")).upper()),
            {401},
        ),
        "malformed json": (deliver(receiver, "push", body=body("malformed json")[:-2]), {400}),
        "json list": (
            deliver(receiver, "push", body=json.dumps([push("staging", sha())]).encode()),
            {400, 202},
        ),
        "json string": (deliver(receiver, "push", body=b'"refs/heads/staging"'), {400, 202}),
        "empty body": (deliver(receiver, "push", body=b""), {400}),
        "not utf-8": (deliver(receiver, "push", body=b"\xff\xfe{\x00}"), {400}),
        "oversize": (deliver(receiver, "push", body=body("oversize") + b" " * (1 << 20) * 2), {413}),
        "wrong event": (
            deliver(receiver, "release", push("staging", commits.setdefault("wrong event", sha()))),
            {202},
        ),
        "no event header": (
            raw(
                "no event",
                body("no event header"),
                {"X-GitHub-Event": "", "X-Hub-Signature-256": signature(body("no event header"))},
            ),
            {400, 202},
        ),
        "wrong branch": (
            deliver(receiver, "push", push("feature/x", commits.setdefault("wrong branch", sha()))),
            {202},
        ),
        "branch prefix trick": (
            deliver(receiver, "push", push("staging-old", commits.setdefault("prefix", sha()))),
            {202},
        ),
        "ref without heads": (
            deliver(
                receiver, "push", {**push("staging", commits.setdefault("ref", sha())), "ref": "staging"}
            ),
            {202, 400},
        ),
        "after not a sha": (deliver(receiver, "push", push("staging", "--upload-pack=touch /tmp/x")), {400}),
        "after missing": (deliver(receiver, "push", {"ref": "refs/heads/staging"}), {202, 400}),
    }
    for case, (response, allowed) in cases.items():
        assert response.status_code in allowed, (case, response.status_code, response.text)
        if response.status_code == 202:
            assert response.json()["status"] == "ignored", (case, response.text)
        assert SECRET not in response.text and "Traceback" not in response.text
    assert _no_runs_for(deployment_ids, set(commits.values()) | {"--upload-pack=touch /tmp/x"}) == []


def test_replay_of_one_delivery_starts_one_run(receiver: str, deployment_ids: Ids) -> None:  # noqa: F811
    after, delivery = sha(), str(uuid.uuid4())
    first = deliver(receiver, "push", push("staging", after), delivery=delivery)
    assert first.status_code == 202 and first.json()["status"] == "started", first.text
    replays = [deliver(receiver, "push", push("staging", after), delivery=delivery) for _ in range(5)]
    assert {(r.status_code, r.json()["status"]) for r in replays} == {(200, "duplicate")}
    # a replay of the delivery id with another (validly signed) payload is still the same delivery
    other = sha()
    swapped = deliver(receiver, "push", push("staging", other), delivery=delivery)
    assert swapped.status_code in (200, 202) and swapped.json()["status"] in ("duplicate", "started")
    if swapped.json()["status"] == "started":  # then it must be the first run, found by its idempotency key
        assert swapped.json()["flow_run_id"] == first.json()["flow_run_id"]
    [(name, run)] = runs_for(deployment_ids, after)
    assert name == LIFECYCLE and run.idempotency_key == f"github-{delivery}"
    assert runs_for(deployment_ids, other) == []


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _flood(url: str, deployment_ids: Ids, seed: int) -> tuple[Counter, list[str]]:  # noqa: F811
    """200 distinct signed pushes to staging at once (32 at a time, loopback), with 40 redeliveries of
    them, 30 forgeries and 30 pushes to a branch that needs no run mixed in. Asserts what every one was
    answered and that each push to staging got exactly one lifecycle run; returns the answers and the
    commits of the pushes."""
    pushes = [(str(uuid.uuid4()), sha()) for _ in range(200)]
    redeliveries = random.Random(seed).sample(pushes, 40)
    forged = [(str(uuid.uuid4()), sha()) for _ in range(30)]
    elsewhere = [(str(uuid.uuid4()), sha()) for _ in range(30)]
    jobs = (
        [("staging", d) for d in pushes + redeliveries]
        + [("forged", d) for d in forged]
        + [("feature", d) for d in elsewhere]
    )
    random.Random(seed + 1).shuffle(jobs)

    def send(job: tuple[str, tuple[str, str]], client: httpx.Client) -> httpx.Response:
        kind, (delivery, commit) = job
        branch = "feature/x" if kind == "feature" else "staging"
        body = json.dumps(push(branch, commit)).encode()
        sign = signature(body, "forged") if kind == "forged" else signature(body)
        return deliver(url, "push", body=body, delivery=delivery, client=client, sign=sign)

    with httpx.Client(limits=httpx.Limits(max_connections=32)) as client, ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda j: send(j, client), jobs))  # sent once each: no error is retried
    answers = Counter(
        (kind, r.status_code, r.json().get("status")) for (kind, _), r in zip(jobs, responses, strict=True)
    )
    assert answers[("forged", 401, None)] == 30, answers
    assert answers[("feature", 202, "ignored")] == 30, answers
    staging = {(status, code) for (kind, status, code) in answers if kind == "staging"}
    assert staging <= {(202, "started"), (202, "accepted"), (200, "duplicate")}, answers  # 0 errors
    run_ids: dict[str, set[str]] = {}
    for (kind, (delivery, _)), response in zip(jobs, responses, strict=True):
        if kind == "staging" and response.json()["status"] == "started":
            run_ids.setdefault(delivery, set()).add(response.json()["flow_run_id"])
    assert all(len(ids) == 1 for ids in run_ids.values()), "a redelivery got a second run"

    commits = {c for _, c in pushes}

    def runs_of_these_pushes() -> list[Any]:
        return [r for r in all_runs(deployment_ids) if r.parameters.get("sha") in commits]

    deadline = time.monotonic() + 600  # a delivery answered "accepted" gets its run when the server answers
    while len(runs := runs_of_these_pushes()) < 200:
        assert time.monotonic() < deadline, f"{len(runs)} runs for 200 pushes after 600 s"
        time.sleep(2)
    time.sleep(5)  # nothing more comes: a second run of a push would show now
    runs = runs_of_these_pushes()
    assert len(runs) == 200, f"{len(runs)} runs for 200 pushes"
    assert Counter(r.parameters["sha"] for r in runs).most_common(1)[0][1] == 1, "a commit got two runs"
    assert {r.idempotency_key for r in runs} == {f"github-{d}" for d, _ in pushes}
    assert {str(r.id) for r in runs} >= set().union(*run_ids.values())
    assert _no_runs_for(deployment_ids, {c for _, c in forged + elsewhere}) == []
    return answers, sorted(commits)


def test_two_floods_of_200_pushes_start_one_run_each_without_error_in_bounded_memory(
    deployment_ids: Ids, tmp_path: Path
) -> None:  # noqa: F811
    """Each push to staging needs its own lifecycle run: the receiver never merges pushes (a newer run
    supersedes older ones when it reaches its approval, in the lifecycle). The second flood measures the
    receiver's memory after the first has warmed it up."""
    Secret(value=SECRET).save(SECRET_BLOCK, overwrite=True)
    with cli_receiver_process(tmp_path) as (url, proc):
        _flood(url, deployment_ids, seed=8)
        warm = _rss_mb(proc.pid)
        answers, _ = _flood(url, deployment_ids, seed=18)
        grown = _rss_mb(proc.pid) - warm
    print(
        f"\nreceiver RSS {warm:.1f} MB after the first flood, {grown:+.1f} MB after the second; "
        f"answers {answers}"
    )
    assert grown < 25, f"the receiver grew by {grown:.1f} MB in a flood of 300 deliveries"
