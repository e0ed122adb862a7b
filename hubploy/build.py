"""Image builds behind one interface, :class:`BuildBackend`: buildah here (daemonless, vfs storage,
chroot isolation), Docker through prefect-docker where a daemon answers (``flows/tasks/docker_backend.py``).

Only Dockerfile builds are supported. An image dir holding just repo2docker files (environment.yml,
requirements.txt, postBuild, ...) is refused with a :class:`~hubploy.errors.BuildError`: repo2docker
needs a Docker engine, which this platform does not have.

Cache (classic ``fetch_parent_image``): before a build, up to 15 older tags of the image are tried
newest first; the first that pulls is the cache source. With buildah it warms the base layers and is
passed as ``--cache-from <repository>``; buildah's own ``--layers`` cache does the rest.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hubploy.errors import BuildError, CommandError, RegistryError
from hubploy.registry import AuthFiles, is_local, split_repository
from hubploy.runner import child_env, run

CACHE_DEPTH = 15
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT = 3600.0
PUSH_TIMEOUT = 1800.0
PULL_TIMEOUT = 600.0
REPO2DOCKER_FILES = (
    "environment.yml",
    "environment.yaml",
    "requirements.txt",
    "postBuild",
    "apt.txt",
    "install.R",
    "runtime.txt",
    "setup.py",
    "Project.toml",
    "REQUIRE",
    "DESCRIPTION",
    "Pipfile",
    "Pipfile.lock",
    "start",
)


@dataclass(frozen=True)
class BuildRequest:
    name: str
    tag: str
    context: Path
    dockerfile: Path
    no_cache: bool = False
    cache_from: str | None = None  # a pulled reference name:tag
    build_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class BuildResult:
    reference: str
    cache_from: str | None
    seconds: float


class BuildBackend(Protocol):
    name: str

    def pull(self, reference: str, auth: AuthFiles | None) -> bool:
        """Pull ``reference``; False (not an exception) when it cannot be pulled."""

    def build(self, request: BuildRequest, auth: AuthFiles | None) -> None: ...

    def push(self, reference: str, auth: AuthFiles | None) -> str:
        """Push ``reference`` and return the pushed manifest digest."""


def dockerfile_for(image_dir: Path) -> Path:
    """The Dockerfile of an image dir, or a BuildError saying why it cannot be built here."""
    if not image_dir.is_dir():
        raise BuildError(f"image directory {image_dir} does not exist")
    dockerfile = image_dir / "Dockerfile"
    if dockerfile.is_file():
        return dockerfile
    r2d = sorted(f for f in REPO2DOCKER_FILES if (image_dir / f).exists())
    if r2d:
        raise BuildError(
            f"{image_dir} has only repo2docker files ({', '.join(r2d)}) and no Dockerfile: "
            "repo2docker cannot run here (it needs a Docker engine, and none is reachable)",
            hint="add a Dockerfile to the image dir, or build on a machine with a Docker daemon",
        )
    raise BuildError(f"{image_dir} has no Dockerfile", hint="add a Dockerfile to the image dir")


def find_cache_source(
    backend: BuildBackend, name: str, older_tags: Iterable[str], auth: AuthFiles | None
) -> str | None:
    """The first of up to CACHE_DEPTH older tags of ``name`` that pulls, newest first."""
    for tag in list(older_tags)[:CACHE_DEPTH]:
        if backend.pull(f"{name}:{tag}", auth):
            return f"{name}:{tag}"
    return None


def build_image(
    backend: BuildBackend,
    name: str,
    tag: str,
    image_dir: Path,
    *,
    older_tags: Iterable[str] = (),
    no_cache: bool = False,
    auth: AuthFiles | None = None,
    build_args: Mapping[str, str] | None = None,
) -> BuildResult:
    """Build ``name:tag`` from ``image_dir`` (after looking for a cache source unless ``no_cache``)."""
    dockerfile = dockerfile_for(image_dir)
    start = time.monotonic()
    cache_from = None if no_cache else find_cache_source(backend, name, older_tags, auth)
    request = BuildRequest(
        name,
        tag,
        image_dir,
        dockerfile,
        no_cache=no_cache,
        cache_from=cache_from,
        build_args=dict(build_args or {}),
    )
    backend.build(request, auth)
    return BuildResult(request.reference, cache_from, time.monotonic() - start)


def _tls_args(reference: str) -> list[str]:
    """Plain http only for a localhost/127.0.0.1 registry (a local image's build pulls its bases so too)."""
    return ["--tls-verify=false"] if is_local(split_repository(reference)[0]) else []


class BuildahBackend:
    """buildah with vfs storage and chroot isolation (no daemon, no privileges beyond the user's)."""

    name = "buildah"

    def __init__(
        self,
        *,
        executable: str = "buildah",
        ca_bundle: Path | None = CA_BUNDLE,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.executable = executable
        self.ca_bundle = ca_bundle
        self.on_line = on_line

    def _base(self) -> list[str]:
        return [self.executable, "--storage-driver", "vfs"]

    def _env(self, auth: AuthFiles | None) -> dict[str, str]:
        return child_env(auth.env if auth else None)

    @staticmethod
    def _auth_args(auth: AuthFiles | None) -> list[str]:
        return ["--authfile", str(auth.path)] if auth else []

    def build_argv(self, request: BuildRequest, auth: AuthFiles | None) -> list[str]:
        argv = [
            *self._base(),
            "bud",
            "--isolation",
            "chroot",
            "--layers",
            "-t",
            request.reference,
            *self._auth_args(auth),
            *_tls_args(request.reference),
        ]
        if request.cache_from:
            argv += ["--cache-from", request.name]
        if request.no_cache:
            argv.append("--no-cache")
        for key, value in request.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        if self.ca_bundle is not None and self.ca_bundle.is_file():
            argv += ["-v", f"{self.ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
        return [*argv, "-f", str(request.dockerfile), str(request.context)]

    def push_argv(self, reference: str, auth: AuthFiles | None, digestfile: Path) -> list[str]:
        """``--retry 0``: retries and backoff belong to the caller (the push task), not to buildah too."""
        return [
            *self._base(),
            "push",
            "--retry",
            "0",
            *self._auth_args(auth),
            *_tls_args(reference),
            "--digestfile",
            str(digestfile),
            reference,
            f"docker://{reference}",
        ]

    def pull_argv(self, reference: str, auth: AuthFiles | None) -> list[str]:
        return [
            *self._base(),
            "pull",
            "--quiet",
            "--retry",
            "0",
            *self._auth_args(auth),
            *_tls_args(reference),
            f"docker://{reference}",
        ]

    def pull(self, reference: str, auth: AuthFiles | None) -> bool:
        result = run(self.pull_argv(reference, auth), env=self._env(auth), check=False, timeout=PULL_TIMEOUT)
        return result.returncode == 0

    def build(self, request: BuildRequest, auth: AuthFiles | None) -> None:
        try:
            run(
                self.build_argv(request, auth),
                env=self._env(auth),
                cwd=request.context,
                timeout=BUILD_TIMEOUT,
                on_line=self.on_line,
            )
        except CommandError as exc:
            from_registry = any(n in exc.stderr_tail.lower() for n in _REGISTRY_CONTEXT)
            raise (from_registry and registry_error(exc, request.reference)) or BuildError(
                f"building {request.reference} failed: {_last_line(exc.stderr_tail)}"
            ) from exc

    def push(self, reference: str, auth: AuthFiles | None) -> str:
        with tempfile.TemporaryDirectory(prefix="hubploy-push-") as tmp:
            digestfile = Path(tmp) / "digest"
            try:
                run(
                    self.push_argv(reference, auth, digestfile),
                    env=self._env(auth),
                    timeout=PUSH_TIMEOUT,
                    on_line=self.on_line,
                )
            except CommandError as exc:
                raise registry_error(exc, reference) or exc from exc
            return digestfile.read_text().strip()


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


_AUTH_FAILURES = (
    ("unauthorized", 401),
    ("authentication required", 401),
    ("requested access to the resource is denied", 403),
    ("403 forbidden", 403),
)
_REGISTRY_CONTEXT = ("docker://", "container registry", "manifest", "unauthorized")
_NETWORK_FAILURES = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "timeout",
    "no such host",
    "eof",
    "tls handshake",
    "network is unreachable",
    "broken pipe",
)
_STATUS = re.compile(
    r"\b(?:status(?: code)?:?|HTTP)\s*(5\d\d|429)\b|\b(5\d\d) (?:Internal|Bad Gateway|"
    r"Service Unavailable|Gateway Timeout)",
    re.IGNORECASE,
)


def registry_error(exc: CommandError, reference: str) -> RegistryError | None:
    """A RegistryError (with the status buildah's message implies) when a build, pull or push failed
    talking to a registry; None when the failure was something else."""
    text = exc.stderr_tail.lower()
    # the cause at the end of buildah's chain
    detail = ": ".join(_last_line(exc.stderr_tail).split(": ")[-2:])
    host = split_repository(reference)[0]
    for needle, status in _AUTH_FAILURES:
        if needle in text:
            return RegistryError(
                f"registry {host} refused {reference} (HTTP {status}): {detail}",
                status=status,
                hint="the registry credentials are wrong or lack push rights",
            )
    match = _STATUS.search(exc.stderr_tail)
    if match:
        status = int(match.group(1) or match.group(2))
        return RegistryError(
            f"registry {host} answered HTTP {status} for {reference}: {detail}", status=status
        )
    if any(needle in text for needle in _NETWORK_FAILURES):
        return RegistryError(
            f"cannot reach registry {host} for {reference}: {detail}",
            hint="check that the registry is up and reachable",
        )
    return None


def docker_socket(env: Mapping[str, str] | None = None) -> Path | None:
    """The unix socket of the Docker daemon DOCKER_HOST (or the default) names, if it exists."""
    host = (env if env is not None else os.environ).get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    path = Path(host[len("unix://") :])
    return path if path.is_socket() else None
