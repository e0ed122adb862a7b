"""Helm release operations on a deploy's ``Target``: history, stuck-release recovery, upgrade (step 7),
rollback and uninstall, and which of their failures are worth retrying."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from hubploy import helm
from hubploy.deploy.diagnose import diagnose, is_timeout
from hubploy.deploy.model import DEFAULT_TIMEOUT, DeployResult, Ending, Logger, Outcome, Target, log
from hubploy.errors import (
    CommandError,
    CommandTimeoutError,
    DeployError,
    HealthCheckError,
    RegistryError,
    UpgradeError,
)
from hubploy.runner import run

_TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "i/o timeout",
    "tls handshake timeout",
    "another operation (install/upgrade/rollback) is in progress",
    "etcdserver",
    "the server is currently unable",
    "too many requests",
    "no route to host",
    "unexpected eof",
    "server has asked for the client to provide credentials",
)
_STATUS_LINE = re.compile(r"^STATUS: (\S+)\s*$")
_REVISION_LINE = re.compile(r"^REVISION: (\d+)\s*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MIN_ROLLBACK_WAIT = "5m"  # however short a failed upgrade's timeout, its rollback waits this long


def last_line(text: str) -> str:
    """The last non-empty line of a command's output (its error, usually)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def release_history(target: Target) -> list[helm.Revision]:
    """``helm history`` of the release, oldest first; [] when it does not exist."""
    argv = helm.history_argv(target.helm, target.release, target.namespace, kube_context=target.context)
    out = run(argv, env=target.env, check=False)
    if out.returncode != 0:
        if helm.is_release_not_found(out.stderr):
            return []
        raise DeployError(f"cannot read the history of release {target.release}: {last_line(out.stderr)}")
    return helm.parse_history(out.stdout)


def deployed_revision_now(target: Target) -> int | None:
    """The release's deployed revision, read from its history; None when no revision is deployed."""
    current = helm.last_deployed(release_history(target))
    return current.revision if current else None


def rollback(target: Target, revision: int, *, timeout: str | None = DEFAULT_TIMEOUT) -> None:
    """``helm rollback --wait`` to ``revision`` (0: the previous one). A rollback restores what ran before,
    so it waits at least MIN_ROLLBACK_WAIT for it, however short the failed upgrade's timeout was: a
    rollback that gives up waiting leaves a failed revision on top of the release."""
    run(
        helm.rollback_argv(
            target.helm,
            target.release,
            target.namespace,
            revision,
            timeout=at_least(timeout, MIN_ROLLBACK_WAIT),
            kube_context=target.context,
        ),
        env=target.env,
    )


def seconds(duration: str) -> float | None:
    """A helm (Go) duration such as ``90s``, ``10m`` or ``1h30m`` in seconds; None when it is not one."""
    parts = _DURATION_PART.findall(duration)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != duration:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def at_least(duration: str | None, floor: str) -> str:
    """The longer of ``duration`` and ``floor`` (``duration`` itself when it is not a Go duration)."""
    if duration is None:
        return floor
    given, least = seconds(duration), seconds(floor)
    return floor if given is not None and least is not None and given < least else duration


def uninstall(target: Target) -> None:
    run(
        helm.uninstall_argv(target.helm, target.release, target.namespace, kube_context=target.context),
        env=target.env,
    )


def rollback_revision(release: str, history: Sequence[helm.Revision], revision: int | None) -> int:
    """The revision a rollback of ``release`` goes to: ``revision``, or the deployed revision before the
    current one. Raises DeployError when the history has no such revision."""
    current = helm.last_deployed(history)
    earlier = [
        r
        for r in history
        if current and r.revision < current.revision and r.status in ("deployed", "superseded")
    ]
    wanted = revision or (earlier[-1].revision if earlier else None)
    if wanted is None or not any(r.revision == wanted for r in history):
        missing = wanted or "before the current one"
        raise DeployError(f"release {release} has no revision {missing} to roll back to")
    return wanted


