"""The GitHub webhook receiver: a small Starlette app, the only hubploy service meant to face the outside.

``POST /webhook`` takes GitHub ``push``, ``pull_request`` and ``ping`` deliveries (content type
``application/json``); ``GET /health`` answers ``{"ok": true}``.

Checks, in order: Content-Length over ``max_body_bytes`` → 413; no ``X-Hub-Signature-256`` → 401;
streamed body over the limit → 413; wrong signature (HMAC-SHA256 of the raw body, constant-time
compare) → 401; missing ``X-GitHub-Event``/``X-GitHub-Delivery`` or malformed JSON → 400; ``ping`` →
200 ``{"ok": true}``; a delivery id seen before → 200 ``duplicate``; unknown events, unconfigured
branches, deleted branches, other PR actions → 202 ``ignored``. A delivery that routes somewhere
starts the deployment and answers 202 ``started`` with the flow run id; if Prefect refuses the run, or
cannot be reached within ``prefect_timeout`` → 503 with the reason (redeliver it from GitHub, which
does not redeliver by itself).

Design choice: the receiver creates the run directly (``create_flow_run_from_deployment`` with
``idempotency_key=f"github-{delivery}"``) rather than emitting a Prefect event for a deployment
trigger. Reasons: GitHub learns whether a run was really created (a 503 when not, instead of an event
that silently matches nothing); routing and parameters are plain, tested code (:mod:`triggers.routing`)
instead of automation templates that must be kept in sync with prefect.yaml; and the response carries
the flow run id. De-duplication has three layers: an in-memory LRU of handled delivery ids (cheap,
answers "duplicate"); the creations in flight, which a redelivery racing its original joins; and the
idempotency key, which the Prefect server enforces per flow (unique ``(flow_id, idempotency_key)``; the
existing run is returned). The key covers what the others cannot: a redelivery after a receiver
restart, and a run the server created although the receiver gave up waiting (503).

Under a burst (many pushes at once): at most ``max_concurrent_starts`` creations talk to the server at
once, the others wait their turn in arrival order, and a deployment's id is looked up once. A SQLite
server under load can stall for seconds; when the answer budget runs out while the server is alive (it
answered within the last minute), the delivery is answered 202 ``accepted`` and its run is created when
the server answers (up to ``background_timeout``), instead of being lost: GitHub would not redeliver it.
At most ``max_pending_starts`` deliveries wait at once (more get a 503), and the LRU is bounded, so the
receiver's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound, PrefectException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hubploy.errors import CredentialsError, HubployError
from hubploy.runner import register_secret
from hubploy.triggers.routing import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SECRET_BLOCK,
    Ignored,
    PayloadError,
    Routes,
    Start,
    route,
)

log = logging.getLogger("hubploy.webhook")

WEBHOOK_PATH = "/webhook"


@dataclass(frozen=True)
class WebhookConfig:
    routes: Routes = field(default_factory=Routes)
    max_body_bytes: int = 1 << 20
    dedup_capacity: int = 10_000
    prefect_timeout: float = 8.0  # GitHub gives up on a delivery after 10 s
    max_concurrent_starts: int = 4  # run creations in flight at once; the others wait their turn, in order
    max_pending_starts: int = 1_000  # deliveries waiting for their run at once; more are answered 503
    background_timeout: float = 300.0  # how long a run creation may go on after its delivery was answered


SERVER_ALIVE_SECONDS = 60.0  # a server that answered this recently is slow, not gone


class _BodyTooLarge(Exception):
    pass


class _Busy(Exception):
    pass


def _answer(code: int, /, **body: Any) -> JSONResponse:
    return JSONResponse({"ok": 200 <= code < 300, **body}, status_code=code)


class _Receiver:
    def __init__(self, secret: str, config: WebhookConfig) -> None:
        self._secret = secret.encode()
        self._config = config
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._starts = asyncio.Semaphore(config.max_concurrent_starts)
        self._pending: dict[str, asyncio.Task[FlowRun]] = {}  # run creations in flight, by delivery
        self._deployment_ids: dict[str, UUID] = {}
        self._server_answered = float("-inf")  # time.monotonic() of the server's last answer
        self.client: PrefectClient | None = None

    async def handle(self, request: Request) -> JSONResponse:
        limit = self._config.max_body_bytes
        try:
            declared = int(request.headers.get("content-length", "0"))
        except ValueError:
            return _answer(400, error="invalid Content-Length")
        if declared > limit:
            return _answer(413, error=f"body larger than {limit} bytes")
        signature = request.headers.get("x-hub-signature-256")
        if not signature:
            return _answer(401, error="missing X-Hub-Signature-256")
        try:
            body = await self._read(request, limit)
        except _BodyTooLarge:
            return _answer(413, error=f"body larger than {limit} bytes")
        expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return _answer(401, error="signature does not match")

        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event or not delivery:
            return _answer(400, error="missing X-GitHub-Event or X-GitHub-Delivery")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _answer(400, error="body is not JSON (set the webhook content type to application/json)")
        if not isinstance(payload, dict):
            return _answer(400, error="body is not a JSON object")
        if event == "ping":
            log.info("ping %s", delivery)
            return _answer(200)
        if delivery in self._seen:
            log.info("duplicate delivery %s (%s)", delivery, event)
            return _answer(200, status="duplicate", delivery=delivery)

        try:
            decision = route(event, payload, delivery, self._config.routes)
        except PayloadError as exc:
            return _answer(400, error=f"{event} payload: {exc.message}")
        if isinstance(decision, Ignored):
            self._remember(delivery)
            log.info("ignored delivery %s (%s): %s", delivery, event, decision.reason)
            return _answer(202, status="ignored", reason=decision.reason)

        try:
            creation = self._creation(decision, delivery)
        except _Busy:
            return _answer(
                503,
                error=f"{self._config.max_pending_starts} deliveries are waiting for the "
                "Prefect server already; redeliver this one later",
            )
        try:
            run = await asyncio.wait_for(asyncio.shield(creation), self._config.prefect_timeout)
        except TimeoutError:
            if time.monotonic() - self._server_answered < SERVER_ALIVE_SECONDS:
                log.info(
                    "delivery %s (%s): the Prefect server is slow; the %s run is created when it answers",
                    delivery,
                    event,
                    decision.deployment,
                )
                return _answer(
                    202,
                    status="accepted",
                    deployment=decision.deployment,
                    reason="the Prefect server is slow to answer; the run is created when it does",
                )
            creation.cancel()
            error = f"cannot start deployment {decision.deployment!r}: {self._describe(TimeoutError())}"
            log.warning("delivery %s: %s", delivery, error)
            return _answer(503, error=error)
        except (PrefectException, httpx.HTTPError) as exc:
            why = self._describe(exc)
            return _answer(503, error=f"cannot start deployment {decision.deployment!r}: {why}")
        return _answer(
            202,
            status="started",
            deployment=decision.deployment,
            flow_run_id=str(run.id),
            flow_run_name=run.name,
        )

    def _creation(self, decision: Start, delivery: str) -> asyncio.Task[FlowRun]:
        """The creation of ``delivery``'s run: the one in flight (a redelivery racing its original joins
        it), else a new one. It goes on after the delivery is answered, for up to background_timeout."""
        creation = self._pending.get(delivery)
        if creation is None:
            if len(self._pending) >= self._config.max_pending_starts:
                raise _Busy
            creation = asyncio.create_task(self._create(decision, delivery))
            self._pending[delivery] = creation
            creation.add_done_callback(partial(self._created, delivery, decision.deployment))
        return creation

    async def _create(self, decision: Start, delivery: str) -> FlowRun:
        """The run, created in a turn of the starts semaphore; a server error or a lost connection is tried
        again (out of turn while it waits) until background_timeout."""
        async with asyncio.timeout(self._config.background_timeout):
            for attempt in itertools.count(1):
                try:
                    async with self._starts:
                        return await self._start(decision, delivery)
                except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                        raise
                    log.info("delivery %s: %s; trying again", delivery, self._describe(exc))
                    await asyncio.sleep(min(2.0**attempt, 30.0))
        raise AssertionError("unreachable")

    def _created(self, delivery: str, deployment: str, creation: asyncio.Task[FlowRun]) -> None:
        """A creation ended: the delivery is remembered once its run exists; a failure is logged."""
        self._pending.pop(delivery, None)
        if creation.cancelled():
            return
        error = creation.exception()
        if error is not None:
            why = (
                f"no answer within {self._config.background_timeout:g} s"
                if isinstance(error, TimeoutError)
                else self._describe(error)
            )
            log.warning("delivery %s: cannot start deployment %r: %s", delivery, deployment, why)
            return
        self._remember(delivery)
        log.info("delivery %s started %s run %s", delivery, deployment, creation.result().id)

    async def _start(self, decision: Start, delivery: str) -> FlowRun:
        """A run of ``decision.deployment``, idempotent per delivery. The deployment's id is looked up once
        per name (and again when it is gone: `prefect deploy` may have recreated it)."""
        assert self.client is not None
        for attempt in (1, 2):
            deployment_id = self._deployment_ids.get(decision.deployment)
            if deployment_id is None:
                deployment_id = (await self.client.read_deployment_by_name(decision.deployment)).id
                self._deployment_ids[decision.deployment] = deployment_id
                self._server_answered = time.monotonic()
            try:
                run = await self.client.create_flow_run_from_deployment(
                    deployment_id, parameters=decision.parameters, idempotency_key=f"github-{delivery}"
                )
                self._server_answered = time.monotonic()
                return run
            except ObjectNotFound:
                self._deployment_ids.pop(decision.deployment, None)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, ObjectNotFound):
            return "no such deployment on the Prefect server (deploy it with `prefect deploy --all`)"
        if isinstance(exc, TimeoutError):
            return f"the Prefect server did not answer within {self._config.prefect_timeout:g} s"
        if isinstance(exc, httpx.HTTPStatusError):
            try:
                detail = exc.response.json().get("detail")
            except ValueError:
                detail = None
            status = exc.response.status_code
            return f"the Prefect server answered {status}: {detail or exc.response.reason_phrase}"
        return f"{type(exc).__name__}: {exc}"

    @staticmethod
    async def _read(request: Request, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _remember(self, delivery: str) -> None:
        self._seen[delivery] = None
        while len(self._seen) > self._config.dedup_capacity:
            self._seen.popitem(last=False)


def create_app(secret: str, config: WebhookConfig = WebhookConfig()) -> Starlette:
    """The receiver app; it talks to the Prefect server named by PREFECT_API_URL."""
    if not secret:
        raise CredentialsError("the webhook secret is empty")
    receiver = _Receiver(secret, config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with get_client() as client:
            receiver.client = client
            yield

    async def health(request: Request) -> JSONResponse:
        return _answer(200)

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.handle, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def load_webhook_secret(block_name: str = DEFAULT_SECRET_BLOCK) -> str:
    """The webhook secret from a Prefect ``Secret`` block."""
    from prefect.blocks.system import Secret

    try:
        # load is sync here (called outside any event loop): the block, never a coroutine
        value = Secret.load(block_name).get()  # type: ignore[union-attr]
    except ValueError as exc:
        raise CredentialsError(
            f"no Prefect Secret block named {block_name!r}",
            hint="run `hubploy up` (it creates one) or save a Secret block with that name",
        ) from exc
    except httpx.HTTPError as exc:
        raise HubployError(f"cannot reach the Prefect server: {exc}", hint="check PREFECT_API_URL") from exc
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"Prefect Secret block {block_name!r} does not hold a non-empty string")
    return value


def ensure_webhook_secret(block_name: str = DEFAULT_SECRET_BLOCK) -> str:
    """The webhook secret, generated (32 random bytes, hex) and saved in the block on first use."""
    from prefect.blocks.system import Secret

    try:
        return load_webhook_secret(block_name)
    except CredentialsError:
        pass
    value = secrets.token_hex(32)
    Secret(value=value).save(block_name)
    register_secret(value)
    return value


def serve_webhook(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    secret: str | None = None,
    secret_block: str = DEFAULT_SECRET_BLOCK,
    config: WebhookConfig = WebhookConfig(),
) -> None:
    """Run the receiver until interrupted; the secret comes from ``secret`` or, once, from the block."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise HubployError(
            "PREFECT_API_URL is not set",
            hint="start the server with `hubploy up` or point PREFECT_API_URL at a running Prefect server",
        )
    secret = secret or load_webhook_secret(secret_block)
    register_secret(secret)
    uvicorn.run(create_app(secret, config), host=host, port=port, log_level="info")
