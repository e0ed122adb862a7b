"""Prefect tasks ``deploy_hub`` and ``rollback_hub``: one hub in one environment, locked, retried when
the error is transient, audited.

Locks are Prefect global concurrency limits, created (or corrected) on first use:

- ``deploy-<release>`` with limit 1: two runs never drive the same release at once;
- ``cluster-<name>`` with limit ``cluster_concurrency`` of hubploy-repo.yaml: fleet deploys do not
  overload one cluster. The release lock is taken first, so a run waiting for a cluster slot never
  blocks another release.

Every deploy or rollback, successful or not, writes a markdown artifact with key ``audit-<release>``.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists

from blocks.resolve import cluster_access_for
from flows.tasks.images import hub_registry_credentials
from hubploy.deploy import ClusterAccessProvider, DeployOptions, DeployResult, deploy, is_transient, sops_env
from hubploy.deploy import rollback_hub as core_rollback
from hubploy.helm import UpgradeFlags
from hubploy.layout import DeploymentRepo, Hub, load_repo
from hubploy.runner import child_env

RETRY_DELAYS = [10, 30]
_ensured: dict[str, int] = {}
_ensured_lock = threading.Lock()


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception, classified below
        return is_transient(exc)
    return False


def ensure_limit(name: str, limit: int) -> None:
    """Make the global concurrency limit ``name`` exist with ``limit`` slots (once per process)."""
    with _ensured_lock:
        if _ensured.get(name) == limit:
            return
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit)
        except ObjectAlreadyExists:  # a concurrent run created it between the read and the create
            client.upsert_global_concurrency_limit_by_name(name, limit)
    with _ensured_lock:
        _ensured[name] = limit


def limit_name(prefix: str, key: str) -> str:
    """A limit name from free text: lowercase letters, digits and dashes."""
    return f"{prefix}-" + (re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "default")


def cluster_key(hub: Hub) -> str:
    """A name for the cluster a hub deploys to (its kube context when it names one)."""
    cluster = hub.config.cluster
    if cluster is None:
        return "default"
    settings = cluster.settings
    if cluster.context_template:
        return cluster.context_template.split("{", 1)[0] or cluster.provider
    parts = [cluster.provider, getattr(settings, "project", None) or getattr(settings, "resource_group", None),
             getattr(settings, "cluster", None) or getattr(settings, "credentials_block", None)
             or getattr(settings, "filename", None)]
    return "-".join(p for p in parts if p)


@contextlib.contextmanager
def deploy_locks(repo: DeploymentRepo, hub: Hub, release: str) -> Iterator[None]:
    """Hold ``deploy-<release>`` (1 slot), then ``cluster-<name>`` (cluster_concurrency slots)."""
    release_lock = limit_name("deploy", release)
    cluster_lock = limit_name("cluster", cluster_key(hub))
    ensure_limit(release_lock, 1)
    ensure_limit(cluster_lock, repo.settings.cluster_concurrency)
    with concurrency(release_lock, occupy=1, strict=True), concurrency(cluster_lock, occupy=1, strict=True):
        yield


def blocks_cluster_access(base_env: Mapping[str, str]) -> ClusterAccessProvider:
    """Credential blocks named in hubploy.yaml, else classic key files, else the ambient KUBECONFIG."""
    return lambda hub, env_name: cluster_access_for(hub, env_name, base_env=base_env)


def trigger_info(trigger: str | None) -> dict[str, Any]:
    """What started this deploy: the caller's label, and the flow and task run it ran in."""
    info: dict[str, Any] = {"trigger": trigger or "manual"}
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        run = flow_ctx.flow_run
        info.update(flow_run=f"{run.name} ({run.id})", flow_parameters=run.parameters,
                    deployment_id=str(run.deployment_id) if run.deployment_id else None)
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        info["task_run"] = f"{task_ctx.task_run.name} ({task_ctx.task_run.id})"
    return info


def audit_markdown(result: DeployResult, trigger: Mapping[str, Any]) -> str:
    rows = [("hub", result.hub), ("env", result.env), ("release", result.release),
            ("namespace", result.namespace), ("result", result.result), ("git SHA", result.git_sha or "unknown"),
            ("values digest (secrets excluded)", result.values_digest or "not computed"),
            ("helm revision before", result.revision_before or "none"),
            ("helm revision after", result.revision_after or "none"),
            ("duration", f"{result.duration:.1f} s"), ("JupyterHub version", result.hub_version or "not checked")]
    rows += [(k.replace("_", " "), v) for k, v in trigger.items() if v]
    lines = [f"# {result.release}: {result.result}", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in rows]
    lines += ["", "## Images", "", "| values path | image | digest |", "|---|---|---|"]
    lines += [f"| {i.path} | `{i.reference}` | `{i.digest}` |" for i in result.images]
    if result.recovered:
        lines += ["", "## Recovered", "", *(f"- {line}" for line in result.recovered)]
    if result.message:
        lines += ["", "## Message", "", "```", result.message, "```"]
    return "\n".join(lines) + "\n"


@task(name="deploy-hub", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient, task_run_name="deploy-{hub}-{env}")
def deploy_hub(hub: str, env: str, repo_path: str = ".", *, namespace: str | None = None,
               release: str | None = None, set_values: list[str] | None = None,
               set_string_values: list[str] | None = None, timeout: str = "10m", health_check: bool = True,
               trigger: str | None = None) -> dict[str, Any]:
    """Deploy ``hub`` to ``env`` under the release and cluster locks; returns the audit record."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    options = DeployOptions(namespace=namespace, release=release, set_values=tuple(set_values or ()),
                            set_string_values=tuple(set_string_values or ()), health_check=health_check,
                            flags=UpgradeFlags(timeout=timeout, atomic=True))
    name = release or hub_obj.release(env)
    base_env = child_env()
    triggered = trigger_info(trigger)
    with deploy_locks(repo, hub_obj, name):
        logger.info("holding the locks for %s; deploying", name)
        result = deploy(repo, hub, env, options=options, base_env=base_env, logger=logger,
                        on_result=partial(write_audit, trigger=triggered),
                        cluster_access=blocks_cluster_access(sops_env(repo, base_env)),
                        registry_credentials=partial(hub_registry_credentials, hub_obj, base_env=base_env))
    return {**result.summary(), **triggered}


@task(name="rollback-hub", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient, task_run_name="rollback-{hub}-{env}")
def rollback_hub(hub: str, env: str, repo_path: str = ".", *, revision: int | None = None,
                 namespace: str | None = None, release: str | None = None, timeout: str = "10m",
                 health_check: bool = True, trigger: str | None = None) -> dict[str, Any]:
    """Roll ``hub`` in ``env`` back to ``revision`` (default: the previous deployed one) under the
    same locks as a deploy, health-check it, and audit it; returns the audit record."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    name = release or hub_obj.release(env)
    base_env = child_env()
    triggered = trigger_info(trigger)
    with deploy_locks(repo, hub_obj, name):
        result = core_rollback(repo, hub, env, revision=revision, namespace=namespace, release=release,
                               base_env=base_env, health_check=health_check, timeout=timeout, logger=logger,
                               cluster_access=blocks_cluster_access(sops_env(repo, base_env)),
                               on_result=partial(write_audit, trigger=triggered))
    return {**result.summary(), **triggered}


def write_audit(result: DeployResult, *, trigger: Mapping[str, Any]) -> None:
    create_markdown_artifact(key=limit_name("audit", result.release), markdown=audit_markdown(result, trigger),
                             description=f"{result.release}: {result.result}")
