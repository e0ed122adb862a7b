"""Helm command lines, built as pure argv lists (run them with :func:`hubploy.runner.run`).

The upgrade argv keeps classic hubploy's exact order (``helm.py@606e2c8``)::

    helm upgrade --wait --install --namespace NS NAME CHART [--version V] [--timeout T] [--force]
        [--atomic] [--cleanup-on-fail] [--dry-run] [--debug] [--kube-context C]
        -f ... --set ... --set-string ...

Helm 4 renamed two flags (the old names still work but print deprecation warnings): ``--atomic``
became ``--rollback-on-failure`` and ``--force`` became ``--force-replace``; a bare ``--dry-run``
became ``--dry-run=client``. :func:`helm_major_version` picks the spelling.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hubploy.errors import DeployError
from hubploy.runner import run

PENDING_STATUSES = ("pending-install", "pending-upgrade", "pending-rollback")
_versions: dict[str, int] = {}
_versions_lock = threading.Lock()


def helm_executable(env: Mapping[str, str]) -> str:
    """``HELM_EXECUTABLE`` from ``env`` (as hubploy), else ``helm`` on PATH."""
    return env.get("HELM_EXECUTABLE") or "helm"


def helm_major_version(executable: str, env: Mapping[str, str]) -> int:
    """The major version of ``executable`` (3 or 4), asked once per executable per process."""
    with _versions_lock:
        if executable in _versions:
            return _versions[executable]
    out = run([executable, "version", "--short"], env=env).stdout.strip()
    match = re.match(r"v?(\d+)\.", out)
    if match is None:
        raise DeployError(f"cannot read the helm version from {out!r} ({executable} version --short)")
    major = int(match.group(1))
    if major < 3:
        raise DeployError(f"{executable} is helm {out}; hubploy needs helm 3 or 4")
    with _versions_lock:
        _versions[executable] = major
    return major


@dataclass(frozen=True)
class UpgradeFlags:
    """The optional flags of ``helm upgrade``, as ``hubploy deploy`` takes them."""

    version: str | None = None
    timeout: str | None = None
    force: bool = False
    atomic: bool = False
    cleanup_on_fail: bool = False
    dry_run: bool = False
    debug: bool = False


def _context(kube_context: str | None) -> list[str]:
    return ["--kube-context", kube_context] if kube_context else []


def dependency_update_argv(helm: str, chart: str) -> list[str]:
    return [helm, "dependency", "update", chart]


def template_argv(
    helm: str,
    name: str,
    chart: str,
    namespace: str,
    values_args: Sequence[str],
    *,
    version: str | None = None,
) -> list[str]:
    """A client-side render (``hubploy render``, drift and the approval diff), with a deploy's values
    arguments."""
    return [
        helm,
        "template",
        name,
        chart,
        "--namespace",
        namespace,
        *(["--version", version] if version else []),
        *values_args,
    ]


def upgrade_argv(
    helm: str,
    major: int,
    name: str,
    chart: str,
    namespace: str,
    values_args: Sequence[str],
    flags: UpgradeFlags = UpgradeFlags(),
    *,
    kube_context: str | None = None,
    description: str | None = None,
) -> list[str]:
    """``description`` is stored with the new revision (``helm history`` shows it)."""
    argv = [helm, "upgrade", "--wait", "--install", "--namespace", namespace, name, chart]
    if flags.version:
        argv += ["--version", flags.version]
    if flags.timeout:
        argv += ["--timeout", flags.timeout]
    if flags.force:
        argv.append("--force" if major < 4 else "--force-replace")
    if flags.atomic:
        argv.append("--atomic" if major < 4 else "--rollback-on-failure")
    if flags.cleanup_on_fail:
        argv.append("--cleanup-on-fail")
    if flags.dry_run:
        argv.append("--dry-run" if major < 4 else "--dry-run=client")
    if flags.debug:
        argv.append("--debug")
    if description:
        argv += ["--description", description]
    return [*argv, *_context(kube_context), *values_args]


def status_argv(helm: str, name: str, namespace: str, *, kube_context: str | None = None) -> list[str]:
    return [helm, "status", name, "--namespace", namespace, "--output", "json", *_context(kube_context)]


def history_argv(helm: str, name: str, namespace: str, *, kube_context: str | None = None) -> list[str]:
    return [helm, "history", name, "--namespace", namespace, "--output", "json", *_context(kube_context)]


def get_values_argv(
    helm: str,
    name: str,
    namespace: str,
    *,
    revision: int | None = None,
    all_values: bool = False,
    kube_context: str | None = None,
) -> list[str]:
    return [
        helm,
        "get",
        "values",
        name,
        "--namespace",
        namespace,
        "--output",
        "json",
        *(["--revision", str(revision)] if revision else []),
        *(["--all"] if all_values else []),
        *_context(kube_context),
    ]


def get_manifest_argv(
    helm: str, name: str, namespace: str, *, revision: int | None = None, kube_context: str | None = None
) -> list[str]:
    return [
        helm,
        "get",
        "manifest",
        name,
        "--namespace",
        namespace,
        *(["--revision", str(revision)] if revision else []),
        *_context(kube_context),
    ]


def rollback_argv(
    helm: str,
    name: str,
    namespace: str,
    revision: int,
    *,
    timeout: str | None = None,
    kube_context: str | None = None,
) -> list[str]:
    """Roll back to ``revision`` (0 means the previous one) and wait for it to be ready."""
    return [
        helm,
        "rollback",
        name,
        str(revision),
        "--namespace",
        namespace,
        "--wait",
        *(["--timeout", timeout] if timeout else []),
        *_context(kube_context),
    ]


def uninstall_argv(helm: str, name: str, namespace: str, *, kube_context: str | None = None) -> list[str]:
    return [helm, "uninstall", name, "--namespace", namespace, "--wait", *_context(kube_context)]


@dataclass(frozen=True)
class Revision:
    """One entry of ``helm history``."""

    revision: int
    status: str
    chart: str
    app_version: str
    updated: str
    description: str


def parse_history(stdout: str) -> list[Revision]:
    """``helm history -o json`` output, oldest first."""
    entries = json.loads(stdout or "[]")
    revisions = [
        Revision(
            revision=int(e["revision"]),
            status=str(e.get("status", "")),
            chart=str(e.get("chart", "")),
            app_version=str(e.get("app_version", "")),
            updated=str(e.get("updated", "")),
            description=str(e.get("description", "")),
        )
        for e in entries
    ]
    return sorted(revisions, key=lambda r: r.revision)


def is_release_not_found(stderr: str) -> bool:
    return "release: not found" in stderr


def last_deployed(history: Sequence[Revision]) -> Revision | None:
    """The newest revision that was successfully deployed (``deployed`` or later ``superseded``)."""
    for rev in reversed(history):
        if rev.status in ("deployed", "superseded"):
            return rev
    return None
