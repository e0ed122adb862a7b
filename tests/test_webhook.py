"""The webhook receiver against a real Prefect server: signed requests in, flow runs (or none) out."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prefect import flow
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings

from hubploy.triggers.routing import Routes
from hubploy.triggers.webhook import WebhookConfig, create_app, ensure_webhook_secret, load_webhook_secret

pytestmark = pytest.mark.prefect

SECRET = "test-webhook-secret-" + secrets.token_hex(8)
SECRET_BLOCK = "hubploy-test-webhook-secret"
REPO = {"clone_url": "https://github.com/org/deploy.git", "full_name": "org/deploy"}
REPO_URL = "git://127.0.0.1:9418/deploy.git"
VENV_BIN = Path(sys.executable).parent
Ids = dict[str, uuid.UUID]


# Stand-ins with the parameters of the real flows (flows/*.py); repo_url is a deployment default, as
# in prefect.yaml. The server enforces the parameter schema, so a mismatch would show here as a 503.
# They have names of their own, so that the real deployments of prefect.yaml (run by the session's
# worker) are never replaced; every receiver here is told these names.
LIFECYCLE = "webhook-test-lifecycle/lifecycle"
PROD_DEPLOY = "webhook-test-prod-deploy/prod-deploy"
PR_VALIDATION = "webhook-test-pr-validation/pr-validation"
ROUTES = Routes(
    lifecycle_deployment=LIFECYCLE, prod_deployment=PROD_DEPLOY, pr_validation_deployment=PR_VALIDATION
)
ROUTE_FLAGS = (
    "--lifecycle-deployment",
    LIFECYCLE,
    "--prod-deployment",
    PROD_DEPLOY,
    "--pr-validation-deployment",
    PR_VALIDATION,
)


@flow(name="webhook-test-lifecycle")
def lifecycle(sha: str, repo_url: str, before: str | None = None, trigger: str = "manual") -> None:
    pass


@flow(name="webhook-test-prod-deploy")
def prod_deploy(sha: str, repo_url: str, before: str | None = None, trigger: str = "manual") -> None:
    pass


@flow(name="webhook-test-pr-validation")
def pr_validation(sha: str, base_sha: str, pr_number: int, repo_url: str) -> None:
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("receiver did not start")


@pytest.fixture(scope="module")
def deployment_ids(prefect_api: str) -> dict[str, uuid.UUID]:
    """Real deployments with the receiver's default names (no worker: their runs stay Scheduled)."""
    ids = {}
    for fn, name in (
        (lifecycle, "lifecycle"),
        (prod_deploy, "prod-deploy"),
        (pr_validation, "pr-validation"),
    ):
        ids[f"{fn.name}/{name}"] = fn.to_deployment(name=name, parameters={"repo_url": REPO_URL}).apply()
    return ids


@contextmanager
def cli_receiver(tmp_path: Path, *args: str) -> Iterator[str]:
    """`hubploy webhook serve` as a user runs it, secret from the Secret block."""
    with cli_receiver_process(tmp_path, *args) as (url, _):
        yield url


@contextmanager
def cli_receiver_process(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """cli_receiver's URL and process."""
    port = _free_port()
    log = open(tmp_path / f"receiver-{port}.log", "w")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "hubploy"),
            "webhook",
            "serve",
            "--port",
            str(port),
            "--secret-block",
            SECRET_BLOCK,
            *ROUTE_FLAGS,
            *args,
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        assert SECRET not in (tmp_path / f"receiver-{port}.log").read_text()


@pytest.fixture(scope="module")
def receiver(
    prefect_api: str, deployment_ids: Ids, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    Secret(value=SECRET).save(SECRET_BLOCK, overwrite=True)
    with cli_receiver(tmp_path_factory.mktemp("receiver")) as url:
        yield url


@contextmanager
def in_process_receiver(config: WebhookConfig) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(SECRET, config), host="127.0.0.1", port=port, log_level="warning")
    )
    # the thread must see this test's Prefect settings (PREFECT_API_URL), which live in a context var
    thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def sha() -> str:
    return secrets.token_hex(20)


