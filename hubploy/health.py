"""Post-deploy health check: the hub answers as JupyterHub does (helm's ``--wait`` covers the rollouts),
and, with ``rollout.smoke_test: spawn`` in hubploy-repo.yaml, a user's server starts.

Where the hub is: ``environments.<env>.url`` of its hubploy.yaml when set; otherwise the release's
``proxy-public`` Service read from the Kubernetes API (its load-balancer address, else its cluster IP),
then the ``hub`` Service's cluster IP: what users reach on a real cluster, and through the chart's own
proxy to its hub.

The spawn smoke test does what JupyterHub's own CI does, through the hub's REST API at that address:
create (or reuse) the smoke-test user, start its server, wait until the server answers through the
proxy (``/user/<name>/api``), stop it, and report the times. Its token is the API token of the hub
service ``rollout.spawn.service``, read from the release's hub Secret (``hub.services.<name>.apiToken``,
where Zero to JupyterHub keeps a given or generated service token); a ``hub.loadRoles`` role gives
that service the scopes admin:users, admin:servers and access:servers.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from hubploy import http
from hubploy.config.repo_settings import SmokeTest, SpawnTest
from hubploy.errors import HealthCheckError
from hubploy.layout import Hub
from hubploy.runner import register_secret, run

log = logging.getLogger("hubploy.health")

PROXY_SERVICE, HUB_SERVICE = "proxy-public", "hub"


def kubectl_argv(env: Mapping[str, str], kube_context: str | None, *args: str) -> list[str]:
    return [
        env.get("KUBECTL_EXECUTABLE", "kubectl"),
        *(["--context", kube_context] if kube_context else []),
        *args,
    ]


def service_url(service: Mapping[str, Any], path_prefix: str = "") -> str | None:
    """``http://<address>:<port><path_prefix>`` of a Service: its load-balancer ingress, else its
    cluster IP."""
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


def find_hub(
    namespace: str, release: str, env: Mapping[str, str], kube_context: str | None = None
) -> tuple[str | None, str]:
    """(URL of the hub, "") from the release's Services, or (None, why not)."""
    selector = f"release={release}"
    got = run(
        kubectl_argv(env, kube_context, "get", "services", "-n", namespace, "-l", selector, "-o", "json"),
        env=env,
        check=False,
        timeout=60,
    )
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


def url_source(
    hub: Hub,
    env_name: str,
    namespace: str,
    release: str,
    env: Mapping[str, str],
    kube_context: str | None = None,
) -> Callable[[], tuple[str | None, str]]:
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
                raise HealthCheckError(
                    f"the hub did not answer as JupyterHub within {timeout:.0f} s: {why}",
                    hint="set environments.<env>.url in hubploy.yaml to the hub's public "
                    "URL if the cluster's addresses cannot be reached from here",
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True)
class SpawnTimes:
    """How long the spawn smoke test took, in seconds."""

    user: str
    started: float  # from the start request until the hub says the server is ready
    reachable: float  # then until the server answers through the proxy
    stopped: float  # then until the hub says it is stopped

    def summary(self) -> str:
        return (
            f"server of {self.user} started in {self.started:.1f} s, answered through the proxy "
            f"{self.reachable:.1f} s later, stopped in {self.stopped:.1f} s"
        )


@dataclass(frozen=True)
class HubCheck:
    """What a passed check saw: the hub's URL and JupyterHub version, and the spawn test's times."""

    url: str
    version: str
    spawn: SpawnTimes | None = None

    def summary(self) -> str:
        return f"JupyterHub {self.version}" + (f"; {self.spawn.summary()}" if self.spawn else "")


def spawn_settings(hub: Hub) -> SpawnTest | None:
    """The spawn test's settings when the hub's repository asks for it (``rollout.smoke_test: spawn``)."""
    rollout = hub.repo.settings.rollout
    return rollout.spawn if rollout is not None and rollout.smoke_test is SmokeTest.spawn else None


