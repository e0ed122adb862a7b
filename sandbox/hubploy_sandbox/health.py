"""Small HTTP readiness probes and a wait loop (stdlib only, so the CLI starts fast)."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from hubploy_sandbox.errors import SandboxError


def http_status(
    url: str,
    *,
    cafile: Path | None = None,
    token: str | None = None,
    basic: tuple[str, str] | None = None,
    method: str = "GET",
    timeout: float = 2.0,
    headers: dict[str, str] | None = None,
) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers."""
    req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if basic:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        )
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return None


def wait_for(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    log: Path | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``check`` until it is true; raise SandboxError after ``timeout`` s or when ``alive`` turns
    false."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and not alive():
            raise SandboxError(
                f"{what} exited while starting{_tail(log)}", hint=f"see {log}" if log else None
            )
        if time.monotonic() > deadline:
            raise SandboxError(
                f"{what} not ready after {timeout:.0f} s{_tail(log)}", hint=f"see {log}" if log else None
            )
        time.sleep(0.2)


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = log.read_text(errors="replace").strip().splitlines()
    return f": {lines[-1][:300]}" if lines else ""