def push(branch: str, after: str, before: str = "0" * 39 + "1") -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "before": before, "after": after, "repository": REPO}


def pull_request(head_sha: str, base: str = "staging", number: int = 12) -> dict[str, Any]:
    return {
        "action": "opened",
        "number": number,
        "repository": REPO,
        "pull_request": {
            "number": number,
            "head": {"ref": "feature", "sha": head_sha},
            "base": {"ref": base, "sha": "c" * 40},
        },
    }


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(
    url: str,
    event: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    delivery: str | None = None,
    sign: str | None | bool = True,
    client: httpx.Client | None = None,
) -> httpx.Response:
    body = json.dumps(payload).encode() if body is None else body
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }
    if sign is True:
        headers["X-Hub-Signature-256"] = signature(body)
    elif isinstance(sign, str):
        headers["X-Hub-Signature-256"] = sign
    return (client or httpx).post(f"{url}/webhook", content=body, headers=headers, timeout=60)


def all_runs(deployment_ids: Ids) -> list[FlowRun]:
    """Every run of the stand-in deployments, once each (runs created while the pages are read shift them,
    so a run may come on two pages)."""
    runs: list[FlowRun] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=list(deployment_ids.values()))
                ),
                offset=len(runs),
                limit=200,
            )
            runs.extend(page)
            if len(page) < 200:
                return list({run.id: run for run in runs}.values())


def runs_for(deployment_ids: Ids, commit: str) -> list[tuple[str, FlowRun]]:
    names = {v: k for k, v in deployment_ids.items()}
    return [
        (names[r.deployment_id], r) for r in all_runs(deployment_ids) if r.parameters.get("sha") == commit
    ]


def test_push_to_staging_starts_one_lifecycle_run(receiver: str, deployment_ids: Ids) -> None:
    after, delivery = sha(), str(uuid.uuid4())
    response = deliver(receiver, "push", push("staging", after), delivery=delivery)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "started"
    [(name, run)] = runs_for(deployment_ids, after)
    assert name == LIFECYCLE
    assert str(run.id) == response.json()["flow_run_id"]
    assert run.parameters == {
        "sha": after,
        "before": "0" * 39 + "1",
        "repo_url": REPO_URL,
        "trigger": f"github push {delivery}",
    }
    assert run.idempotency_key == f"github-{delivery}"
    assert run.state is not None and run.state.is_scheduled()

    again = deliver(receiver, "push", push("staging", after), delivery=delivery)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(runs_for(deployment_ids, after)) == 1


def test_push_to_prod_starts_the_prod_deploy(receiver: str, deployment_ids: Ids) -> None:
    after = sha()
    assert deliver(receiver, "push", push("prod", after)).status_code == 202
    [(name, run)] = runs_for(deployment_ids, after)
    assert name == PROD_DEPLOY
    assert run.parameters["before"] == "0" * 39 + "1"


def test_pull_request_to_staging_starts_validation(receiver: str, deployment_ids: Ids) -> None:
    head = sha()
    assert deliver(receiver, "pull_request", pull_request(head)).status_code == 202
    [(name, run)] = runs_for(deployment_ids, head)
    assert name == PR_VALIDATION
    assert run.parameters["base_sha"] == "c" * 40 and run.parameters["pr_number"] == 12