def service_token(
    namespace: str, release: str, service: str, env: Mapping[str, str], kube_context: str | None = None
) -> str:
    """The API token of hub service ``service``, from the release's hub Secret (registered as a secret)."""
    key = f"hub.services.{service}.apiToken"
    argv = kubectl_argv(
        env,
        kube_context,
        "get",
        "secrets",
        "-n",
        namespace,
        "-l",
        f"release={release},component=hub",
        "-o",
        "json",
    )
    got = run(argv, env=env, check=False, timeout=60)
    if got.returncode != 0:
        raise HealthCheckError(
            f"spawn smoke test: cannot read the hub Secret of {release}: "
            f"{got.stderr.strip().splitlines()[-1:]}"
        )
    for secret in json.loads(got.stdout).get("items") or []:
        encoded = (secret.get("data") or {}).get(key)
        if encoded:
            try:
                token = base64.b64decode(encoded).decode()
            except (binascii.Error, UnicodeDecodeError):
                break
            register_secret(token)
            return token
    raise HealthCheckError(
        f"spawn smoke test: the hub Secret of {release} has no {key}",
        hint=f"declare the service in the hub's values (jupyterhub.hub.services.{service}: {{}}) with a "
        f"jupyterhub.hub.loadRoles role giving it admin:users, admin:servers and access:servers, or "
        f"name another service in rollout.spawn.service",
    )