def recover_stuck_release(
    target: Target,
    *,
    timeout: str | None = DEFAULT_TIMEOUT,
    logger: Logger = log,
    history: Sequence[helm.Revision] | None = None,
) -> list[str]:
    """Bring a release that an interrupted or failed run left behind back to an upgradable state.

    - pending-install/upgrade/rollback ("another operation is in progress"): roll back to the last
      deployed revision, or uninstall when there never was one;
    - failed with no deployed revision (hubploy#25, "has no deployed releases"): uninstall, so that
      the upgrade that follows is a fresh install.

    Call it only while holding the release lock: a pending status may be another run's live upgrade.
    ``history`` saves reading it again when the caller just did. Returns one line per action taken.
    """
    history = release_history(target) if history is None else history
    if not history:
        return []
    name, latest, deployed = target.release, history[-1], helm.last_deployed(history)
    if latest.status in helm.PENDING_STATUSES and deployed is not None:
        line = (
            f"release {name} is stuck in {latest.status} at revision {latest.revision} (another "
            f"operation is in progress, left by an interrupted run): rolling back to revision "
            f"{deployed.revision}, the last deployed one"
        )
        logger.warning(line)
        rollback(target, deployed.revision, timeout=timeout)
    elif latest.status in helm.PENDING_STATUSES:
        line = (
            f"release {name} is stuck in {latest.status} with no deployed revision (an interrupted "
            "first install): uninstalling it before installing again"
        )
        logger.warning(line)
        uninstall(target)
    elif deployed is None and latest.status == "failed":
        line = (
            f"release {name} has only failed revisions (a failed first install): uninstalling it and "
            "retrying the install"
        )
        logger.warning(line)
        uninstall(target)
    else:
        return []
    return [line]


def upgrade(
    target: Target,
    major: int,
    chart: Path,
    values_args: list[str],
    flags: helm.UpgradeFlags,
    result: DeployResult,
    logger: Logger,
    *,
    history: list[helm.Revision],
    description: str,
) -> Ending | None:
    """Step 7: recover a stuck release, then ``helm upgrade --install --wait`` with rollback on failure.
    None when the release is deployed, else how the deploy ends (see ``_failed_upgrade``).

    Helm renders and validates the chart before it changes anything, so a chart or values error leaves
    the release as it was (no new revision) and is reported as such. The rollback of ``flags.atomic`` is
    hubploy's, not helm's: what was not ready is read from the API first, while it is still there.
    """
    result.recovered = recover_stuck_release(target, timeout=flags.timeout, logger=logger, history=history)
    if result.recovered:
        history = release_history(target)
    before = helm.last_deployed(history)
    result.revision_before = before.revision if before else None
    logger.info(
        "helm upgrade %s in %s (deployed revision before: %s)",
        target.release,
        target.namespace,
        result.revision_before or "none",
    )
    argv = helm.upgrade_argv(
        target.helm,
        major,
        target.release,
        str(chart),
        target.namespace,
        values_args,
        dataclasses.replace(flags, atomic=False),
        kube_context=target.context,
        description=description,
    )
    try:
        upgraded = run(argv, env=target.env, on_line=lambda line: logger.debug("helm: %s", line))
    except CommandError as exc:
        return _failed_upgrade(target, flags, result, history, exc, logger)
    result.revision_after = deployed_revision(upgraded.stdout)
    if result.revision_after is None:
        result.revision_after = deployed_revision_now(target)
    return None


def helm_reason(stderr: str) -> str:
    """helm's error, from its last ``Error:`` line on, on one line (a hook's reason follows on the next)."""
    lines = [line.strip(" \t*") for line in stderr.strip().splitlines()]
    starts = [index for index, line in enumerate(lines) if line.lower().startswith("error:")]
    chosen = lines[starts[-1] :] if starts else lines[-1:]
    return " ".join(line for line in chosen if line) or "no output"