def test_ping(receiver: str) -> None:
    response = deliver(receiver, "ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
    assert response.status_code == 200 and response.json() == {"ok": True}


def test_health(receiver: str) -> None:
    assert httpx.get(f"{receiver}/health").json() == {"ok": True}


def test_rejected_and_ignored_deliveries_start_nothing(receiver: str, deployment_ids: Ids) -> None:
    commits = {
        case: sha()
        for case in (
            "missing",
            "wrong",
            "other-secret",
            "oversize",
            "chunked",
            "json",
            "event",
            "branch",
            "deleted",
            "tag",
            "pr-main",
            "pr-closed",
            "no-delivery",
        )
    }

    def body(case: str, branch: str = "staging") -> bytes:
        return json.dumps(push(branch, commits[case])).encode()

    expected = {
        "missing": (deliver(receiver, "push", body=body("missing"), sign=None), 401),
        "wrong": (deliver(receiver, "push", body=body("wrong"), sign="sha256=" + "0" * 64), 401),
        "other-secret": (
            deliver(
                receiver,
                "push",
                body=body("other-secret"),
                sign=signature(body("other-secret"), "not-the-secret"),
            ),
            401,
        ),
        # correctly signed, but larger than 1 MiB: by Content-Length, and streamed without one
        "oversize": (deliver(receiver, "push", body=body("oversize") + b" " * (1 << 20)), 413),
        "json": (deliver(receiver, "push", body=body("json")[:-1]), 400),
        "event": (deliver(receiver, "issues", push("staging", commits["event"])), 202),
        "branch": (deliver(receiver, "push", push("main", commits["branch"])), 202),
        "deleted": (deliver(receiver, "push", push("staging", "0" * 40, before=commits["deleted"])), 202),
        "tag": (
            deliver(receiver, "push", {**push("staging", commits["tag"]), "ref": "refs/tags/staging"}),
            202,
        ),
        "pr-main": (deliver(receiver, "pull_request", pull_request(commits["pr-main"], base="main")), 202),
        "pr-closed": (
            deliver(receiver, "pull_request", {**pull_request(commits["pr-closed"]), "action": "closed"}),
            202,
        ),
    }
    chunked = body("chunked") + b" " * (1 << 20)
    expected["chunked"] = (
        httpx.post(
            f"{receiver}/webhook",
            content=iter([chunked[i : i + 65536] for i in range(0, len(chunked), 65536)]),
            headers={
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": str(uuid.uuid4()),
                "X-Hub-Signature-256": signature(chunked),
            },
        ),
        413,
    )
    no_delivery = body("no-delivery")
    expected["no-delivery"] = (
        httpx.post(
            f"{receiver}/webhook",
            content=no_delivery,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature(no_delivery)},
        ),
        400,
    )
    for case, (response, status) in expected.items():
        assert response.status_code == status, (case, response.text)
        if status == 202:
            assert response.json()["status"] == "ignored", case
        assert SECRET not in response.text
    started = [
        r
        for r in all_runs(deployment_ids)
        if r.parameters.get("sha") in commits.values() or r.parameters.get("before") == commits["deleted"]
    ]
    assert started == []


def test_flood_of_pushes_and_redeliveries(receiver: str, deployment_ids: Ids) -> None:
    pushes = [(str(uuid.uuid4()), sha()) for _ in range(50)]
    deliveries = pushes + pushes[:10]
    with httpx.Client(limits=httpx.Limits(max_connections=60)) as client, ThreadPoolExecutor(30) as pool:
        responses = list(
            pool.map(
                lambda d: deliver(receiver, "push", push("staging", d[1]), delivery=d[0], client=client),
                deliveries,
            )
        )
    assert all(r.status_code in (200, 202) for r in responses), [
        r.text for r in responses if r.status_code >= 300
    ]
    # "accepted": the server was slow and the run is created when it answers
    assert {r.json()["status"] for r in responses} <= {"started", "accepted", "duplicate"}
    run_ids: dict[str, set[str]] = {}  # a redelivery racing its original gets the same run back
    for (delivery, _), response in zip(deliveries, responses, strict=True):
        if response.json()["status"] == "started":
            run_ids.setdefault(delivery, set()).add(response.json()["flow_run_id"])
    assert all(len(ids) == 1 for ids in run_ids.values())
    commits = {c for _, c in pushes}
    deadline = time.monotonic() + 300
    while len(runs := [r for r in all_runs(deployment_ids) if r.parameters.get("sha") in commits]) < 50:
        assert time.monotonic() < deadline, f"{len(runs)} runs for 50 pushes"
        time.sleep(1)
    assert len(runs) == 50
    assert {r.parameters["sha"] for r in runs} == commits
    assert {r.idempotency_key for r in runs} == {f"github-{d}" for d, _ in pushes}


