"""The kubelet's HTTPS port, for what the API server asks of it: ``/containerLogs/<ns>/<pod>/<container>``
(``kubectl logs``, with ``follow``, ``previous``, ``tailLines`` and ``limitBytes``) and ``/healthz``."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from hubploy.runner import child_env, run


def ensure_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """A self-signed serving certificate for ``address`` (the API server does not verify it: it is started
    without --kubelet-certificate-authority)."""
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not cert.exists() or not key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "365",
                "-subj",
                "/CN=sandbox-node",
                "-addext",
                f"subjectAltName=IP:{address}",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            env=child_env(),
        )
        key.chmod(0o600)
    return cert, key


LogFiles = Callable[[str, str, str, bool], "tuple[Path | None, Callable[[], bool]]"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: the agent logs what matters
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._send(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._send(404, b"not found")
            return
        _, namespace, pod, container = parts
        previous = query.get("previous", ["false"])[0] == "true"
        file, running = self.server.files(namespace, pod, container, previous)
        if file is None:
            self._send(404, f'container "{container}" in pod "{pod}" has no logs'.encode())
            return
        data = file.read_bytes()
        if "tailLines" in query:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"][0])]
        follow = query.get("follow", ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if not follow:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.end_headers()
        self.wfile.write(data)
        position = file.stat().st_size
        try:
            while True:
                size = file.stat().st_size
                if size > position:
                    with open(file, "rb") as handle:
                        handle.seek(position)
                        self.wfile.write(handle.read(size - position))
                    self.wfile.flush()
                    position = size
                elif not running():
                    return
                time.sleep(0.3)
        except (OSError, BrokenPipeError):
            return

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: LogFiles


def serve(address: str, port: int, cert: Path, key: Path, files: LogFiles) -> _Server:
    """Start the kubelet port in a thread; ``files(ns, pod, container, previous)`` gives the log file and a
    function telling whether the container still runs."""
    server = _Server((address, port), _Handler)
    server.files = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="kubelet-port", daemon=True).start()
    return server
