"""The deploy sequence of one hub in one environment (``deploy``, steps 1-8 of the package docstring)
and ``rollback_hub``: each runs its steps in order and records what happened in a ``DeployResult``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from hubploy import cloud, helm, http
from hubploy.deploy.health_gate import check_health_or_roll_back
from hubploy.deploy.images import check_images, hub_key_file_credentials, registry_image_digest
from hubploy.deploy.model import (DEFAULT_TIMEOUT, ClusterAccessProvider, ClusterSlot, DeployOptions, DeployResult,
                                  ImageDigest, Logger, RegistryCredentialsFor, log, recording)
from hubploy.deploy.namespaces import ensure_namespace, remove_namespace
from hubploy.deploy.prepare import (PreparedValues, config_digest, config_stamp, prepared_values, redact_rendered,
                                    sops_env, values_digest)
from hubploy.deploy.release import release_history, rollback, upgrade
from hubploy.errors import DeployError, HubployError
from hubploy.git import head_sha
from hubploy.health import check_health
from hubploy.layout import DeploymentRepo, Hub
from hubploy.registry import TIMEOUT as REGISTRY_TIMEOUT
from hubploy.runner import child_env, run


def deploy(repo: DeploymentRepo, hub_name: str, env_name: str, *, options: DeployOptions = DeployOptions(),
           cluster_access: ClusterAccessProvider | None = None, base_env: Mapping[str, str] | None = None,
           registry_credentials: RegistryCredentialsFor | None = None, logger: Logger = log,
           on_result: Callable[[DeployResult], None] | None = None,
           cluster_slot: ClusterSlot = contextlib.nullcontext) -> DeployResult:
    """Run the deploy sequence for ``hub_name`` in ``env_name`` and return what happened.

    ``cluster_access`` and ``registry_credentials`` (host -> credentials, asked only when a registry
    refuses anonymous access) default to the hub's classic key files, without Prefect blocks.
    ``cluster_slot`` is entered around the steps that load the cluster API (namespace, history,
    upgrade) and left before the health check waits for the hub.
    Raises a :class:`~hubploy.errors.HubployError` on any failure (after any rollback);
    ``on_result`` is always called with the final result, on success and failure alike.
    """
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(hub=hub.name, env=env_name, release=options.release or hub.release(env_name),
                          namespace=options.namespace or hub.namespace(env_name))
    credentials_for = registry_credentials or hub_key_file_credentials(hub, sops_env(repo, env))
    # One registry client for all image checks of this deploy (one TLS setup and connection, not one per image).
    with recording(result, on_result), http.client(timeout=REGISTRY_TIMEOUT) as registry_client:
        _deploy(repo, hub, options, result, env, cluster_access or classic_cluster_access(sops_env(repo, env)),
                registry_image_digest(env, credentials_for, client=registry_client), logger, cluster_slot)
    return result


def rollback_hub(repo: DeploymentRepo, hub_name: str, env_name: str, *, revision: int | None = None,
                 namespace: str | None = None, release: str | None = None,
                 cluster_access: ClusterAccessProvider | None = None, base_env: Mapping[str, str] | None = None,
                 health_check: bool = True, health_timeout: float | None = None, timeout: str = DEFAULT_TIMEOUT,
                 logger: Logger = log, on_result: Callable[[DeployResult], None] | None = None) -> DeployResult:
    """Roll a hub's release back to ``revision`` (default: the deployed revision before the current
    one), wait for it, and health-check it. Raises DeployError when there is nothing to roll back to.
    """
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(hub=hub.name, env=env_name, release=release or hub.release(env_name),
                          namespace=namespace or hub.namespace(env_name))
    provider = cluster_access or classic_cluster_access(sops_env(repo, env))
    with recording(result, on_result), provider(hub, env_name) as access:
        executable = helm.helm_executable(env)
        kube_env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
        context = access.context.replace("{namespace}", result.namespace) if access.context else None
        name, ns = result.release, result.namespace
        history = release_history(executable, name, ns, env=kube_env, kube_context=context)
        current = helm.last_deployed(history)
        result.revision_before = current.revision if current else None
        earlier = [r for r in history if current and r.revision < current.revision
                   and r.status in ("deployed", "superseded")]
        target = revision or (earlier[-1].revision if earlier else None)
        if target is None or not any(r.revision == target for r in history):
            raise DeployError(f"release {name} has no revision {target or 'before the current one'} to roll back to")
        logger.warning("rolling %s back from revision %s to revision %s", name, result.revision_before, target)
        rollback(executable, name, ns, target, env=kube_env, kube_context=context, timeout=timeout)
        after = helm.last_deployed(release_history(executable, name, ns, env=kube_env, kube_context=context))
        result.revision_after = after.revision if after else None
        if health_check:
            result.hub_version = check_health(hub, env_name, namespace=ns, release=name, env=kube_env,
                                              timeout=health_timeout or repo.settings.health_check_timeout,
                                              logger=logger)
        result.result = "rolled-back"
        result.message = f"rolled back to the configuration of revision {target}"
    return result



def _deploy(repo: DeploymentRepo, hub: Hub, options: DeployOptions, result: DeployResult, env: dict[str, str],
            cluster_access: ClusterAccessProvider, image_digest: ImageDigest, logger: Logger,
            cluster_slot: ClusterSlot) -> None:
    flags = options.flags
    with contextlib.suppress(HubployError):
        result.git_sha = head_sha(repo.root)
    with prepared_values(repo, hub, result.env, base_env=env, set_values=options.set_values,                # 1, 2
                         set_string_values=options.set_string_values, chart=options.chart, logger=logger) as prepared:
        executable, chart = prepared.helm, str(prepared.chart)
        major = helm.helm_major_version(executable, env)
        result.values_digest = values_digest(prepared.merged, prepared.plan.secret_files, prepared.decrypted)
        with cluster_access(hub, result.env) as access:                                                   # 3
            kube_env = {**access.env, "KUBECONFIG": str(access.kubeconfig)}
            context = access.context.replace("{namespace}", result.namespace) if access.context else None
            if flags.dry_run:
                result.images = check_images(prepared.merged, image_digest, logger=logger)
                out = run(helm.upgrade_argv(executable, major, result.release, chart, result.namespace,
                                            prepared.values_args, flags, kube_context=context), env=kube_env)
                result.rendered = redact_rendered(out.stdout, prepared.secret_strings)
                result.result = "dry-run"
                return
            with cluster_slot():
                history, created = _prepare_release(prepared, result, image_digest, kube_env, context, logger)  # 4, 5
                stamp = config_stamp(config_digest(prepared, result.release, result.namespace, flags.version))
                current = helm.last_deployed(history)
                if (options.skip_unchanged and history and current is history[-1]                         # 6
                        and current.status == "deployed" and stamp in current.description):
                    result.revision_before = result.revision_after = current.revision
                    result.result = "unchanged"
                    result.message = (f"revision {current.revision} already runs exactly this chart and these values;"
                                      " nothing to upgrade")
                    logger.info("%s: %s", result.release, result.message)
                else:
                    try:
                        upgrade(executable, major, chart, prepared.values_args, options, result, kube_env,  # 7
                                 context, logger, history=history,
                                 description=f"{stamp} (git {(result.git_sha or 'unknown')[:12]})")
                    except DeployError:
                        # Nothing of the release is left when helm refused it or --atomic removed the first install.
                        if created and (result.result == "refused" or options.flags.atomic):
                            remove_namespace(result.namespace, env=kube_env, kube_context=context, logger=logger)
                        raise
            if options.health_check:
                check_health_or_roll_back(hub, executable, options, result, kube_env, context, logger)  # 8
            if result.result == "pending":
                result.result = "deployed"
                logger.info("deployed %s revision %s (JupyterHub %s)", result.release, result.revision_after,
                            result.hub_version or "not checked")


def _prepare_release(prepared: PreparedValues, result: DeployResult, image_digest: ImageDigest,
                     env: dict[str, str], context: str | None, logger: Logger) -> tuple[list[helm.Revision], bool]:
    """Steps 4 and 5: read the release's history while every image is looked up in its registry; only
    when the release has no history, make sure the namespace exists (a release with revisions lives in
    one). Returns the history and whether the namespace was created just now. A history error wins over
    an image refusal; an image refusal leaves the cluster untouched."""
    with ThreadPoolExecutor(1) as background:
        history = background.submit(release_history, prepared.helm, result.release, result.namespace,
                                    env=env, kube_context=context)
        try:
            result.images = check_images(prepared.merged, image_digest, logger=logger)
        except HubployError:
            result.result = "refused"
            history.result()  # its error, if any, comes first
            raise
        revisions = history.result()
    if revisions:
        return revisions, False
    return [], ensure_namespace(result.namespace, env=env, kube_context=context, logger=logger)



# --- step 3: cluster access -------------------------------------------------------------------------

def classic_cluster_access(base_env: Mapping[str, str]) -> ClusterAccessProvider:
    """Credentials from the hub's key files (or the ambient KUBECONFIG), without Prefect blocks."""
    return lambda hub, env_name: cloud.cluster_access(hub, env_name, base_env=base_env)
