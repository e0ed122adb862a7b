"""Post-deploy health check: the hub answers as JupyterHub does (helm's ``--wait`` covers the rollouts).

Where the hub is: ``environments.<env>.url`` of its hubploy.yaml when set; otherwise the release's
``proxy-public`` Service read from the Kubernetes API (its load-balancer address, else its cluster IP),
then the ``hub`` Service's cluster IP: what users reach on a real cluster, and through the chart's own
proxy to its hub.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from hubploy import http
from hubploy.errors import HealthCheckError
from hubploy.layout import Hub
from hubploy.runner import run

log = logging.getLogger("hubploy.health")

PROXY_SERVICE, HUB_SERVICE = "proxy-public", "hub"


def kubectl_argv(env: Mapping[str, str], kube_context: str | None, *args: str) -> list[str]:
    return [env.get("KUBECTL_EXECUTABLE", "kubectl"), *(["--context", kube_context] if kube_context else []), *args]


def service_url(service: Mapping[str, Any], path_prefix: str = "") -> str | None:
    """``http://<address>:<port><path_prefix>`` of a Service: its load-balancer ingress, else its cluster IP."""
    spec = service.get("spec") or {}
    ports = spec.get("ports") or []
    if not ports:
        return None
    port = ports[0]["port"]
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if spec.get("type") == "LoadBalancer" and ingress:
        address = ingress[0].get("ip") or ingress[0].get("hostname")
    else:
        address = spec.get("clusterIP") if spec.get("clusterIP") not in (None, "", "None") else None
    if not address:
        return None
    host = f"[{address}]" if ":" in address else address
    suffix = "" if port == 80 else f":{port}"
    return f"http://{host}{suffix}{path_prefix}"


def find_hub(namespace: str, release: str, env: Mapping[str, str],
             kube_context: str | None = None) -> tuple[str | None, str]:
    """(URL of the hub, "") from the release's Services, or (None, why not)."""
    selector = f"release={release}"
    got = run(kubectl_argv(env, kube_context, "get", "services", "-n", namespace, "-l", selector, "-o", "json"),
              env=env, check=False, timeout=60)
    if got.returncode != 0:
        return None, f"cannot list the Services of {namespace}: {got.stderr.strip().splitlines()[-1:]}"
    services = {s["metadata"]["name"]: s for s in json.loads(got.stdout).get("items") or []}
    by_component = {(s["metadata"].get("labels") or {}).get("component"): s for s in services.values()}
    proxy = by_component.get(PROXY_SERVICE) or services.get(PROXY_SERVICE)
    if proxy is not None and (url := service_url(proxy)):
        return url, ""
    hub = by_component.get(HUB_SERVICE) or services.get(HUB_SERVICE)
    if hub is not None and (url := service_url(hub)):
        return url, ""
    if proxy is not None:
        return None, f"Service {namespace}/{proxy['metadata']['name']} has no address yet"
    return None, f"release {release} has no {PROXY_SERVICE} or {HUB_SERVICE} Service in {namespace}"


def url_source(hub: Hub, env_name: str, namespace: str, release: str, env: Mapping[str, str],
               kube_context: str | None = None) -> Callable[[], tuple[str | None, str]]:
    """A function giving (the hub's URL, "") or (None, why not): the configured URL, else the one the
    Kubernetes API tells (read again until it is known)."""
    configured = hub.url(env_name)
    if configured:
        return lambda: (configured, "")
    found: list[str] = []

    def from_api() -> tuple[str | None, str]:
        if found:
            return found[0], ""
        url, why = find_hub(namespace, release, env, kube_context)
        if url:
            found.append(url)
        return url, why
    return from_api


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


def wait_for_hub_api(urls: Callable[[], tuple[str | None, str]], *, timeout: float) -> tuple[str, str]:
    """Poll until the hub answers (backoff 0.5 s doubling to 5 s); (its version, its URL), else
    HealthCheckError with the last reason."""
    deadline = time.monotonic() + timeout
    delay = 0.5
    with http.client(timeout=5.0, follow_redirects=True) as client:
        while True:
            url, why = urls()
            if url:
                version, why = probe_hub_api(url, client=client)
                if version is not None:
                    return version, url
            if time.monotonic() + delay > deadline:
                raise HealthCheckError(f"the hub did not answer as JupyterHub within {timeout:.0f} s: {why}",
                                       hint="set environments.<env>.url in hubploy.yaml to the hub's public URL "
                                            "if the cluster's addresses cannot be reached from here")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def check_health(hub: Hub, env_name: str, *, namespace: str, release: str, env: Mapping[str, str],
                 timeout: float = 180.0, kube_context: str | None = None,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> str:
    """The hub API answers as JupyterHub; returns its version.

    Call it after ``helm upgrade/rollback --wait``: helm has already waited for the release's rollouts.
    """
    version, url = wait_for_hub_api(url_source(hub, env_name, namespace, release, env, kube_context),
                                    timeout=timeout)
    logger.info("health check of %s passed: %s/hub/api answers JupyterHub %s", release, url, version)
    return version
