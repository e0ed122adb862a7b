"""The spawn smoke test and the verified mark without a cluster: the hub's REST API is an
``httpx.MockTransport`` stand-in that behaves as JupyterHub's does (users, servers, the progress event
stream, the proxy route to the user server), kubectl a script printing the hub Secret, helm's storage
a JSON document. The same test against the real chart on the sandbox is in tests/test_waves_sandbox.py."""

from __future__ import annotations

import base64
import gzip
import json
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubploy.config.repo_settings import SpawnTest
from hubploy.errors import DeployError, HealthCheckError
from hubploy.health import service_token, spawn_settings, spawn_smoke_test
from hubploy.helm import Revision
from hubploy.layout import load_repo
from hubploy.runner import REDACTED, redact
from hubploy.verified import (
    Verification,
    decode_release,
    encode_release,
    is_verified,
    last_verified,
    mark_verified,
    verified_description,
)

HUB = "http://hub.test"
TOKEN = "smoke-token-0123456789"
SETTINGS = SpawnTest(service="smoke", user="smoke-u", timeout=3)


class FakeHub:
    """JupyterHub's REST API as the spawn test uses it; ``start`` decides how a spawn ends."""

    def __init__(self, start: str = "ready") -> None:
        self.start = start  # ready | failed | pending (never finishes)
        self.users: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.scopes_ok = True

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.calls.append(f"{method} {path}")
        if request.headers.get("Authorization") != f"token {TOKEN}":
            return httpx.Response(403, json={"message": "no token"})
        if path.startswith("/user/smoke-u/api"):
            ready = self.users.get("smoke-u", {}).get("servers", {}).get("", {}).get("ready")
            return httpx.Response(200, json={"version": "2.19.0"}) if ready else httpx.Response(503)
        user = self.users.get("smoke-u")
        if path == "/hub/api/users/smoke-u":
            if method == "POST":
                if not self.scopes_ok:
                    return httpx.Response(
                        403, json={"message": "Action is not authorized with current scopes"}
                    )
                self.users["smoke-u"] = {"name": "smoke-u", "servers": {}}
                return httpx.Response(201, json=self.users["smoke-u"])
            if user is None:
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json=user)
        if path == "/hub/api/users/smoke-u/server":
            assert user is not None
            if method == "POST":
                ready = self.start == "ready"
                user["servers"][""] = {"ready": ready, "pending": None if ready else "spawn"}
                return httpx.Response(202)
            user["servers"].pop("", None)
            return httpx.Response(204)
        if path == "/hub/api/users/smoke-u/server/progress":
            events = [{"progress": 0, "message": "Server requested"}]
            if self.start == "ready":
                events.append({"progress": 100, "ready": True, "message": "Server ready at /user/smoke-u/"})
            elif self.start == "failed":
                events.append(
                    {
                        "progress": 100,
                        "failed": True,
                        "message": "Spawn failed: pod jupyter-smoke-u exited: no-such-program not found",
                    }
                )
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
            if self.start == "pending":
                return httpx.Response(200, stream=SlowStream(body))
            return httpx.Response(200, text=body)
        return httpx.Response(404)


class SlowStream(httpx.SyncByteStream):
    """An event stream that sends its first events, then nothing until the client gives up."""

    def __init__(self, body: str) -> None:
        self.body = body

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield self.body.encode()
        raise httpx.ReadTimeout("no more events")


def smoke(hub: FakeHub) -> Any:
    with httpx.Client(transport=httpx.MockTransport(hub.handle)) as client:
        return spawn_smoke_test(HUB, TOKEN, SETTINGS, client=client)


