"""Container registry access over the Distribution HTTP API, and per-run registry auth files.

:func:`manifest_digest` answers "does ``name:tag`` exist?" with a manifest HEAD (OCI and Docker v2
media types), doing the ``WWW-Authenticate`` dance itself (Bearer token or Basic). A 404 means
"absent"; 401/403 and every other failure raise :class:`~hubploy.errors.RegistryError`, whose
``transient`` is true only for 5xx/429 and connection errors. Registries on localhost/127.0.0.1 are
spoken to over plain http, every other one over https.

:func:`auth_files` writes credentials for one run into a private temp dir (docker ``config.json``,
which is also the containers-auth.json format) and yields the env overrides for child processes;
the user's ``~/.docker`` and ``~/.config/containers`` are never read or written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hubploy import http
from hubploy.config.models import DOCKER_HUB
from hubploy.config.models import split_repository as split_repository  # part of this module's API
from hubploy.errors import RegistryError
from hubploy.runner import register_secret
from hubploy.workspace import private_dir

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TIMEOUT = 30.0
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class RegistryCredentials:
    host: str
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        register_secret(self.password)


@dataclass(frozen=True)
class AuthFiles:
    """A temporary auth file and the env overrides that make docker, buildah and skopeo use it."""

    path: Path
    env: dict[str, str]


def is_local(host: str) -> bool:
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return hostname in _LOCAL_HOSTS


def base_url(host: str) -> str:
    if host == DOCKER_HUB:
        return "https://registry-1.docker.io"
    return f"{'http' if is_local(host) else 'https'}://{host}"


def manifest_digest(
    name: str,
    tag: str,
    credentials: RegistryCredentials | None = None,
    *,
    client: httpx.Client | None = None,
    timeout: float = TIMEOUT,
) -> str | None:
    """The digest of ``name:tag``, or None when the registry answers 404 (manifest unknown)."""
    host, repository = split_repository(name)
    url = f"{base_url(host)}/v2/{repository}/manifests/{tag}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(http.client(timeout=timeout))
        response = _request(client, "HEAD", url, headers)
        if response.status_code == 401:
            headers = {
                **headers,
                **_authorization(client, response, repository, credentials, f"{name}:{tag}"),
            }
            response = _request(client, "HEAD", url, headers)
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            return response.headers.get("Docker-Content-Digest") or _digest_from_body(client, url, headers)
        raise _status_error(response.status_code, f"{name}:{tag}", host)


def _request(
    client: httpx.Client,
    method: str,
    url: str,
    headers: Mapping[str, str],
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    try:
        return client.request(method, url, headers=dict(headers), auth=auth)
    except httpx.TransportError as exc:
        raise RegistryError(
            f"cannot reach the registry at {url}: {type(exc).__name__}: {exc}",
            hint="check that the registry is up and reachable",
        ) from None


def _authorization(
    client: httpx.Client,
    challenge: httpx.Response,
    repository: str,
    credentials: RegistryCredentials | None,
    what: str,
) -> dict[str, str]:
    """The Authorization header answering a 401's WWW-Authenticate challenge."""
    header = challenge.headers.get("WWW-Authenticate", "")
    scheme = header.split(" ", 1)[0].lower()
    params = dict(_CHALLENGE_PARAM.findall(header))
    basic = (credentials.username, credentials.password) if credentials else None
    if scheme == "basic":
        if basic is None:
            raise _status_error(401, what, challenge.url.host)
        return {"Authorization": "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()}
    if scheme != "bearer" or "realm" not in params:
        raise RegistryError(
            f"registry asked for unsupported authentication {header!r} for {what}", status=401
        )
    query = {
        "service": params.get("service"),
        "scope": params.get("scope") or f"repository:{repository}:pull",
    }
    token_url = httpx.URL(params["realm"], params={k: v for k, v in query.items() if v})
    response = _request(client, "GET", str(token_url), {}, auth=basic)
    if response.status_code != 200:
        raise _status_error(response.status_code, what, httpx.URL(params["realm"]).host)
    body = response.json()
    token = body.get("token") or body.get("access_token")
    if not token:
        raise RegistryError(f"the token service for {what} returned no token", status=response.status_code)
    register_secret(token)
    return {"Authorization": f"Bearer {token}"}


def _digest_from_body(client: httpx.Client, url: str, headers: Mapping[str, str]) -> str:
    response = _request(client, "GET", url, headers)
    if response.status_code != 200:
        raise RegistryError(f"GET {url} returned HTTP {response.status_code}", status=response.status_code)
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


def _status_error(status: int, what: str, host: str) -> RegistryError:
    if status in (401, 403):
        return RegistryError(
            f"registry {host} refused access to {what} (HTTP {status})",
            status=status,
            hint="the registry credentials are missing, wrong or lack pull/push rights",
        )
    return RegistryError(f"registry {host} answered HTTP {status} for {what}", status=status)


def docker_config(credentials: Iterable[RegistryCredentials]) -> dict[str, Any]:
    """A docker ``config.json`` / containers-auth.json holding ``credentials``."""
    auths = {}
    for cred in credentials:
        token = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        auths[cred.host] = {"auth": token}
    return {"auths": auths}


def credentials_from_docker_config(config: Mapping[str, Any], host: str) -> RegistryCredentials | None:
    """The username/password stored for ``host`` in a docker config.json's ``auths``."""
    for key, entry in (config.get("auths") or {}).items():
        key_host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if key_host != host and not (host == DOCKER_HUB and key_host == "index.docker.io"):
            continue
        if entry.get("auth"):
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        else:
            username, password = entry.get("username", ""), entry.get("password", "")
        if username and password:
            return RegistryCredentials(host, username, password)
    return None


@contextlib.contextmanager
def auth_files(credentials: Iterable[RegistryCredentials]) -> Iterator[AuthFiles]:
    """Write ``credentials`` to ``config.json`` (0600) in a new 0700 temp dir, deleted on exit.

    Yields the file and ``{"DOCKER_CONFIG": dir, "REGISTRY_AUTH_FILE": file}`` for child envs.
    """
    with private_dir("hubploy-registry-auth-") as tmpdir:
        path = tmpdir / "config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(docker_config(credentials), handle)
        yield AuthFiles(path, {"DOCKER_CONFIG": str(tmpdir), "REGISTRY_AUTH_FILE": str(path)})
