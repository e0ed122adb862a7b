"""A small JSON client of the Kubernetes API for the agent: requests and watches on plain dicts in the
API's own JSON form, independent of any client library's model classes. One keep-alive connection per
thread."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def path(
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    *,
    group: str = "",
    subresource: str | None = None,
) -> str:
    """The API path of ``resource`` (plural, e.g. "pods"); ``group`` like "apps/v1" (core if empty)."""
    parts = ["/api/v1"] if not group else ["/apis", group]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(resource)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(p.strip("/") if i else p for i, p in enumerate(parts))


class Api:
    def __init__(self, host: str, port: int, token: str, cafile: Path, timeout: float = 30.0) -> None:
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self.context = ssl.create_default_context(cafile=str(cafile))
        self._local = threading.local()

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=timeout)

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        payload = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json",
            "Content-Type": content_type,
        }
        for attempt in (1, 2):  # a kept-alive connection the server closed meanwhile: reconnect once
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection(self.timeout)
            try:
                conn.request(method, url, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        result = json.loads(data) if data else {}
        if response.status >= 400:
            raise ApiError(response.status, result.get("reason", response.reason), result.get("message", ""))
        return result

    def get(self, url: str, **params: Any) -> JSON:
        return self.request("GET", url, params=params)

    def create(self, url: str, body: JSON) -> JSON:
        return self.request("POST", url, body)

    def merge_patch(self, url: str, body: JSON) -> JSON:
        return self.request("PATCH", url, body, content_type="application/merge-patch+json")

    def delete(self, url: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", url, body)

    def watch(self, url: str, resource_version: str, timeout: int = 60, **params: Any) -> Iterator[JSON]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends the watch."""
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "resourceVersion": resource_version,
                "timeoutSeconds": timeout,
                "allowWatchBookmarks": "true",
                **params,
            }
        )
        conn = self._connection(timeout + 15)
        try:
            conn.request("GET", f"{url}?{query}", headers={"Authorization": f"Bearer {self.token}"})
            response = conn.getresponse()
            if response.status >= 400:
                raise ApiError(response.status, response.reason, response.read().decode(errors="replace"))
            for line in response:
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()


def ignore(statuses: tuple[int, ...], func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args)``, or None when the API answers one of ``statuses`` (e.g. 404 gone, 409 conflict)."""
    try:
        return func(*args, **kwargs)
    except ApiError as exc:
        if exc.status in statuses:
            return None
        raise