def test_a_server_starts_answers_through_the_proxy_and_is_stopped() -> None:
    hub = FakeHub()
    times = smoke(hub)
    assert times.user == "smoke-u" and times.started >= 0 and times.reachable >= 0 and times.stopped >= 0
    assert hub.calls == [
        "GET /hub/api/users/smoke-u",
        "POST /hub/api/users/smoke-u",
        "GET /hub/api/users/smoke-u",
        "POST /hub/api/users/smoke-u/server",
        "GET /hub/api/users/smoke-u/server/progress",
        "GET /user/smoke-u/api",
        "DELETE /hub/api/users/smoke-u/server",
        "GET /hub/api/users/smoke-u",
    ]
    assert hub.users["smoke-u"]["servers"] == {}
    assert "started in" in times.summary()
    again = FakeHub()
    again.users["smoke-u"] = {"name": "smoke-u", "servers": {"": {"ready": True}}}  # left by a killed check
    smoke(again)
    assert again.calls[:3] == [
        "GET /hub/api/users/smoke-u",
        "GET /hub/api/users/smoke-u",
        "DELETE /hub/api/users/smoke-u/server",
    ]


def test_a_failed_spawn_fails_the_check_with_the_hubs_reason_and_stops_the_server() -> None:
    hub = FakeHub(start="failed")
    with pytest.raises(
        HealthCheckError,
        match="the server of smoke-u failed to start: Spawn failed: pod "
        "jupyter-smoke-u exited: no-such-program not found",
    ):
        smoke(hub)
    assert hub.calls[-2:] == ["DELETE /hub/api/users/smoke-u/server", "GET /hub/api/users/smoke-u"]


def test_a_spawn_that_never_finishes_fails_after_the_timeout_with_the_last_progress() -> None:
    hub = FakeHub(start="pending")
    with pytest.raises(HealthCheckError, match="did not start within 3 s; last progress: Server requested"):
        smoke(hub)
    assert "DELETE /hub/api/users/smoke-u/server" in hub.calls and hub.users["smoke-u"]["servers"] == {}


def test_a_token_without_the_scopes_says_which_role_to_give() -> None:
    hub = FakeHub()
    hub.scopes_ok = False
    with pytest.raises(
        HealthCheckError, match="create user smoke-u: HTTP 403 Action is not authorized"
    ) as raised:
        smoke(hub)
    assert "admin:users, admin:servers and access:servers" in str(raised.value)


