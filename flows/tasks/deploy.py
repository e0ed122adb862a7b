"""Prefect tasks ``deploy_hub`` and ``rollback_hub``: one hub in one environment, under its release lock
and cluster slot (flows/tasks/locks.py), retried when the error is transient, audited.

Every deploy or rollback, successful or not, writes a markdown artifact with key ``audit-<release>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext

from blocks.resolve import credentials
from flows.tasks.locks import deploy_locks, limit_name
from hubploy.deploy import DeployOptions, DeployResult, deploy, is_transient
from hubploy.deploy import rollback_hub as core_rollback
from hubploy.helm import UpgradeFlags
from hubploy.layout import DeploymentRepo, load_repo
from hubploy.runner import child_env

RETRY_DELAYS = [10, 30]


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception, classified below
        return is_transient(exc)
    return False


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
            ("namespace", result.namespace), ("result", result.outcome),
            ("git SHA", result.git_sha or "unknown"),
            ("values digest (secrets excluded)", result.values_digest or "not computed"),
            ("helm revision before", result.revision_before or "none"),
            ("helm revision after", result.revision_after or "none"),
            ("duration", f"{result.duration:.1f} s"),
            ("JupyterHub version", result.hub_version or "not checked")]
    rows += [(k.replace("_", " "), v) for k, v in trigger.items() if v]
    lines = [f"# {result.release}: {result.outcome}", "", "| field | value |", "|---|---|"]
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
               trigger: str | None = None, redeploy: bool = False) -> dict[str, Any]:
    """Deploy ``hub`` to ``env`` under the release and cluster locks; returns the audit record.
    ``redeploy`` upgrades even a release that already runs exactly this configuration."""
    options = DeployOptions(namespace=namespace, release=release, set_values=tuple(set_values or ()),
                            set_string_values=tuple(set_string_values or ()), health_check=health_check,
                            flags=UpgradeFlags(timeout=timeout, atomic=True), skip_unchanged=not redeploy)

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return deploy(repo, hub, env, options=options, **common)

    return _locked_and_audited(hub, env, repo_path, release, trigger, run)


@task(name="rollback-hub", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=_retry_transient, task_run_name="rollback-{hub}-{env}")
def rollback_hub(hub: str, env: str, repo_path: str = ".", *, revision: int | None = None,
                 namespace: str | None = None, release: str | None = None, timeout: str = "10m",
                 health_check: bool = True, trigger: str | None = None) -> dict[str, Any]:
    """Roll ``hub`` in ``env`` back to ``revision`` (default: the previous deployed one) under the
    same locks as a deploy, health-check it, and audit it; returns the audit record."""

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return core_rollback(repo, hub, env, revision=revision, namespace=namespace, release=release,
                             health_check=health_check, timeout=timeout, **common)

    return _locked_and_audited(hub, env, repo_path, release, trigger, run)


def _locked_and_audited(hub: str, env: str, repo_path: str, release: str | None, trigger: str | None,
                        run: Callable[[DeploymentRepo, dict[str, Any]], DeployResult]) -> dict[str, Any]:
    """Run a deploy or rollback of ``hub`` in ``env`` holding its release lock, with its cluster slot to
    hold only around cluster calls (not while the health check waits for the hub), its credentials
    (blocks.resolve.credentials) and an audit artifact; returns the audit record."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    base_env = child_env()
    triggered = trigger_info(trigger)
    with deploy_locks(repo, hub_obj, release or hub_obj.release(env), logger) as cluster_slot:
        result = run(repo, {
            "base_env": base_env, "logger": logger, "on_result": partial(write_audit, trigger=triggered),
            "credentials": credentials(repo, base_env), "cluster_slot": cluster_slot})
    return {**result.summary(), **triggered}


def write_audit(result: DeployResult, *, trigger: Mapping[str, Any]) -> None:
    create_markdown_artifact(key=limit_name("audit", result.release), markdown=audit_markdown(result, trigger),
                             description=f"{result.release}: {result.outcome}")
