"""Container probes (startup, readiness, liveness) as a kubelet runs them: httpGet, tcpSocket and exec,
with their delay, period, timeout and thresholds.

One deviation, for test speed: until a probe first succeeds it runs every second at most, however long
its period (a kubelet waits a full period between tries).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from typing import Any

EAGER_PERIOD = 1.0


def _port(value: Any, container: dict[str, Any]) -> int:
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"no container port named {value!r}")


def check(
    probe: dict[str, Any], container: dict[str, Any], pod_ip: str, exec_prefix: list[str] | None
) -> tuple[bool, str]:
    """Run ``probe`` once: (success, what failed)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            host, port = get.get("host") or pod_ip, _port(get["port"], container)
            if get.get("scheme", "HTTP").upper() == "HTTPS":
                context = ssl.create_default_context()
                # a kubelet does not verify
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=context
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                conn.request(
                    "GET", get.get("path") or "/", headers={"User-Agent": "kube-probe/1.36", **headers}
                )
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in probe:
            sock = probe["tcpSocket"]
            with socket.create_connection(
                (sock.get("host") or pod_ip, _port(sock["port"], container)), timeout=timeout
            ):
                return True, ""
        if "exec" in probe:
            if exec_prefix is None:
                return False, "exec probe: the container is not running"
            done = subprocess.run(
                [*exec_prefix, *probe["exec"].get("command", [])],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            return done.returncode == 0, f"exec probe exited with {done.returncode}"
        return True, ""  # grpc probes are not run by the sandbox: counted as passing
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as exc:
        return False, f"probe failed: {type(exc).__name__}: {exc}"


@dataclass
class ProbeState:
    """Thresholds and timing of one probe of one running container."""

    probe: dict[str, Any]
    started: float
    successes: int = 0
    failures: int = 0
    passed: bool = False  # reached successThreshold and not failed since
    ever_passed: bool = False
    next_at: float = 0.0
    last_failure: str = ""

    def __post_init__(self) -> None:
        self.next_at = self.started + float(self.probe.get("initialDelaySeconds") or 0)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, why: str, now: float) -> None:
        period = float(self.probe.get("periodSeconds") or 10)
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.probe.get("successThreshold") or 1):
                self.passed = self.ever_passed = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.last_failure = why
            if self.failures >= self.threshold:
                self.passed = False
        self.next_at = now + (period if self.ever_passed else min(period, EAGER_PERIOD))

    @property
    def threshold(self) -> int:
        return int(self.probe.get("failureThreshold") or 3)

    @property
    def failed(self) -> bool:
        """Failed failureThreshold times in a row (liveness and startup probes then restart the container)."""
        return self.failures >= self.threshold


def now() -> float:
    return time.monotonic()