def test_redelivery_after_a_restart_starts_nothing(
    receiver: str, deployment_ids: Ids, tmp_path: Path
) -> None:
    after, delivery = sha(), str(uuid.uuid4())
    first = deliver(receiver, "push", push("staging", after), delivery=delivery)
    assert first.status_code == 202
    with cli_receiver(tmp_path) as fresh:  # a new process: its in-memory LRU is empty
        again = deliver(fresh, "push", push("staging", after), delivery=delivery)
    assert again.status_code == 202, again.text
    assert again.json()["flow_run_id"] == first.json()["flow_run_id"]
    assert len(runs_for(deployment_ids, after)) == 1


@flow(name="hubploy-mismatch")
def mismatch(commit: str) -> None:
    pass


@pytest.mark.parametrize(
    "deployment,reason",
    [
        ("webhook-test-lifecycle/missing", "no such deployment on the Prefect server"),
        (
            "hubploy-mismatch/mismatch",
            (
                "the Prefect server answered 409: Error creating flow run: "
                "Validation failed. Failure reason: 'commit' is a required property"
            ),
        ),
    ],
)
def test_prefect_refusing_the_run_is_503_and_can_be_redelivered(
    prefect_api: str, deployment: str, reason: str, deployment_ids: Ids
) -> None:
    mismatch.to_deployment(name="mismatch").apply()  # its parameters do not fit: the server refuses the run
    config = WebhookConfig(
        routes=dataclasses.replace(ROUTES, staging_branch="main", lifecycle_deployment=deployment)
    )
    after, delivery = sha(), str(uuid.uuid4())
    with in_process_receiver(config) as url:
        for _ in range(2):  # not remembered as seen: a redelivery tries again
            response = deliver(url, "push", push("main", after), delivery=delivery)
            assert response.status_code == 503, response.text
            assert response.json()["error"].startswith(f"cannot start deployment {deployment!r}: {reason}")
    with get_client(sync_client=True) as client:
        key = FlowRunFilterIdempotencyKey(any_=[f"github-{delivery}"])
        assert client.read_flow_runs(flow_run_filter=FlowRunFilter(idempotency_key=key)) == []


def test_unreachable_prefect_server_is_a_quick_503(prefect_api: str) -> None:
    config = WebhookConfig(routes=ROUTES, prefect_timeout=1)
    with (
        temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{_free_port()}/api"}),
        in_process_receiver(config) as url,
    ):
        started = time.monotonic()
        response = deliver(url, "push", push("staging", sha()))
    assert response.status_code == 503
    assert time.monotonic() - started < 5
    assert response.json()["error"].startswith(f"cannot start deployment '{LIFECYCLE}': ")


