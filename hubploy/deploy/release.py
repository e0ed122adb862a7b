"""Helm release operations: history, stuck-release recovery, upgrade, rollback and uninstall, and which
of their failures are worth retrying."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from hubploy import helm
from hubploy.deploy.model import DEFAULT_TIMEOUT, DeployOptions, DeployResult, Logger, log
from hubploy.errors import CommandError, CommandTimeoutError, DeployError, HealthCheckError, RegistryError
from hubploy.runner import run

_TRANSIENT_MARKERS = ("connection refused", "connection reset", "i/o timeout", "tls handshake timeout",
                      "another operation (install/upgrade/rollback) is in progress", "etcdserver",
                      "the server is currently unable", "too many requests", "no route to host",
                      "unexpected eof", "server has asked for the client to provide credentials")


# --- step 7: release state, recovery and rollback -----------------------------------------------------------

def release_history(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
                    kube_context: str | None = None) -> list[helm.Revision]:
    """``helm history`` of the release, oldest first; [] when it does not exist."""
    out = run(helm.history_argv(executable, name, namespace, kube_context=kube_context), env=env, check=False)
    if out.returncode != 0:
        if helm.is_release_not_found(out.stderr):
            return []
        raise DeployError(f"cannot read the history of release {name}: {last_line(out.stderr)}")
    return helm.parse_history(out.stdout)


def rollback(executable: str, name: str, namespace: str, revision: int, *, env: Mapping[str, str],
             kube_context: str | None = None, timeout: str | None = DEFAULT_TIMEOUT) -> None:
    """``helm rollback --wait`` to ``revision`` (0: the previous one)."""
    run(helm.rollback_argv(executable, name, namespace, revision, timeout=timeout, kube_context=kube_context),
        env=env)


def uninstall(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
              kube_context: str | None = None) -> None:
    run(helm.uninstall_argv(executable, name, namespace, kube_context=kube_context), env=env)


def recover_stuck_release(executable: str, name: str, namespace: str, *, env: Mapping[str, str],
                          kube_context: str | None = None, timeout: str | None = DEFAULT_TIMEOUT,
                          logger: Logger = log, history: Sequence[helm.Revision] | None = None) -> list[str]:
    """Bring a release that an interrupted or failed run left behind back to an upgradable state.

    - pending-install/upgrade/rollback ("another operation is in progress"): roll back to the last
      deployed revision, or uninstall when there never was one;
    - failed with no deployed revision (hubploy#25, "has no deployed releases"): uninstall, so that
      the upgrade that follows is a fresh install.

    Call it only while holding the release lock: a pending status may be another run's live upgrade.
    ``history`` saves reading it again when the caller just did. Returns one line per action taken.
    """
    if history is None:
        history = release_history(executable, name, namespace, env=env, kube_context=kube_context)
    if not history:
        return []
    latest = history[-1]
    deployed = helm.last_deployed(history)
    actions: list[str] = []
    if latest.status in helm.PENDING_STATUSES:
        if deployed is not None:
            line = (f"release {name} is stuck in {latest.status} at revision {latest.revision} (another operation "
                    f"is in progress, left by an interrupted run): rolling back to revision {deployed.revision}, "
                    "the last deployed one")
            logger.warning(line)
            rollback(executable, name, namespace, deployed.revision, env=env, kube_context=kube_context,
                     timeout=timeout)
        else:
            line = (f"release {name} is stuck in {latest.status} with no deployed revision (an interrupted "
                    "first install): uninstalling it before installing again")
            logger.warning(line)
            uninstall(executable, name, namespace, env=env, kube_context=kube_context)
        actions.append(line)
    elif deployed is None and latest.status == "failed":
        line = (f"release {name} has only failed revisions (a failed first install): uninstalling it and "
                "retrying the install")
        logger.warning(line)
        uninstall(executable, name, namespace, env=env, kube_context=kube_context)
        actions.append(line)
    return actions


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: registry 5xx/429/no answer, or a command that failed on the network or a busy API."""
    if isinstance(exc, HealthCheckError | CommandTimeoutError):
        return False
    if isinstance(exc, RegistryError):
        return exc.transient
    text = (exc.stderr_tail if isinstance(exc, CommandError) else str(exc)).lower()
    return isinstance(exc, CommandError | DeployError) and any(m in text for m in _TRANSIENT_MARKERS)



def upgrade(executable: str, major: int, chart: str, values_args: list[str], options: DeployOptions,
             result: DeployResult, env: dict[str, str], context: str | None, logger: Logger, *,
             history: list[helm.Revision], description: str) -> None:
    """Step 7: recover a stuck release, then ``helm upgrade --install --wait`` with rollback on failure.

    Helm renders and validates the chart before it changes anything, so a chart or values error leaves
    the release as it was (no new revision) and is reported as such.
    """
    name, ns = result.release, result.namespace
    result.recovered = recover_stuck_release(executable, name, ns, env=env, kube_context=context,
                                             timeout=options.flags.timeout, logger=logger, history=history)
    if result.recovered:
        history = release_history(executable, name, ns, env=env, kube_context=context)
    before = helm.last_deployed(history)
    result.revision_before = before.revision if before else None
    logger.info("helm upgrade %s in %s (deployed revision before: %s)", name, ns, result.revision_before or "none")
    try:
        upgraded = run(helm.upgrade_argv(executable, major, name, chart, ns, values_args, options.flags,
                                         kube_context=context, description=description),
                       env=env, on_line=lambda line: logger.debug("helm: %s", line))
    except CommandError as exc:
        after_history = release_history(executable, name, ns, env=env, kube_context=context)
        after = helm.last_deployed(after_history)
        result.revision_after = after.revision if after else None
        if [r.revision for r in after_history] == [r.revision for r in history]:
            result.result = "refused"
            where = "nothing was changed: the chart does not render or validate with these values"
        else:
            rolled = options.flags.atomic and result.revision_before is not None
            result.result = "rolled-back" if rolled else "failed"
            where = (f"rolled back; revision {result.revision_after} is serving" if rolled
                     else "the first install was removed" if options.flags.atomic else "no rollback was requested")
        raise DeployError(f"helm upgrade of {name} failed ({where}): {last_line(exc.stderr_tail)}",
                          hint=f"`kubectl get pods -n {ns}` shows what is not ready; --debug logs helm's output"
                          ) from None
    result.revision_after = deployed_revision(upgraded.stdout)
    if result.revision_after is None:
        current = helm.last_deployed(release_history(executable, name, ns, env=env, kube_context=context))
        result.revision_after = current.revision if current else None


_STATUS_LINE = re.compile(r"^STATUS: (\S+)\s*$")
_REVISION_LINE = re.compile(r"^REVISION: (\d+)\s*$")


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



def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
