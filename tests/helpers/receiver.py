"""A real HTTP receiver on loopback that keeps every request it gets (for notification tests)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)

    def wait_for(self, text: str, timeout: float = 60.0) -> Received:
        """The first request whose body contains ``text`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((r for r in list(self.requests) if text in r.body), None)
            if found is not None:
                return found
            bodies = [r.body for r in self.requests]
            assert time.monotonic() < deadline, f"no request with {text!r}; got {bodies}"
            time.sleep(0.2)


@contextlib.contextmanager
def http_receiver() -> Iterator[Receiver]:
    """``Receiver`` whose ``url`` is http://127.0.0.1:<port>; answers every POST with 200."""
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(Received("POST", self.path, dict(self.headers), self.rfile.read(length).decode()))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", received)
    finally:
        server.shutdown()
        server.server_close()
