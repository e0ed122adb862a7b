"""Manifest HEAD against a local stand-in registry (Bearer and Basic flows, status distinctions) and
against the real sandbox registry."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from hubploy.errors import RegistryError
from hubploy.registry import MANIFEST_TYPES, RegistryCredentials, base_url, manifest_digest, split_repository

pytest_plugins = ["fixtures.sandbox"]

USER, PASSWORD, TOKEN = "ci", "cipass-secret", "tok-abc-123"
DIGEST = "sha256:" + "ab" * 32
BODY = b'{"schemaVersion": 2}'


class StandIn(http.server.BaseHTTPRequestHandler):
    """A registry: ``mode`` is basic | bearer | open; paths select the manifest's fate."""

    mode = "basic"
    requests: list[tuple[str, str, dict[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return self.mode == "open" or header == (basic if self.mode == "basic" else f"Bearer {TOKEN}")

    def _challenge(self) -> dict[str, str]:
        if self.mode == "basic":
            return {"WWW-Authenticate": 'Basic realm="stand-in"'}
        host, port = self.server.server_address[:2]
        return {
            "WWW-Authenticate": f'Bearer realm="http://{host}:{port}/token",service="stand-in",'
            f'scope="repository:team/app:pull"'
        }

    def do_GET(self) -> None:
        type(self).requests.append(("GET", self.path, dict(self.headers)))
        if self.path.startswith("/token"):
            basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if (
                self.headers.get("Authorization") != basic
                or "scope=repository%3Ateam%2Fapp%3Apull" not in self.path
            ):
                self._reply(401)
            else:
                self._reply(200, {"Content-Type": "application/json"}, b'{"token": "%s"}' % TOKEN.encode())
            return
        self.do_HEAD(record=False)

    def do_HEAD(self, record: bool = True) -> None:
        if record:
            type(self).requests.append(("HEAD", self.path, dict(self.headers)))
        if not self._authorized():
            self._reply(401, self._challenge())
        elif self.path.endswith("/manifests/present"):
            self._reply(200, {"Docker-Content-Digest": DIGEST})
        elif self.path.endswith("/manifests/nodigest"):
            self._reply(200, {}, BODY)
        elif self.path.endswith("/manifests/forbidden"):
            self._reply(403)
        elif self.path.endswith("/manifests/broken"):
            self._reply(500)
        else:
            self._reply(404)


@pytest.fixture
def stand_in() -> Iterator[str]:
    StandIn.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _creds(host: str, password: str = PASSWORD) -> RegistryCredentials:
    return RegistryCredentials(host, USER, password)


def test_repository_names_and_urls() -> None:
    assert split_repository("localhost:5000/hubploy/user") == ("localhost:5000", "hubploy/user")
    assert split_repository("us-docker.pkg.dev/p/r/user") == ("us-docker.pkg.dev", "p/r/user")
    assert split_repository("jupyter/base-notebook") == ("docker.io", "jupyter/base-notebook")
    assert split_repository("busybox") == ("docker.io", "library/busybox")
    assert base_url("localhost:5000") == "http://localhost:5000"
    assert base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert base_url("quay.io") == "https://quay.io"
    assert base_url("localhost.example.org:5000") == "https://localhost.example.org:5000"


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_present_absent_and_auth_flows(stand_in: str, mode: str) -> None:
    StandIn.mode = mode
    assert manifest_digest(f"{stand_in}/team/app", "present", _creds(stand_in)) == DIGEST
    assert manifest_digest(f"{stand_in}/team/app", "missing", _creds(stand_in)) is None
    head = next(h for m, p, h in StandIn.requests if m == "HEAD")
    assert head["Accept"] == ", ".join(MANIFEST_TYPES)
    assert "application/vnd.oci.image.manifest.v1+json" in MANIFEST_TYPES
    assert "application/vnd.docker.distribution.manifest.v2+json" in MANIFEST_TYPES
    if mode == "bearer":
        assert any(m == "GET" and p.startswith("/token?service=stand-in") for m, p, _ in StandIn.requests)


@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_wrong_or_missing_credentials_are_401_not_absent(stand_in: str, mode: str) -> None:
    StandIn.mode = mode
    for creds in (_creds(stand_in, "wrong-password"), None):
        if mode == "bearer" and creds is None:
            continue  # anonymous token request is refused the same way as a wrong password
        with pytest.raises(RegistryError) as info:
            manifest_digest(f"{stand_in}/team/app", "missing", creds)
        assert info.value.status == 401 and not info.value.transient
        assert "credentials" in str(info.value)


def test_403_500_and_unreachable(stand_in: str) -> None:
    StandIn.mode = "open"
    with pytest.raises(RegistryError) as forbidden:
        manifest_digest(f"{stand_in}/team/app", "forbidden")
    assert forbidden.value.status == 403 and not forbidden.value.transient
    with pytest.raises(RegistryError) as broken:
        manifest_digest(f"{stand_in}/team/app", "broken")
    assert broken.value.status == 500 and broken.value.transient
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RegistryError) as down:
        manifest_digest(f"{closed}/team/app", "present", timeout=2)
    assert down.value.status is None and down.value.transient and "cannot reach" in str(down.value)


def test_digest_computed_when_header_missing(stand_in: str) -> None:
    StandIn.mode = "open"
    assert manifest_digest(f"{stand_in}/team/app", "nodigest") == "sha256:" + hashlib.sha256(BODY).hexdigest()


@pytest.mark.sandbox
def test_against_the_sandbox_registry(sandbox) -> None:  # type: ignore[no-untyped-def]
    host = sandbox.registry
    user, password = sandbox.registry_auth
    creds = RegistryCredentials(host, user, password)
    digest = manifest_digest(f"{host}/base/busybox", "latest", creds)
    assert digest is not None and digest.startswith("sha256:")
    assert manifest_digest(f"{host}/base/busybox", "no-such-tag", creds) is None
    with pytest.raises(RegistryError) as info:
        manifest_digest(f"{host}/base/busybox", "latest", RegistryCredentials(host, user, "wrong-password"))
    assert info.value.status == 401
    with pytest.raises(RegistryError) as anonymous:
        manifest_digest(f"{host}/base/busybox", "latest")
    assert anonymous.value.status == 401