def _failed_upgrade(
    target: Target,
    flags: helm.UpgradeFlags,
    result: DeployResult,
    history: list[helm.Revision],
    exc: CommandError,
    logger: Logger,
) -> Ending:
    """A failed ``helm upgrade`` is refused when it left the history as it was (the chart did not render
    or validate). Otherwise what was not ready is read from the API, then, with ``flags.atomic``, the
    release is rolled back to its deployed revision (a first install is removed): rolled back or
    failed. A timeout is told as one, naming what was not ready and why."""
    after_history = release_history(target)
    reason = helm_reason(exc.stderr_tail)
    hint = f"`kubectl get pods -n {target.namespace}` shows what is not ready; --debug logs helm's output"
    if [r.revision for r in after_history] == [r.revision for r in history]:
        after = helm.last_deployed(after_history)
        result.revision_after = after.revision if after else None
        return Ending.failure(
            Outcome.refused,
            DeployError(
                f"helm upgrade of {target.release} failed (nothing was changed: the chart does not render or "
                f"validate with these values): {reason}",
                hint=hint,
            ),
        )
    diagnosis = diagnose(target).summary()
    logger.warning("helm upgrade of %s failed: %s; %s", target.release, reason, diagnosis)
    outcome, where = _undo_failed_upgrade(target, flags, result, logger)
    timed_out = is_timeout(reason)
    if timed_out:
        what = (
            f"helm upgrade of {target.release} timed out after {flags.timeout or 'its default timeout'} "
            f"waiting for the release to be ready ({where}): {diagnosis}"
        )
    else:
        what = f"helm upgrade of {target.release} failed ({where}): {reason}; {diagnosis}"
    return Ending.failure(outcome, UpgradeError(what, reason=reason, timed_out=timed_out, hint=hint))


def _undo_failed_upgrade(
    target: Target, flags: helm.UpgradeFlags, result: DeployResult, logger: Logger
) -> tuple[Outcome, str]:
    """--atomic, done by hubploy: roll back to the deployed revision, or remove a failed first install."""
    before = result.revision_before
    if not flags.atomic:
        current = helm.last_deployed(release_history(target))
        result.revision_after = current.revision if current else None
        return Outcome.failed, "no rollback was requested"
    if before is None:
        logger.warning("removing the failed first install of %s", target.release)
        uninstall(target)
        result.revision_after = None
        return Outcome.failed, "the first install was removed"
    logger.warning("rolling %s back to revision %s", target.release, before)
    try:
        rollback(target, before, timeout=flags.timeout)
    except CommandError as failed:
        result.revision_after = None
        return (
            Outcome.failed,
            f"the rollback to revision {before} failed too: {helm_reason(failed.stderr_tail)}",
        )
    result.revision_after = deployed_revision_now(target)
    return Outcome.rolled_back, (
        f"rolled back to revision {before}'s configuration as revision "
        f"{result.revision_after}, which is serving"
    )


def deployed_revision(upgrade_stdout: str) -> int | None:
    """The revision a successful ``helm upgrade`` reports (its STATUS/REVISION lines, before the chart's
    NOTES), when it says ``deployed``; None when the output does not say (then read the history)."""
    status = revision = None
    for line in upgrade_stdout.splitlines():
        if line.startswith("NOTES:"):
            break
        if status is None and (m := _STATUS_LINE.match(line)):
            status = m.group(1)
        if revision is None and (m := _REVISION_LINE.match(line)):
            revision = int(m.group(1))
    return revision if status == "deployed" else None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: registry 5xx/429/no answer, or a command that failed on the network or a busy API
    (not an upgrade that timed out)."""
    if isinstance(exc, HealthCheckError | CommandTimeoutError):
        return False
    if isinstance(exc, RegistryError):
        return exc.transient
    if isinstance(exc, UpgradeError):  # helm's reason, not what pods logged; waiting longer is no retry
        return not exc.timed_out and any(m in exc.reason.lower() for m in _TRANSIENT_MARKERS)
    text = (exc.stderr_tail if isinstance(exc, CommandError) else str(exc)).lower()
    return isinstance(exc, CommandError | DeployError) and any(m in text for m in _TRANSIENT_MARKERS)
