"""The last verified release: a helm revision that passed its checks (and its wave's soak) carries
``VERIFIED_MARK`` in its helm description, where ``helm history`` shows it, so that ``hubploy rollback
--to-verified`` (and a rollout that stops the line) can return to it without any other store.

Helm keeps a release's revisions in its storage objects (Secrets by default, ConfigMaps with
``HELM_DRIVER=configmap``), each holding the release as gzipped, base64-encoded JSON. Marking rewrites
only ``info.description`` of one revision, with the object's resourceVersion, so a concurrent change by
helm makes the write fail instead of being overwritten. Helm keeps the description when it later marks
the revision superseded. The decoded release (it holds every value, secrets included) is never logged.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hubploy import helm
from hubploy.deploy.model import Target
from hubploy.deploy.release import release_history
from hubploy.errors import CommandError, DeployError
from hubploy.health import kubectl_argv
from hubploy.helm import Revision
from hubploy.runner import run

VERIFIED_MARK = "verified by hubploy"
DRIVERS = {
    "": "secret",
    "secret": "secret",
    "secrets": "secret",
    "configmap": "configmap",
    "configmaps": "configmap",
}


def is_verified(description: str) -> bool:
    return VERIFIED_MARK in description


def last_verified(history: Sequence[Revision]) -> Revision | None:
    """The newest revision marked verified, if any."""
    return next((rev for rev in reversed(history) if is_verified(rev.description)), None)


@dataclass(frozen=True)
class Verification:
    """A release's deployed revision and its last verified one (either may be None)."""

    release: str
    serving: Revision | None
    verified: Revision | None

    @property
    def serves_verified(self) -> bool:
        """The deployed revision is the last verified one, or helm's rollback to it (the same
        configuration)."""
        serving, verified = self.serving, self.verified
        if serving is None or verified is None:
            return False
        return serving.revision == verified.revision or (
            serving.description == f"Rollback to {verified.revision}"
        )

    def why_not_return(self) -> str | None:
        """Why there is no rollback to the last verified revision to make; None when there is one."""
        if self.verified is None:
            where = f"it stays on revision {self.serving.revision}" if self.serving else "it is not installed"
            return f"{self.release} has no verified revision to return to; {where}"
        if self.serves_verified:
            return (
                f"{self.release} already runs its last verified release (revision {self.verified.revision})"
            )
        return None


def verification(target: Target) -> Verification:
    """The release's deployed and last verified revisions, from its history."""
    history = release_history(target)
    return Verification(target.release, helm.last_deployed(history), last_verified(history))


def verified_description(description: str, when: datetime, note: str = "") -> str:
    """``description`` with the mark appended (the configuration stamp it carries stays as it was)."""
    if is_verified(description):
        return description
    suffix = f"; {VERIFIED_MARK} {when.astimezone(UTC).isoformat(timespec='seconds')}"
    return description + suffix + (f" ({note})" if note else "")


def decode_release(stored: str, kind: str) -> dict[str, Any]:
    """The release JSON of a storage object's ``release`` field (a Secret's is base64 once more)."""
    raw = base64.b64decode(stored) if kind == "secret" else stored.encode()
    release: dict[str, Any] = json.loads(gzip.decompress(base64.b64decode(raw)))
    return release


def encode_release(release: Mapping[str, Any], kind: str) -> str:
    packed = base64.b64encode(gzip.compress(json.dumps(release, separators=(",", ":")).encode()))
    return base64.b64encode(packed).decode() if kind == "secret" else packed.decode()


def mark_verified(
    release: str,
    namespace: str,
    revision: int,
    *,
    env: Mapping[str, str],
    kube_context: str | None = None,
    note: str = "",
    now: datetime | None = None,
) -> str:
    """Mark ``revision`` of ``release`` verified in its helm description; returns the new description.
    Raises DeployError when helm's storage cannot be read or was changed meanwhile."""
    driver = env.get("HELM_DRIVER", "")
    kind = DRIVERS.get(driver)
    if kind is None:
        raise DeployError(
            f"cannot mark {release} revision {revision} verified: helm storage driver "
            f"{driver!r} keeps no Secret or ConfigMap per revision"
        )
    name = f"sh.helm.release.v1.{release}.v{revision}"
    try:
        argv = kubectl_argv(env, kube_context, "get", kind, name, "-n", namespace, "-o", "json")
        stored = json.loads(run(argv, env=env, timeout=60).stdout)
        field = stored.get("data") or {}
        release_data = decode_release(field["release"], kind)
        info = release_data.setdefault("info", {})
        before = str(info.get("description") or "")
        info["description"] = verified_description(before, now or datetime.now(UTC), note)
        if info["description"] == before:
            return before
        field["release"] = encode_release(release_data, kind)
        run(
            kubectl_argv(env, kube_context, "replace", "-n", namespace, "-f", "-"),
            env=env,
            timeout=60,
            input=json.dumps(stored),
        )
    except CommandError as exc:
        raise DeployError(f"cannot mark {release} revision {revision} verified: {exc.message}") from None
    except (KeyError, ValueError, OSError) as exc:  # not helm's format: leave it alone
        raise DeployError(
            f"cannot mark {release} revision {revision} verified: its helm storage object "
            f"{kind}/{name} is not in the format helm 3 and 4 write "
            f"({type(exc).__name__})"
        ) from None
    return str(info["description"])
