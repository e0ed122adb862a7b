"""`hubploy demo`: push a change to the example repository's staging branch, deliver it to the
webhook receiver exactly as GitHub would (signed), follow the lifecycle to the approval form, and
with --approve approve it and follow it to prod."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
import yaml

from hubploy.errors import HubployError
from hubploy.runner import run
from hubploy.triggers.stack import Stack

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State

DEMO_HUB = "minimal"
Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    run_name: str
    sha: str
    state: str
    message: str
    run_url: str


def push_change(stack: Stack) -> tuple[str, str]:
    """Commit a visible change to the demo hub on staging and push it; returns (before, after)."""
    work = stack.paths.demo_work
    if not (work / ".git").is_dir():
        raise HubployError(
            "the demo needs the example repository that `hubploy up` creates",
            hint="run `hubploy up` without --repo, or push to your own repo's staging branch",
        )
    env = {
        **stack.env,
        "GIT_AUTHOR_NAME": "hubploy demo",
        "GIT_AUTHOR_EMAIL": "demo@hubploy.invalid",
        "GIT_COMMITTER_NAME": "hubploy demo",
        "GIT_COMMITTER_EMAIL": "demo@hubploy.invalid",
    }
    before = run(["git", "rev-parse", "HEAD"], env=env, cwd=work).stdout.strip()
    path = work / "deployments" / DEMO_HUB / "config" / "common.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    values.setdefault("jupyterhub", {}).setdefault("hub", {}).setdefault("config", {}).setdefault(
        "JupyterHub", {}
    )["template_vars"] = {"announcement": f"hubploy demo change of {stamp}"}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    run(["git", "commit", "-q", "-am", f"demo: announcement of {stamp}"], env=env, cwd=work)
    run(["git", "push", "-q", "origin", "staging"], env=env, cwd=work)
    after = run(["git", "rev-parse", "HEAD"], env=env, cwd=work).stdout.strip()
    return before, after


def deliver_push(stack: Stack, before: str, after: str) -> str:
    """POST a signed GitHub push event to the receiver; returns the flow run id it started."""
    body = json.dumps(
        {
            "ref": "refs/heads/staging",
            "before": before,
            "after": after,
            "repository": {"full_name": "hubploy/demo-deployments", "clone_url": stack.repo_url},
        }
    ).encode()
    signature = "sha256=" + hmac.new(stack.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    delivery = str(uuid.uuid4())
    try:
        response = httpx.post(
            stack.webhook_url,
            content=body,
            timeout=30,
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": signature,
                "Content-Type": "application/json",
            },
        )
    except httpx.HTTPError as exc:
        raise HubployError(f"cannot reach the webhook receiver at {stack.webhook_url}: {exc}") from None
    answer = response.json() if response.status_code == 202 else {}
    if answer.get("status") == "accepted":  # a slow server: the receiver creates the run when it answers
        return _run_of_delivery(delivery)
    if "flow_run_id" not in answer:
        raise HubployError(f"the webhook receiver answered {response.status_code}: {response.text[:300]}")
    return str(answer["flow_run_id"])


def _run_of_delivery(delivery: str, timeout: float = 300) -> str:
    """The id of the run the receiver creates for ``delivery`` (found by its idempotency key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while not (
            runs := client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[f"github-{delivery}"])
                )
            )
        ):
            if time.monotonic() > deadline:
                raise HubployError(
                    f"the webhook receiver accepted the push but started no run in {timeout:.0f} s",
                    hint="see the receiver's log (logs/webhook.log)",
                )
            time.sleep(1)
    return str(runs[0].id)


def _wait(
    run_id: UUID, done: Callable[[State], bool], timeout: float, say: Say, what: str
) -> tuple[FlowRun, State]:
    """The flow run and its state once ``done(state)`` holds or the state is final."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    last = None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(run_id)
            state = flow_run.state
            name = state.name if state else "pending"
            if name != last:
                say(f"lifecycle run {flow_run.name}: {name}")
                last = name
            if state is not None and (done(state) or state.is_final()):
                return flow_run, state
            if time.monotonic() > deadline:
                raise HubployError(f"gave up waiting for {what} after {timeout:.0f} s (state {name})")
            time.sleep(1)


def demo(stack: Stack, *, approve: bool, say: Say = print, timeout: float = 900) -> DemoResult:
    before, after = push_change(stack)
    say(f"pushed {after[:12]} to staging of {stack.repo_url}")
    run_id = UUID(deliver_push(stack, before, after))
    run_url = f"{stack.ui_url}{stack.run_path(str(run_id))}"
    say(f"webhook delivered; lifecycle run {run_id} started: {run_url}")
    flow_run, state = _wait(run_id, lambda s: s.is_paused(), timeout, say, "the approval form")
    if state.is_paused():
        say(
            f"waiting for approval: log in at {stack.how_to_log_in(stack.run_path(str(run_id)))}, then press "
            f"Resume on {run_url}; or run `hubploy approve {run_id}`"
        )
        if approve:
            from prefect.flow_runs import resume_flow_run

            answer = {
                "decision": "approve",
                "sha": after,
                "approver": "hubploy demo",
                "reason": "hubploy demo --approve",
            }
            resume_flow_run(run_id, run_input=answer)
            say("approved")
            flow_run, state = _wait(run_id, lambda s: s.is_final(), timeout, say, "prod")
    # a state's name is never None: Prefect names a state after its type when it is not given one
    return DemoResult(str(run_id), flow_run.name, after, str(state.name), state.message or "", run_url)
