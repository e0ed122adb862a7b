"""The health gate after an upgrade: the hub must answer as JupyterHub does, else the release is
rolled back (or a failed first install removed)."""

from __future__ import annotations

from hubploy.deploy.model import DeployOptions, DeployResult, Logger
from hubploy.deploy.release import last_line, release_history, rollback, uninstall
from hubploy.errors import CommandError, DeployError, HealthCheckError
from hubploy import helm
from hubploy.health import check_health
from hubploy.layout import Hub


def check_health_or_roll_back(hub: Hub, executable: str, options: DeployOptions, result: DeployResult,
                               env: dict[str, str], context: str | None, logger: Logger) -> None:
    """Step 8, outside the cluster slot (it waits on the hub, not on the cluster API). An unchanged
    release is only probed: it failing is not this deploy's doing, so nothing is rolled back."""
    name, ns = result.release, result.namespace
    unchanged = result.result == "unchanged"
    try:
        result.hub_version = check_health(hub, result.env, namespace=ns, release=name, env=env,
                                          timeout=options.health_timeout or hub.repo.settings.health_check_timeout,
                                          logger=logger, just_replaced=not unchanged)
    except HealthCheckError as exc:
        reason = exc.message
        if unchanged:
            result.result = "failed"
            raise HealthCheckError(f"{name}: health check failed on revision {result.revision_after}, which already "
                                   f"ran this configuration (nothing was changed or rolled back): {reason}") from None
        result.result = "rolled-back" if result.revision_before else "failed"
        if result.revision_before is not None:
            logger.warning("health check of %s failed (%s); rolling back to revision %s",
                           name, reason, result.revision_before)
            try:
                rollback(executable, name, ns, result.revision_before, env=env, kube_context=context,
                         timeout=options.flags.timeout)
            except CommandError as failed:
                result.result = "failed"
                raise DeployError(f"{name}: health check failed ({reason}) and the rollback to revision "
                                  f"{result.revision_before} failed too: {last_line(failed.stderr_tail)}",
                                  hint=f"roll back by hand: helm rollback {name} {result.revision_before} -n {ns}"
                                  ) from None
            after = helm.last_deployed(release_history(executable, name, ns, env=env, kube_context=context))
            result.revision_after = after.revision if after else None
            raise HealthCheckError(f"{name}: health check failed, rolled back to revision "
                                   f"{result.revision_before}: {reason}") from None
        logger.warning("health check of %s failed (%s); uninstalling the failed first install", name, reason)
        uninstall(executable, name, ns, env=env, kube_context=context)
        result.revision_after = None
        raise HealthCheckError(f"{name}: health check failed on the first install, which was removed: {reason}"
                               ) from None
