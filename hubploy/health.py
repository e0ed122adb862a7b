"""Post-deploy health check: the hub answers as JupyterHub does (helm's ``--wait`` covers the rollouts).

The hub's URL is ``environments.<env>.url`` of its hubploy.yaml. On the sandbox the JSON map at
``HUBPLOY_HUB_URLS`` (``{"<namespace or release>": "http://127.0.0.1:PORT"}``) takes precedence: it
names the real JupyterHub process the sandbox runs for the release, and it is re-read on every try
because a replaced hub pod gets a new process and port.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from hubploy import http
from hubploy.errors import HealthCheckError
from hubploy.layout import Hub

log = logging.getLogger("hubploy.health")

HUB_URLS_ENV = "HUBPLOY_HUB_URLS"
# The sandbox agent notices a replaced hub pod within ~1 s; a success must hold across that window.
CONFIRM_DELAY = 1.2


def url_source(hub: Hub, env_name: str, namespace: str, release: str,
               env: Mapping[str, str]) -> Callable[[], str | None]:
    """A function giving the hub's current URL (None while unknown)."""
    urls_file = env.get(HUB_URLS_ENV)
    if urls_file:
        def from_map() -> str | None:
            try:
                urls = json.loads(Path(urls_file).read_text())
            except (OSError, ValueError):
                return None
            return urls.get(namespace) or urls.get(release)
        return from_map
    url = hub.url(env_name)
    return lambda: url


def probe_hub_api(url: str, *, client: httpx.Client) -> tuple[str | None, str]:
    """(JupyterHub version, "") when ``<url>/hub/api`` answers like JupyterHub, else (None, why not)."""
    try:
        response = client.get(url.rstrip("/") + "/hub/api")
    except httpx.HTTPError as exc:
        return None, f"{url}/hub/api: {type(exc).__name__}: {exc}"
    if response.status_code != 200:
        return None, f"{url}/hub/api answered HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return None, f"{url}/hub/api answered something that is not JSON"
    if not isinstance(body, dict) or "version" not in body:
        return None, f"{url}/hub/api answered JSON without a JupyterHub version: {str(body)[:200]}"
    return str(body["version"]), ""


def wait_for_hub_api(urls: Callable[[], str | None], *, timeout: float, confirm: bool = False) -> str:
    """Poll until the hub answers (backoff 0.5 s doubling to 5 s); its version, else HealthCheckError.

    With ``confirm``, a success counts only if the URL is unchanged and answers again after
    CONFIRM_DELAY (the sandbox may still list the hub of a pod that was just replaced).
    """
    deadline = time.monotonic() + timeout
    delay, why = 0.5, "no URL for the hub yet"
    with http.client(timeout=5.0, follow_redirects=True) as client:
        while True:
            url = urls()
            if url:
                version, why = probe_hub_api(url, client=client)
                if version is not None and confirm:
                    time.sleep(CONFIRM_DELAY)
                    if urls() == url:
                        version, why = probe_hub_api(url, client=client)
                    else:
                        version, why = None, f"the hub moved from {url} to {urls()}"
                if version is not None:
                    return version
            if time.monotonic() + delay > deadline:
                raise HealthCheckError(f"the hub did not answer as JupyterHub within {timeout:.0f} s: {why}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def check_health(hub: Hub, env_name: str, *, namespace: str, release: str, env: Mapping[str, str],
                 timeout: float = 180.0, just_replaced: bool = True,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> str | None:
    """The hub API answers as JupyterHub; returns its version (None when no URL is configured).

    Call it after ``helm upgrade/rollback --wait``: helm has already waited for the release's rollouts.
    ``just_replaced=False`` (a release left as it was) skips the sandbox's confirmation delay.
    """
    urls = url_source(hub, env_name, namespace, release, env)
    on_sandbox = HUB_URLS_ENV in env
    if not on_sandbox and urls() is None:
        logger.warning("hub %s has no url for %s in hubploy.yaml; its health was not checked", hub.name, env_name)
        return None
    version = wait_for_hub_api(urls, timeout=timeout, confirm=on_sandbox and just_replaced)
    logger.info("health check of %s passed: %s/hub/api answers JupyterHub %s", release, urls(), version)
    return version
