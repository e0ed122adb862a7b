"""HTTP clients that share one TLS context per process. Building one loads the CA bundle, about 20 ms
of CPU, which every client would otherwise pay (a deploy opens two: registry lookups, health check)."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification context (certifi, or SSL_CERT_FILE/SSL_CERT_DIR), built once."""
    return httpx.create_ssl_context()


def client(**options: Any) -> httpx.Client:
    """An ``httpx.Client`` verifying with the shared TLS context; ``options`` as for httpx.Client."""
    return httpx.Client(verify=tls_context(), **options)