class DelayingProxy:
    """A TCP proxy in front of the Prefect server that holds every request's bytes for ``delay`` seconds."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.delay = upstream_port, 0.0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        try:
            while data := src.recv(65536):
                if delayed and self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


def test_a_slow_server_gets_the_delivery_accepted_and_its_run_created_when_it_answers(
    prefect_api: str, deployment_ids: Ids
) -> None:
    proxy = DelayingProxy(int(prefect_api.rsplit(":", 1)[1].split("/")[0]))
    config = WebhookConfig(routes=ROUTES, prefect_timeout=2)
    after, delivery = sha(), str(uuid.uuid4())
    try:
        with temporary_settings(updates={PREFECT_API_URL: proxy.url}), in_process_receiver(config) as url:
            warm_push, warm_delivery = push("staging", sha()), str(uuid.uuid4())
            deadline = time.monotonic() + 60  # on a loaded machine even an undelayed answer may take 2 s
            while (warm := deliver(url, "push", warm_push, delivery=warm_delivery)).status_code == 503:
                assert time.monotonic() < deadline, warm.text
            assert warm.json()["status"] in ("started", "accepted", "duplicate"), warm.text  # it answered
            proxy.delay = 5.0  # from now on it takes longer than the receiver's answer budget
            started = time.monotonic()
            slow = deliver(url, "push", push("staging", after), delivery=delivery)
            assert time.monotonic() - started < 5
            assert (slow.status_code, slow.json()["status"]) == (202, "accepted"), slow.text
            again = deliver(url, "push", push("staging", after), delivery=delivery)  # joins the creation
            assert again.status_code == 202 and again.json()["status"] in ("accepted", "started"), again.text
            with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
                deadline = time.monotonic() + 60
                while not runs_for(deployment_ids, after):
                    assert time.monotonic() < deadline, "no run for the accepted delivery"
                    time.sleep(0.5)
            proxy.delay = 0.0
            late = deliver(url, "push", push("staging", after), delivery=delivery)
            assert (late.status_code, late.json()["status"]) == (200, "duplicate"), late.text
    finally:
        proxy.close()
    [(name, run)] = runs_for(deployment_ids, after)
    assert name == LIFECYCLE and run.idempotency_key == f"github-{delivery}"


def test_routes_from_the_config_dataclass(prefect_api: str, deployment_ids: Ids) -> None:
    config = WebhookConfig(
        routes=dataclasses.replace(ROUTES, staging_branch="main", prod_branch="live"), max_body_bytes=1024
    )
    live, main = sha(), sha()
    with in_process_receiver(config) as url:
        assert deliver(url, "push", push("live", live)).status_code == 202
        assert deliver(url, "push", push("main", main)).status_code == 202
        assert deliver(url, "push", push("staging", sha())).status_code == 202
        assert deliver(url, "push", {**push("main", sha()), "pad": "x" * 1024}).status_code == 413
    assert [n for n, _ in runs_for(deployment_ids, live)] == [PROD_DEPLOY]
    assert [n for n, _ in runs_for(deployment_ids, main)] == [LIFECYCLE]


def test_cli_takes_branches_from_the_repo_settings(
    receiver: str, deployment_ids: Ids, deployment_repo, tmp_path: Path
) -> None:
    repo = deployment_repo(
        {"hubploy-repo.yaml": "staging_branch: main\nprod_branch: live\n", "deployments/.keep": ""}
    )
    main, staging = sha(), sha()
    with cli_receiver(tmp_path, "--repo", str(repo)) as url:
        assert deliver(url, "push", push("main", main)).json()["status"] == "started"
        assert deliver(url, "push", push("staging", staging)).json()["status"] == "ignored"
    assert [n for n, _ in runs_for(deployment_ids, main)] == [LIFECYCLE]
    assert runs_for(deployment_ids, staging) == []


def test_invalid_repo_settings_fail_clearly(prefect_api: str, deployment_repo) -> None:
    repo = deployment_repo({"hubploy-repo.yaml": "staging_branch: [1]\n", "deployments/.keep": ""})
    result = subprocess.run(
        [str(VENV_BIN / "hubploy"), "webhook", "serve"], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "hubploy-repo.yaml:1: staging_branch:" in result.stderr


def test_ensure_webhook_secret_generates_once(prefect_api: str) -> None:
    name = f"hubploy-test-{uuid.uuid4().hex[:8]}"
    first = ensure_webhook_secret(name)
    assert len(first) == 64
    assert ensure_webhook_secret(name) == first == load_webhook_secret(name)


def test_missing_secret_block_fails_clearly(prefect_api: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(VENV_BIN / "hubploy"),
            "webhook",
            "serve",
            "--port",
            str(_free_port()),
            "--secret-block",
            "no-such-block",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no Prefect Secret block named 'no-such-block'" in result.stderr
