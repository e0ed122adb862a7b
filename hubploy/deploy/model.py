"""The deploy's typed model: what a deploy is asked to do (``DeployOptions``), what it needs from the
cluster credentials (``ClusterAccessLike``) and what happened (``DeployResult``)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hubploy import helm
from hubploy.errors import HubployError
from hubploy.layout import Hub
from hubploy.registry import RegistryCredentials

log = logging.getLogger("hubploy.deploy")

DEFAULT_TIMEOUT = "10m"


class ClusterAccessLike(Protocol):
    """What a deploy needs from cluster credentials (see ``hubploy.cloud.ClusterAccess``)."""

    kubeconfig: Path
    env: dict[str, str]
    context: str | None


ClusterAccessProvider = Callable[[Hub, str], AbstractContextManager[ClusterAccessLike]]
ClusterSlot = Callable[[], AbstractContextManager[object]]  # held while a deploy loads the cluster API
ImageDigest = Callable[[str, str], "str | None"]
RegistryCredentialsFor = Callable[[str], "RegistryCredentials | None"]
Logger = logging.Logger | logging.LoggerAdapter


@dataclass(frozen=True)
class DeployOptions:
    """Everything ``hubploy deploy`` can change; the defaults are a safe CI deploy."""

    namespace: str | None = None
    release: str | None = None
    chart: Path | None = None
    set_values: tuple[str, ...] = ()
    set_string_values: tuple[str, ...] = ()
    flags: helm.UpgradeFlags = field(
        default_factory=lambda: helm.UpgradeFlags(timeout=DEFAULT_TIMEOUT, atomic=True))
    health_check: bool = True
    health_timeout: float | None = None   # None: the repo's health_check_timeout
    skip_unchanged: bool = True           # False: upgrade even if the release already runs this configuration


@dataclass(frozen=True)
class ImageRef:
    path: str       # dotted values path of the {name, tag} mapping
    name: str
    tag: str
    digest: str | None

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


@dataclass
class DeployResult:
    hub: str
    env: str
    release: str
    namespace: str
    git_sha: str | None = None
    revision_before: int | None = None
    revision_after: int | None = None
    values_digest: str | None = None
    images: list[ImageRef] = field(default_factory=list)
    started: str = field(default_factory=lambda: utcnow())  # UTC, ISO 8601
    finished: str = ""
    duration: float = 0.0
    result: str = "pending"          # deployed | dry-run | rolled-back | refused | failed
    message: str = ""
    recovered: list[str] = field(default_factory=list)
    hub_version: str | None = None
    rendered: str | None = None      # dry-run output, secrets redacted

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("rendered")
        return data



@contextlib.contextmanager
def recording(result: DeployResult, on_result: Callable[[DeployResult], None] | None) -> Iterator[None]:
    """Time ``result``, record a failure's message, and always hand the final result to ``on_result``."""
    start = time.monotonic()
    try:
        yield
    except HubployError as exc:
        if result.result == "pending":
            result.result = "failed"
        result.message = str(exc)
        raise
    finally:
        result.duration = round(time.monotonic() - start, 3)
        result.finished = utcnow()
        if on_result is not None:
            on_result(result)



def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")

