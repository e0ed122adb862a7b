"""The GitHub webhook receiver: a small Starlette app, the only hubploy service meant to face the outside.

``POST /webhook`` takes GitHub ``push``, ``pull_request`` and ``ping`` deliveries (content type
``application/json``); ``GET /health`` answers ``{"ok": true}``.

Checks, in order: Content-Length over ``max_body_bytes`` → 413; no ``X-Hub-Signature-256`` → 401;
streamed body over the limit → 413; wrong signature (HMAC-SHA256 of the raw body, constant-time
compare) → 401; missing ``X-GitHub-Event``/``X-GitHub-Delivery`` or malformed JSON → 400; ``ping`` →
200 ``{"ok": true}``; a delivery id seen before → 200 ``duplicate``; unknown events, unconfigured
branches, deleted branches, other PR actions → 202 ``ignored``. A delivery that routes somewhere
starts the deployment and answers 202 with the flow run id; if Prefect cannot be reached within
``prefect_timeout`` or refuses the run → 503 with the reason (the delivery can be redelivered from
GitHub).

Design choice: the receiver calls ``run_deployment(name, parameters=..., timeout=0,
idempotency_key=f"github-{delivery}")`` directly rather than emitting a Prefect event for a
deployment trigger. Reasons: GitHub learns whether a run was really created (a 503 when not, instead
of an event that silently matches nothing); routing and parameters are plain, tested code
(:mod:`triggers.routing`) instead of automation templates that must be kept in sync with
prefect.yaml; and the response carries the flow run id. De-duplication has two layers: an in-memory
LRU of handled delivery ids (cheap, answers "duplicate"), and the idempotency key, which the Prefect
server enforces per flow (unique ``(flow_id, idempotency_key)``; the existing run is returned). The key
covers what the LRU cannot: a redelivery after a receiver restart, a redelivery racing the original,
and a run the server created although the receiver gave up waiting (503) — none starts a second run.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.deployments import arun_deployment
from prefect.exceptions import ObjectNotFound, PrefectException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hubploy.errors import CredentialsError, HubployError
from hubploy.runner import register_secret
from triggers.routing import (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_SECRET_BLOCK, Ignored, PayloadError, Routes,
                              route)

log = logging.getLogger("hubploy.webhook")

WEBHOOK_PATH = "/webhook"


@dataclass(frozen=True)
class WebhookConfig:
    routes: Routes = field(default_factory=Routes)
    max_body_bytes: int = 1 << 20
    dedup_capacity: int = 10_000
    prefect_timeout: float = 8.0  # GitHub gives up on a delivery after 10 s


class _BodyTooLarge(Exception):
    pass


def _answer(code: int, /, **body: Any) -> JSONResponse:
    return JSONResponse({"ok": 200 <= code < 300, **body}, status_code=code)


class _Receiver:
    def __init__(self, secret: str, config: WebhookConfig) -> None:
        self._secret = secret.encode()
        self._config = config
        self._seen: OrderedDict[str, None] = OrderedDict()
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
            async with asyncio.timeout(self._config.prefect_timeout):
                run = await arun_deployment(decision.deployment, client=self.client,
                                            parameters=decision.parameters, timeout=0,
                                            idempotency_key=f"github-{delivery}", as_subflow=False)
        except (PrefectException, httpx.HTTPError, TimeoutError) as exc:
            error = f"cannot start deployment {decision.deployment!r}: {self._describe(exc)}"
            log.warning("delivery %s: %s", delivery, error)
            return _answer(503, error=error)
        self._remember(delivery)
        log.info("delivery %s (%s) started %s run %s", delivery, event, decision.deployment, run.id)
        return _answer(202, status="started", deployment=decision.deployment, flow_run_id=str(run.id),
                       flow_run_name=run.name)

    def _describe(self, exc: Exception) -> str:
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

    return Starlette(routes=[Route(WEBHOOK_PATH, receiver.handle, methods=["POST"]),
                             Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)


def load_webhook_secret(block_name: str = DEFAULT_SECRET_BLOCK) -> str:
    """The webhook secret from a Prefect ``Secret`` block."""
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_name).get()
    except ValueError as exc:
        raise CredentialsError(f"no Prefect Secret block named {block_name!r}",
                               hint="run `hubploy up` (it creates one) or save a Secret block with that name"
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


def serve_webhook(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, secret: str | None = None,
                  secret_block: str = DEFAULT_SECRET_BLOCK, config: WebhookConfig = WebhookConfig()) -> None:
    """Run the receiver until interrupted; the secret comes from ``secret`` or, once, from the block."""
    import uvicorn
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise HubployError("PREFECT_API_URL is not set", hint="start the server with `hubploy up` or point "
                                                             "PREFECT_API_URL at a running Prefect server")
    secret = secret or load_webhook_secret(secret_block)
    register_secret(secret)
    uvicorn.run(create_app(secret, config), host=host, port=port, log_level="info")
