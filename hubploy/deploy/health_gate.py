"""Step 8, the health gate: after a deploy the hub must answer as JupyterHub does, else the upgrade is
rolled back (or a failed first install removed). A release left unchanged is only probed: it failing is
not the deploy's doing, so nothing is rolled back."""

from __future__ import annotations

from hubploy.deploy.model import DeployResult, Ending, Logger, Outcome, Target
from hubploy.deploy.release import deployed_revision_now, last_line, rollback, uninstall
from hubploy.errors import CommandError, DeployError, HealthCheckError, HubployError
from hubploy.health import check_health
from hubploy.layout import Hub


def probe(hub: Hub, env_name: str, target: Target, logger: Logger, *, timeout: float) -> str:
    """The hub's JupyterHub version once ``/hub/api`` answers (at its configured URL, else where the
    cluster's Services say); HealthCheckError when it does not answer within ``timeout``."""
    return check_health(
        hub,
        env_name,
        namespace=target.namespace,
        release=target.release,
        env=target.env,
        timeout=timeout,
        kube_context=target.context,
        logger=logger,
    )


def check_health_or_roll_back(
    hub: Hub,
    target: Target,
    result: DeployResult,
    logger: Logger,
    *,
    timeout: float,
    rollback_timeout: str | None,
    unchanged: bool,
) -> Ending | None:
    """Step 8, outside the cluster slot (it waits on the hub, not on the cluster API): None when the hub
    answers, else how the deploy ends, after the rollback."""
    try:
        result.hub_version = probe(hub, result.env, target, logger, timeout=timeout)
    except HealthCheckError as exc:
        reason = exc.message
    else:
        return None
    name = target.release
    if unchanged:
        return Ending.failure(
            Outcome.failed,
            HealthCheckError(
                f"{name}: health check failed on revision {result.revision_after}, which already ran this "
                f"configuration (nothing was changed or rolled back): {reason}"
            ),
        )
    if result.revision_before is not None:
        return _roll_back_unhealthy(target, result, logger, reason, rollback_timeout)
    logger.warning("health check of %s failed (%s); uninstalling the failed first install", name, reason)
    uninstall(target)
    result.revision_after = None
    return Ending.failure(
        Outcome.failed,
        HealthCheckError(f"{name}: health check failed on the first install, which was removed: {reason}"),
    )


def _roll_back_unhealthy(
    target: Target, result: DeployResult, logger: Logger, reason: str, timeout: str | None
) -> Ending:
    """Roll an upgrade whose hub does not answer back to the revision deployed before it."""
    name, before = target.release, result.revision_before
    assert before is not None
    logger.warning("health check of %s failed (%s); rolling back to revision %s", name, reason, before)
    try:
        rollback(target, before, timeout=timeout)
    except CommandError as failed:
        return Ending.failure(
            Outcome.failed,
            DeployError(
                f"{name}: health check failed ({reason}) and the rollback to revision {before} failed too: "
                f"{last_line(failed.stderr_tail)}",
                hint=f"roll back by hand: helm rollback {name} {before} -n {target.namespace}",
            ),
        )
    try:
        result.revision_after = deployed_revision_now(target)
    except HubployError as exc:  # rolled back all the same; only reading the new revision failed
        return Ending.failure(Outcome.rolled_back, exc)
    return Ending.failure(
        Outcome.rolled_back,
        HealthCheckError(f"{name}: health check failed, rolled back to revision {before}: {reason}"),
    )
