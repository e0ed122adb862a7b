"""Which Prefect server a command talks to: PREFECT_API_URL when it is set, else the server `hubploy up`
runs on this machine (with its auth string). Prefect is imported only when a command needs a server."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hubploy.errors import HubployError


def configured() -> dict[str, str] | None:
    """The settings to reach a server: {} when PREFECT_API_URL is set (Prefect reads it), the local
    `hubploy up` server's, or None when there is no server to talk to."""
    if os.environ.get("PREFECT_API_URL"):
        return {}
    from hubploy.triggers.stack import client_settings

    return client_settings()


@contextlib.contextmanager
def prefect_server(*, required: bool = True) -> Iterator[bool]:
    """Inside the block, Prefect's client reaches the server (True), or there is none (False; with
    ``required`` a HubployError says how to get one)."""
    settings = configured()
    if settings is None:
        if required:
            raise HubployError(
                "no Prefect server to talk to",
                hint="start one with `hubploy up`, or set PREFECT_API_URL (and PREFECT_API_AUTH_STRING)",
            )
        yield False
        return
    if not settings:
        yield True
        return
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(
        updates={
            PREFECT_API_URL: settings["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: settings["PREFECT_API_AUTH_STRING"],
        }
    ):
        yield True
