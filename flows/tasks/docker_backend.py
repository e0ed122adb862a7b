"""The Docker build backend (prefect-docker's DockerHost client) and backend selection.

Docker is used only where a daemon answers on its socket; everywhere else, buildah. prefect-docker
and the docker SDK are imported lazily, so selecting buildah costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hubploy.build import BuildahBackend, BuildBackend, BuildRequest, docker_socket
from hubploy.errors import BuildError, RegistryError
from hubploy.registry import AuthFiles, credentials_from_docker_config, split_repository


def _auth_config(reference: str, auth: AuthFiles | None) -> dict[str, str] | None:
    if auth is None:
        return None
    found = credentials_from_docker_config(json.loads(auth.path.read_text()), split_repository(reference)[0])
    return {"username": found.username, "password": found.password} if found else None


def _split_tag(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    return name, tag


class DockerBackend:
    name = "docker"

    def __init__(self, client: Any) -> None:
        self.client = client

    def pull(self, reference: str, auth: AuthFiles | None) -> bool:
        import docker.errors

        name, tag = _split_tag(reference)
        try:
            self.client.images.pull(name, tag=tag, auth_config=_auth_config(reference, auth))
        except docker.errors.APIError:
            return False
        return True

    def build(self, request: BuildRequest, auth: AuthFiles | None) -> None:
        import docker.errors

        try:
            self.client.images.build(
                path=str(request.context),
                dockerfile=str(request.dockerfile),
                tag=request.reference,
                nocache=request.no_cache,
                rm=True,
                cache_from=[request.cache_from] if request.cache_from else None,
                buildargs=dict(request.build_args) or None,
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise BuildError(f"building {request.reference} with Docker failed: {exc}") from exc

    def push(self, reference: str, auth: AuthFiles | None) -> str:
        name, tag = _split_tag(reference)
        digest = None
        for line in self.client.images.push(
            name, tag=tag, auth_config=_auth_config(reference, auth), stream=True, decode=True
        ):
            if "error" in line:
                raise _push_error(reference, str(line.get("error")))
            digest = (line.get("aux") or {}).get("Digest") or digest
        if not digest:
            raise RegistryError(f"Docker pushed {reference} but reported no digest")
        return digest


def _push_error(reference: str, message: str) -> RegistryError:
    lowered = message.lower()
    status = (
        401
        if "unauthorized" in lowered or "authentication required" in lowered
        else (403 if "denied" in lowered else None)
    )
    return RegistryError(f"pushing {reference} with Docker failed: {message}", status=status)


def docker_client(env: Mapping[str, str] | None = None) -> Any | None:
    """A prefect-docker client for a daemon that answers a ping, else None."""
    socket = docker_socket(env)
    if socket is None:
        return None
    from prefect_docker.host import DockerHost

    try:
        client = DockerHost(base_url=f"unix://{socket}").get_client()
        client.ping()
    except Exception:  # any failure to talk to the daemon means "no usable Docker here"
        return None
    return client


def select_backend(
    env: Mapping[str, str] | None = None, *, on_line: Callable[[str], None] | None = None
) -> BuildBackend:
    """Docker where a daemon answers, else buildah (daemonless; ``on_line`` gets its output lines)."""
    client = docker_client(env)
    return DockerBackend(client) if client is not None else BuildahBackend(on_line=on_line)