def kubectl_printing(tmp_path: Path, document: dict[str, Any]) -> dict[str, str]:
    """An env whose KUBECTL_EXECUTABLE prints ``document`` (and records its argv)."""
    script = tmp_path / "kubectl"
    (tmp_path / "doc.json").write_text(json.dumps(document))
    script.write_text(
        f"#!{sys.executable}\nimport sys, pathlib\n"
        f"pathlib.Path('{tmp_path}/argv').write_text(' '.join(sys.argv[1:]))\n"
        f"print(pathlib.Path('{tmp_path}/doc.json').read_text())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"KUBECTL_EXECUTABLE": str(script), "PATH": "/usr/bin:/bin"}


def test_the_token_comes_from_the_hub_secret_and_is_redacted_from_then_on(tmp_path: Path) -> None:
    secret = {"items": [{"data": {"hub.services.smoke.apiToken": base64.b64encode(TOKEN.encode()).decode()}}]}
    env = kubectl_printing(tmp_path, secret)
    assert service_token("ns", "rel", "smoke", env, kube_context="ctx") == TOKEN
    assert (tmp_path / "argv").read_text() == (
        "--context ctx get secrets -n ns -l release=rel,component=hub -o json"
    )
    assert redact(f"token {TOKEN}") == f"token {REDACTED}"
    with pytest.raises(
        HealthCheckError, match="the hub Secret of rel has no hub.services.other.apiToken"
    ) as raised:
        service_token("ns", "rel", "other", env)
    assert "jupyterhub.hub.services.other" in str(raised.value)


def test_only_a_repository_asking_for_it_runs_the_spawn_test(deployment_repo: Any) -> None:
    root = deployment_repo({"deployments/h/hubploy.yaml": "environments: [staging]\n"})
    assert spawn_settings(load_repo(root).load_hub("h")) is None
    (root / "hubploy-repo.yaml").write_text("rollout: {smoke_test: spawn, spawn: {service: smoke}}\n")
    assert spawn_settings(load_repo(root).load_hub("h")) == SpawnTest(service="smoke")


# ------------------------------------------------------------------ the verified mark

RELEASE = {
    "name": "h-staging",
    "version": 3,
    "info": {"description": "hubploy config sha256:abc (git 123)", "status": "deployed"},
    "manifest": "kind: Secret",
}


@pytest.mark.parametrize("kind", ["secret", "configmap"])
def test_helms_storage_format_round_trips(kind: str) -> None:
    encoded = encode_release(RELEASE, kind)
    raw = base64.b64decode(encoded) if kind == "secret" else encoded.encode()
    assert gzip.decompress(base64.b64decode(raw))[:1] == b"{"
    assert decode_release(encoded, kind) == RELEASE


def test_the_mark_keeps_the_configuration_stamp_and_finds_the_last_verified_revision() -> None:
    when = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    marked = verified_description("hubploy config sha256:abc (git 123)", when, "wave canary")
    assert marked == (
        "hubploy config sha256:abc (git 123); verified by hubploy 2026-12-04T12:00:00+00:00 (wave canary)"
    )
    assert verified_description(marked, when) == marked and is_verified(marked)
    history = [
        Revision(1, "superseded", "hub", "5", "", marked),
        Revision(2, "superseded", "hub", "5", "", "x"),
        Revision(3, "deployed", "hub", "5", "", "Rollback to 1"),
    ]
    assert last_verified(history) == history[0]
    assert last_verified(history[1:]) is None
    rolled_back = Verification("h-staging", history[2], history[0])  # helm's rollback to it: the same config
    assert rolled_back.serves_verified
    assert rolled_back.why_not_return() == "h-staging already runs its last verified release (revision 1)"
    behind = Verification("h-staging", history[1], history[0])
    assert not behind.serves_verified and behind.why_not_return() is None
    assert Verification("h-staging", history[1], None).why_not_return() == (
        "h-staging has no verified revision to return to; it stays on revision 2"
    )
    assert "it is not installed" in str(Verification("h-staging", None, None).why_not_return())


def test_marking_rewrites_only_the_description_of_that_revision(tmp_path: Path) -> None:
    stored = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sh.helm.release.v1.h-staging.v3", "resourceVersion": "42"},
        "data": {"release": encode_release(RELEASE, "secret")},
    }
    env = kubectl_printing(tmp_path, stored)
    script = Path(env["KUBECTL_EXECUTABLE"])
    script.write_text(
        script.read_text() + f"import sys; sys.argv[1:2] == ['replace'] and pathlib.Path("
        f"'{tmp_path}/replaced').write_text(sys.stdin.read())\n"
    )
    description = mark_verified(
        "h-staging", "ns", 3, env=env, note="wave canary", now=datetime(2026, 12, 4, tzinfo=UTC)
    )
    assert description.endswith("; verified by hubploy 2026-12-04T00:00:00+00:00 (wave canary)")
    replaced = json.loads((tmp_path / "replaced").read_text())
    assert replaced["metadata"]["resourceVersion"] == "42"  # helm changing it meanwhile fails the write
    release = decode_release(replaced["data"]["release"], "secret")
    assert release == {**RELEASE, "info": {**RELEASE["info"], "description": description}}
    with pytest.raises(DeployError, match="helm storage driver 'sql' keeps no Secret or ConfigMap"):
        mark_verified("h-staging", "ns", 3, env={**env, "HELM_DRIVER": "sql"})
    (tmp_path / "doc.json").write_text(json.dumps({**stored, "data": {"release": "not helm's"}}))
    with pytest.raises(DeployError, match="is not in the format helm 3 and 4 write"):
        mark_verified("h-staging", "ns", 3, env=env)
