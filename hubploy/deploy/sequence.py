"""The deploy sequence of one hub in one environment (``deploy``, steps 1-8 of the package docstring)
and ``rollback_hub``. Each step that decides how a deploy ends returns an ``Ending``; ``settle`` records
it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from hubploy import helm, http
from hubploy.deploy.credentials import Credentials, KeyFileCredentials
from hubploy.deploy.health_gate import check_health_or_roll_back, probe
from hubploy.deploy.images import check_images, registry_image_digest
from hubploy.deploy.model import (
    DEFAULT_TIMEOUT,
    ClusterAccessProvider,
    ClusterSlot,
    DeployOptions,
    DeployResult,
    Ending,
    ImageDigest,
    ImageRef,
    Logger,
    Outcome,
    Target,
    log,
    settle,
)
from hubploy.deploy.namespaces import ensure_namespace, remove_namespace
from hubploy.deploy.prepare import (
    PreparedValues,
    config_digest,
    config_stamp,
    prepared_values,
    redact_rendered,
    sops_env,
    values_digest,
)
from hubploy.deploy.release import (
    deployed_revision_now,
    release_history,
    rollback,
    rollback_revision,
    upgrade,
)
from hubploy.errors import DeployError, HubployError
from hubploy.git import head_sha
from hubploy.layout import DeploymentRepo, Hub
from hubploy.registry import TIMEOUT as REGISTRY_TIMEOUT
from hubploy.runner import child_env, run

SAFE_DEFAULTS = DeployOptions()


def deploy(
    repo: DeploymentRepo,
    hub_name: str,
    env_name: str,
    *,
    options: DeployOptions = SAFE_DEFAULTS,
    credentials: Credentials | None = None,
    base_env: Mapping[str, str] | None = None,
    logger: Logger = log,
    on_result: Callable[[DeployResult], None] | None = None,
    cluster_slot: ClusterSlot = contextlib.nullcontext,
) -> DeployResult:
    """Run the deploy sequence for ``hub_name`` in ``env_name`` and return what happened.

    ``credentials`` (cluster access, and a registry login asked only when a registry refuses anonymous
    access) default to the hub's classic key files, without Prefect blocks.
    ``cluster_slot`` is entered around the steps that load the cluster API (namespace, history,
    upgrade) and left before the health check waits for the hub.
    Raises a :class:`~hubploy.errors.HubployError` on any failure (after any rollback);
    ``on_result`` is always called with the final result, on success and failure alike.
    """
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(
        hub=hub.name,
        env=env_name,
        release=options.release or hub.release(env_name),
        namespace=options.namespace or hub.namespace(env_name),
    )
    credentials = credentials or KeyFileCredentials(sops_env(repo, env))
    # One registry client for all image checks of this deploy (one TLS setup and connection per deploy).
    with http.client(timeout=REGISTRY_TIMEOUT) as registry_client:
        image_digest = registry_image_digest(env, partial(credentials.registry, hub), client=registry_client)
        steps = _Deploy(
            repo, hub, options, result, env, logger, cluster_slot, credentials.cluster_access, image_digest
        )
        return settle(result, steps.run, on_result)


@dataclass(frozen=True)
class _Deploy:
    """The steps of one deploy and what they share."""

    repo: DeploymentRepo
    hub: Hub
    options: DeployOptions
    result: DeployResult
    env: dict[str, str]
    logger: Logger
    cluster_slot: ClusterSlot
    cluster_access: ClusterAccessProvider
    image_digest: ImageDigest

    def run(self) -> Ending:
        """Steps 1 to 8: how the deploy ends (an error that no step turns into an ending propagates)."""
        options, result = self.options, self.result
        with contextlib.suppress(HubployError):
            result.git_sha = head_sha(self.repo.root)
        with prepared_values(
            self.repo,
            self.hub,
            result.env,
            base_env=self.env,
            chart=options.chart,
            set_values=options.set_values,
            set_string_values=options.set_string_values,
            logger=self.logger,
        ) as prepared:  # 1, 2
            major = helm.helm_major_version(prepared.helm, self.env)
            result.values_digest = values_digest(
                prepared.merged, prepared.plan.secret_files, prepared.decrypted
            )
            with self.cluster_access(self.hub, result.env) as access:  # 3
                target = Target.of(prepared.helm, result.release, result.namespace, access)
                if options.flags.dry_run:
                    return self._dry_run(prepared, target, major)
                with self.cluster_slot():
                    changed = self._change_release(prepared, target, major)  # 4-7
                if changed is not None and changed.error is not None:
                    return changed
                unhealthy = self._health_gate(target, unchanged=changed is not None)  # 8
        if unhealthy is not None:
            return unhealthy
        if changed is not None:
            return changed  # unchanged, and its hub answers
        self.logger.info(
            "deployed %s revision %s (JupyterHub %s)",
            result.release,
            result.revision_after,
            result.hub_version or "not checked",
        )
        return Ending(Outcome.deployed)

    def _dry_run(self, prepared: PreparedValues, target: Target, major: int) -> Ending:
        """Check the images and let helm render and validate the release, changing nothing."""
        self.result.images = self._check_images(prepared)
        argv = helm.upgrade_argv(
            target.helm,
            major,
            target.release,
            str(prepared.chart),
            target.namespace,
            prepared.values_args,
            self.options.flags,
            kube_context=target.context,
        )
        self.result.rendered = redact_rendered(run(argv, env=target.env).stdout, prepared.secret_strings)
        return Ending(Outcome.dry_run)

    def _change_release(self, prepared: PreparedValues, target: Target, major: int) -> Ending | None:
        """Steps 4 to 7, in the cluster slot: None when the release was upgraded, an ``unchanged`` ending
        when it already runs this configuration, else the ending of a refused or failed upgrade."""
        history = self._history_and_images(prepared, target)  # 4
        if isinstance(history, Ending):
            return history
        created = not history and ensure_namespace(target, logger=self.logger)  # 5
        flags, result = self.options.flags, self.result
        stamp = config_stamp(config_digest(prepared, target.release, target.namespace, flags.version))
        current = helm.last_deployed(history)
        if (
            self.options.skip_unchanged
            and history
            and current is history[-1]  # 6
            and current.status == "deployed"
            and stamp in current.description
        ):
            result.revision_before = result.revision_after = current.revision
            message = (
                f"revision {current.revision} already runs exactly this chart and these values; "
                "nothing to upgrade"
            )
            self.logger.info("%s: %s", target.release, message)
            return Ending(Outcome.unchanged, message)
        description = f"{stamp} (git {(result.git_sha or 'unknown')[:12]})"
        try:  # 7
            failure = upgrade(
                target,
                major,
                prepared.chart,
                prepared.values_args,
                flags,
                result,
                self.logger,
                history=history,
                description=description,
            )
        except DeployError:
            self._remove_created_namespace(created, target, Outcome.failed)
            raise
        if failure is not None:
            self._remove_created_namespace(created, target, failure.outcome)
        return failure

    def _history_and_images(self, prepared: PreparedValues, target: Target) -> list[helm.Revision] | Ending:
        """Step 4: read the release's history while every image is looked up in its registry. A missing
        image refuses the deploy before the cluster is touched; a history error wins over it."""
        with ThreadPoolExecutor(1) as background:
            history = background.submit(release_history, target)
            try:
                self.result.images = self._check_images(prepared)
            except HubployError as refusal:
                return _refused(refusal, history)
            return history.result()

    def _check_images(self, prepared: PreparedValues) -> list[ImageRef]:
        """Step 4's lookups, as far as hubploy.yaml's image_check wants them."""
        return check_images(
            prepared.merged,
            self.image_digest,
            logger=self.logger,
            scope=self.hub.config.image_check,
            built={spec.name for spec in self.hub.images},
        )

    def _remove_created_namespace(self, created: bool, target: Target, outcome: Outcome) -> None:
        """Nothing of the release is left when helm refused it or --atomic removed the first install."""
        if created and (outcome is Outcome.refused or self.options.flags.atomic):
            remove_namespace(target, logger=self.logger)

    def _health_gate(self, target: Target, *, unchanged: bool) -> Ending | None:
        if not self.options.health_check:
            return None
        return check_health_or_roll_back(
            self.hub,
            target,
            self.result,
            self.logger,
            unchanged=unchanged,
            timeout=self.options.health_timeout or self.repo.settings.health_check_timeout,
            rollback_timeout=self.options.flags.timeout,
        )


def _refused(refusal: HubployError, history: Future[list[helm.Revision]]) -> Ending:
    """A deploy refused by its image check; an error reading the history is the one raised."""
    try:
        history.result()
    except HubployError as exc:
        return Ending.failure(Outcome.refused, exc)
    return Ending.failure(Outcome.refused, refusal)


def rollback_hub(
    repo: DeploymentRepo,
    hub_name: str,
    env_name: str,
    *,
    revision: int | None = None,
    namespace: str | None = None,
    release: str | None = None,
    credentials: Credentials | None = None,
    base_env: Mapping[str, str] | None = None,
    health_check: bool = True,
    health_timeout: float | None = None,
    timeout: str = DEFAULT_TIMEOUT,
    logger: Logger = log,
    on_result: Callable[[DeployResult], None] | None = None,
    cluster_slot: ClusterSlot = contextlib.nullcontext,
) -> DeployResult:
    """Roll a hub's release back to ``revision`` (default: the deployed revision before the current
    one), wait for it, and health-check it. Raises DeployError when there is nothing to roll back to.
    ``cluster_slot`` is held around the helm calls, not while the health check waits for the hub."""
    hub = repo.load_hub(hub_name)
    env = dict(base_env) if base_env is not None else child_env()
    result = DeployResult(
        hub=hub.name,
        env=env_name,
        release=release or hub.release(env_name),
        namespace=namespace or hub.namespace(env_name),
    )
    credentials = credentials or KeyFileCredentials(sops_env(repo, env))

    def steps() -> Ending:
        with credentials.cluster_access(hub, env_name) as access:
            target = Target.of(helm.helm_executable(env), result.release, result.namespace, access)
            with cluster_slot():
                history = release_history(target)
                current = helm.last_deployed(history)
                result.revision_before = current.revision if current else None
                wanted = rollback_revision(target.release, history, revision)
                logger.warning(
                    "rolling %s back from revision %s to revision %s",
                    target.release,
                    result.revision_before,
                    wanted,
                )
                rollback(target, wanted, timeout=timeout)
                result.revision_after = deployed_revision_now(target)
            if health_check:
                result.hub_version = probe(
                    hub,
                    env_name,
                    target,
                    logger,
                    timeout=health_timeout or repo.settings.health_check_timeout,
                )
        return Ending(Outcome.rolled_back, f"rolled back to the configuration of revision {wanted}")

    return settle(result, steps, on_result)