class _HubAPI:
    """The REST calls of the spawn test, with the service's token, at the hub's public address."""

    def __init__(self, url: str, token: str, user: str, client: httpx.Client) -> None:
        self.base = url.rstrip("/")
        self.user = user
        self.client = client
        self.headers = {"Authorization": f"token {token}"}

    def call(self, method: str, path: str, *, ok: tuple[int, ...], what: str) -> httpx.Response:
        try:
            response = self.client.request(method, f"{self.base}{path}", headers=self.headers)
        except httpx.HTTPError as exc:
            raise HealthCheckError(f"spawn smoke test: {what}: {type(exc).__name__}: {exc}") from None
        if response.status_code in ok:
            return response
        hint = None
        if response.status_code == 403:
            hint = (
                "give the smoke-test service a jupyterhub.hub.loadRoles role with the scopes "
                "admin:users, admin:servers and access:servers"
            )
        raise HealthCheckError(
            f"spawn smoke test: {what}: HTTP {response.status_code} {_reason(response)}", hint=hint
        )

    def server(self) -> dict[str, Any] | None:
        """The user's default server as the hub reports it (None: it has none)."""
        user = self.call(
            "GET", f"/hub/api/users/{self.user}", ok=(200,), what=f"read user {self.user}"
        ).json()
        servers = user.get("servers") or {}
        return servers.get("")

    def progress(self, deadline: float) -> Iterator[dict[str, Any]]:
        """The spawn's progress events (JupyterHub's event stream) until it ends or ``deadline`` passes."""
        remaining = max(deadline - time.monotonic(), 0.1)
        try:
            with self.client.stream(
                "GET",
                f"{self.base}/hub/api/users/{self.user}/server/progress",
                headers=self.headers,
                timeout=httpx.Timeout(5.0, read=remaining),
            ) as stream:
                if stream.status_code != 200:
                    return
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line.removeprefix("data:"))
                    if time.monotonic() > deadline:
                        return
        except (httpx.HTTPError, ValueError):
            return


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or "")[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def spawn_smoke_test(
    url: str,
    token: str,
    settings: SpawnTest,
    *,
    client: httpx.Client,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> SpawnTimes:
    """Start the smoke-test user's server at the hub ``url``, wait until it answers through the proxy,
    stop it; its times, else HealthCheckError saying what failed (the server is stopped either way)."""
    api = _HubAPI(url, token, settings.user, client)
    user_path = f"/hub/api/users/{settings.user}"
    if api.call("GET", user_path, ok=(200, 404), what=f"look up user {settings.user}").status_code == 404:
        api.call("POST", user_path, ok=(201, 409), what=f"create user {settings.user}")
    if api.server() is not None:  # left by an interrupted check: start afresh
        _stop(api, time.monotonic() + settings.timeout)
    start = time.monotonic()
    deadline = start + settings.timeout
    try:
        api.call("POST", f"{user_path}/server", ok=(201, 202), what=f"start the server of {settings.user}")
        _wait_ready(api, deadline, settings.timeout)
        ready = time.monotonic()
        _wait_reachable(api, deadline)
        reachable = time.monotonic()
    except BaseException:
        try:
            _stop(api, time.monotonic() + 30)
        except HealthCheckError as exc:
            logger.warning("spawn smoke test: could not stop the server of %s: %s", settings.user, exc)
        raise
    _stop(api, time.monotonic() + settings.timeout)
    return SpawnTimes(
        settings.user,
        round(ready - start, 3),
        round(reachable - ready, 3),
        round(time.monotonic() - reachable, 3),
    )


def _wait_ready(api: _HubAPI, deadline: float, timeout: float) -> None:
    """Until the hub says the server is ready, following its progress events (the stream is opened
    again if it ends early, e.g. cut by a proxy); HealthCheckError with the hub's last message."""
    last = "no progress reported"
    while True:
        for event in api.progress(deadline):
            last = str(event.get("message") or last)
            if event.get("ready"):
                return
            if event.get("failed"):
                raise HealthCheckError(f"spawn smoke test: the server of {api.user} failed to start: {last}")
        server = api.server()
        if server is not None and server.get("ready"):
            return
        if server is None:
            raise HealthCheckError(
                f"spawn smoke test: the server of {api.user} stopped while starting: {last}"
            )
        if time.monotonic() > deadline:
            raise HealthCheckError(
                f"spawn smoke test: the server of {api.user} did not start within "
                f"{timeout:g} s; last progress: {last}"
            )
        time.sleep(1.0)


def _wait_reachable(api: _HubAPI, deadline: float) -> None:
    """Until ``/user/<name>/api`` answers through the proxy like a Jupyter server (a route may lag)."""
    why = "not tried"
    while True:
        try:
            response = api.client.get(f"{api.base}/user/{api.user}/api", headers=api.headers)
            if response.status_code == 200 and "version" in response.json():
                return
            why = f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise HealthCheckError(
                f"spawn smoke test: the server of {api.user} started but does not answer "
                f"at {api.base}/user/{api.user}/api: {why}"
            )
        time.sleep(0.5)


def _stop(api: _HubAPI, deadline: float) -> None:
    """Stop the user's server (a pending start is cancelled) and wait until the hub says it is gone."""
    api.call(
        "DELETE", f"/hub/api/users/{api.user}/server", ok=(202, 204), what=f"stop the server of {api.user}"
    )
    while api.server() is not None:
        if time.monotonic() > deadline:
            raise HealthCheckError(f"spawn smoke test: the server of {api.user} did not stop in time")
        time.sleep(0.5)


def check_hub(
    hub: Hub,
    env_name: str,
    *,
    namespace: str,
    release: str,
    env: Mapping[str, str],
    timeout: float = 180.0,
    kube_context: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> HubCheck:
    """The hub API answers as JupyterHub; with ``rollout.smoke_test: spawn``, a user's server also starts
    and answers through the proxy. What the check saw, else HealthCheckError."""
    version, url = wait_for_hub_api(
        url_source(hub, env_name, namespace, release, env, kube_context), timeout=timeout
    )
    logger.info("health check of %s passed: %s/hub/api answers JupyterHub %s", release, url, version)
    settings = spawn_settings(hub)
    if settings is None:
        return HubCheck(url, version)
    token = service_token(namespace, release, settings.service, env, kube_context)
    with http.client(timeout=10.0, follow_redirects=True) as client:
        times = spawn_smoke_test(url, token, settings, client=client, logger=logger)
    logger.info("spawn smoke test of %s passed: %s", release, times.summary())
    return HubCheck(url, version, times)


def check_health(
    hub: Hub,
    env_name: str,
    *,
    namespace: str,
    release: str,
    env: Mapping[str, str],
    timeout: float = 180.0,
    kube_context: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log,
) -> str:
    """``check_hub``, returning the JupyterHub version.

    Call it after ``helm upgrade/rollback --wait``: helm has already waited for the release's rollouts.
    """
    return check_hub(
        hub,
        env_name,
        namespace=namespace,
        release=release,
        env=env,
        timeout=timeout,
        kube_context=kube_context,
        logger=logger,
    ).version
