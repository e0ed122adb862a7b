"""The deploy's typed model: what a deploy is asked to do (``DeployOptions``), what it needs from cluster
credentials (``ClusterAccessLike``), where it acts (``Target``) and how it ended (``Outcome``, ``Ending``,
``DeployResult``). ``settle`` is the one place that sets a result's outcome."""

from __future__ import annotations

import datetime
import enum
import logging
import time
from collections.abc import Callable
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

    @property
    def kubeconfig(self) -> Path: ...

    @property
    def env(self) -> dict[str, str]: ...

    @property
    def context(self) -> str | None: ...


ClusterAccessProvider = Callable[[Hub, str], AbstractContextManager[ClusterAccessLike]]
ClusterSlot = Callable[[], AbstractContextManager[object]]  # held while a deploy loads the cluster API
ImageDigest = Callable[[str, str], "str | None"]
RegistryCredentialsFor = Callable[[str], "RegistryCredentials | None"]
Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class DeployOptions:
    """Everything ``hubploy deploy`` can change; the defaults are a safe CI deploy."""

    namespace: str | None = None
    release: str | None = None
    chart: Path | None = None
    set_values: tuple[str, ...] = ()
    set_string_values: tuple[str, ...] = ()
    flags: helm.UpgradeFlags = field(
        default_factory=lambda: helm.UpgradeFlags(timeout=DEFAULT_TIMEOUT, atomic=True)
    )
    health_check: bool = True
    health_timeout: float | None = None  # None: the repo's health_check_timeout
    skip_unchanged: bool = True  # False: upgrade even if the release already runs this configuration


@dataclass(frozen=True)
class Target:
    """Where a deploy or rollback acts: the helm executable, the release and its namespace, and the
    cluster access as helm and kubectl use it (the child env with its KUBECONFIG, the kube context)."""

    helm: str
    release: str
    namespace: str
    env: dict[str, str]
    context: str | None = None

    @classmethod
    def of(cls, executable: str, release: str, namespace: str, access: ClusterAccessLike) -> Target:
        """``{namespace}`` in the access's context names the release's namespace."""
        context = access.context.replace("{namespace}", namespace) if access.context else None
        env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
        return cls(executable, release, namespace, env, context)


class Outcome(enum.StrEnum):
    """How a deploy or rollback ended. Only ``settle`` sets it; the audit artifact, the CLI line and the
    fleet table show its value."""

    pending = "pending"  # not finished: interrupted, or stopped by an error that is no HubployError
    deployed = "deployed"  # helm upgraded (or installed) the release; the hub answered when checked
    unchanged = "unchanged"  # the release already ran exactly this chart and these values
    dry_run = "dry-run"  # helm rendered and validated the release (--dry-run); nothing changed
    rolled_back = "rolled-back"  # the release runs an earlier revision again (after a failure, or asked to)
    refused = "refused"  # nothing changed: an image is missing, or the chart does not render
    failed = "failed"  # anything else that went wrong


@dataclass(frozen=True)
class Ending:
    """How the steps decided that a deploy ends: the outcome, the result's message, and the error to
    raise once the result is recorded (None: the deploy succeeded)."""

    outcome: Outcome
    message: str = ""
    error: HubployError | None = None

    @classmethod
    def failure(cls, outcome: Outcome, error: HubployError) -> Ending:
        return cls(outcome, str(error), error)


@dataclass(frozen=True)
class ImageRef:
    path: str  # dotted values path of the {name, tag} mapping
    name: str
    tag: str
    digest: str | None
    checked: bool = True  # False: image_check in hubploy.yaml leaves it out

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


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
    started: str = field(default_factory=utcnow)  # UTC, ISO 8601
    finished: str = ""
    duration: float = 0.0
    outcome: Outcome = Outcome.pending
    message: str = ""
    recovered: list[str] = field(default_factory=list)
    hub_version: str | None = None
    rendered: str | None = None  # dry-run output, secrets redacted

    def summary(self) -> dict[str, Any]:
        """The audit record: every field but the rendered output, the outcome under its key ``result``."""
        data = asdict(self)
        data.pop("rendered")
        return {("result" if key == "outcome" else key): value for key, value in data.items()}


def settle(
    result: DeployResult, steps: Callable[[], Ending], on_result: Callable[[DeployResult], None] | None = None
) -> DeployResult:
    """Run the steps of a deploy or rollback and record how it ended: the one place that sets the
    result's outcome and message. A HubployError that no step turned into an ending ends it ``failed``.
    The result is always timed and handed to ``on_result``; then the ending's error, if any, is raised."""
    start = time.monotonic()
    ending = Ending(Outcome.pending)
    try:
        ending = steps()
    except HubployError as exc:
        ending = Ending.failure(Outcome.failed, exc)
        raise
    finally:
        result.outcome, result.message = ending.outcome, ending.message
        result.duration = round(time.monotonic() - start, 3)
        result.finished = utcnow()
        if on_result is not None:
            on_result(result)
    if ending.error is not None:
        raise ending.error
    return result
