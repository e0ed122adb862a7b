"""The agent's list-and-watch loop, and the Events it records (as a kubelet does)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from hubploy_sandbox.agent.rest import Api, ApiError, path

log = logging.getLogger("hubploy_sandbox.agent")


def timestamp(micro: bool = False) -> str:
    """Now in the API's time format (MicroTime with ``micro``)."""
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def watch_forever(
    name: str,
    api: Api,
    url: str,
    stopping: threading.Event,
    handle: Callable[[str, dict[str, Any]], None],
    *,
    synced: Callable[[], None] | None = None,
    **params: Any,
) -> None:
    """List ``url``, hand every object to ``handle("ADDED", obj)``, call ``synced`` (once), then watch from
    that point (``handle(event type, obj)``); list again after an error or an expired watch."""
    announced = False
    while not stopping.is_set():
        try:
            listing = api.get(url, **params)
            for item in listing.get("items") or []:
                handle("ADDED", item)
            if synced is not None and not announced:
                synced()
                announced = True
            version = listing["metadata"]["resourceVersion"]
            while not stopping.is_set():
                for event in api.watch(url, version, **params):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        raise ApiError(obj.get("code", 500), obj.get("reason", ""), obj.get("message", ""))
                    version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        handle(kind, obj)
                    if stopping.is_set():
                        return
        except Exception as exc:  # a broken watch must not end the agent: list again
            expired = isinstance(exc, ApiError) and exc.status == 410
            if not expired:
                log.exception("%s watch failed; listing again", name)
            stopping.wait(0.2 if expired else 1.0)


class Recorder:
    """Writes core/v1 Events about the objects of this node (``source.component: kubelet``)."""

    def __init__(self, api: Api, node: str) -> None:
        self.api, self.node = api, node

    def event(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        field_path: str | None = None,
    ) -> None:
        meta = obj["metadata"]
        when = timestamp()
        involved = {
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "apiVersion": obj.get("apiVersion", "v1"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace", "default")},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "count": 1,
            "firstTimestamp": when,
            "lastTimestamp": when,
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        }
        try:
            self.api.create(path("events", body["metadata"]["namespace"]), body)
        except (ApiError, OSError) as exc:  # best effort: the namespace may be terminating
            log.debug("event %s on %s/%s not recorded: %s", reason, meta.get("namespace"), meta["name"], exc)
