"""A registry on loopback that speaks registry v2 token auth as quay.io and Docker Hub do, in front of a real
registry (the sandbox's). Every /v2/ request without a valid token gets 401 and
``WWW-Authenticate: Bearer realm="<its /token>",service="<service>",scope="repository:<name>:pull"``;
/token gives anyone a pull token for a public repository and, for any other, only to Basic credentials.
A request with a valid token is passed to the registry behind it with that registry's own credentials.
"""

from __future__ import annotations

import base64
import http.server
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import parse_qs, urlparse

import httpx

SERVICE = "token-registry.test"
_PASSED_HEADERS = ("Content-Type", "Docker-Content-Digest", "Content-Length")


@dataclass
class TokenRegistry:
    upstream: str  # base URL of the registry behind it, e.g. http://localhost:5000
    upstream_auth: tuple[str, str]
    public: tuple[str, ...]  # repository globs anyone may pull
    users: dict[str, str]  # Basic credentials for the others
    host: str = ""  # 127.0.0.1:<port>, once started
    token_requests: list[dict[str, str]] = field(default_factory=list)
    _tokens: dict[str, set[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def grant(self, scope: str, authorization: str | None) -> str | None:
        """A token for ``repository:<name>:pull``, or None when it may not have one."""
        parts = scope.split(":")
        if len(parts) != 3 or parts[0] != "repository" or "pull" not in parts[2].split(","):
            return None
        name = parts[1]
        user = self._user(authorization)
        if user is None and not any(fnmatchcase(name, pattern) for pattern in self.public):
            return None
        token = secrets.token_hex(16)
        with self._lock:
            self._tokens[token] = {name}
        return token

    def _user(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def allowed(self, authorization: str | None, name: str) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self._lock:
            return name in self._tokens.get(authorization[7:], set())


def _handler(registry: TokenRegistry) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/token":
                query = {key: values[0] for key, values in parse_qs(url.query).items()}
                registry.token_requests.append(
                    {**query, "basic": str(self.headers.get("Authorization") is not None)}
                )
                token = (
                    registry.grant(query.get("scope", ""), self.headers.get("Authorization"))
                    if query.get("service") == SERVICE
                    else None
                )
                if token is None:
                    self._reply(
                        401, {"Content-Type": "application/json"}, b'{"errors": [{"code": "UNAUTHORIZED"}]}'
                    )
                else:  # Docker Hub gives both fields; quay.io the first
                    self._reply(
                        200,
                        {"Content-Type": "application/json"},
                        b'{"token": "%s", "access_token": "%s"}' % (token.encode(), token.encode()),
                    )
                return
            self._v2()

        def do_HEAD(self) -> None:
            self._v2()

        def _v2(self) -> None:
            path = urlparse(self.path).path
            name = path.removeprefix("/v2/").rsplit("/manifests/", 1)[0] if "/manifests/" in path else ""
            if not registry.allowed(self.headers.get("Authorization"), name):
                realm = f"http://{registry.host}/token"
                challenge = f'Bearer realm="{realm}",service="{SERVICE}",scope="repository:{name}:pull"'
                self._reply(
                    401,
                    {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                    b'{"errors": [{"code": "UNAUTHORIZED"}]}',
                )
                return
            upstream = httpx.request(
                self.command,
                registry.upstream + path,
                auth=registry.upstream_auth,
                headers={"Accept": self.headers.get("Accept", "*/*")},
                timeout=30,
            )
            headers = {key: upstream.headers[key] for key in _PASSED_HEADERS if key in upstream.headers}
            self._reply(upstream.status_code, headers, upstream.content)

    return Handler


@contextmanager
def serving(registry: TokenRegistry) -> Iterator[TokenRegistry]:
    """Run ``registry`` on a free loopback port (``registry.host``) while the block lasts."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
