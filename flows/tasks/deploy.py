"""Prefect tasks ``deploy_hub`` and ``rollback_hub``: one hub in one environment, under its release lock
and cluster slot (flows/tasks/locks.py), retried when the error is transient, audited.

Every deploy or rollback, successful or not, writes a markdown artifact with key ``audit-<release>``.

The tasks of a wave (flows/waves.py) end a failed hub in a Failed state that carries its audit record
(``deploy_in_wave``, ``recheck_hub``), so a wave knows how each hub ended; ``verify_hub`` marks a
revision that passed its checks and soak verified (hubploy/verified.py), ``return_to_verified`` rolls
a hub back to its last verified revision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.states import Failed, State

from blocks.resolve import credentials
from flows.tasks.locks import deploy_locks, limit_name
from hubploy import helm
from hubploy.deploy import DeployOptions, DeployResult, Outcome, deploy, is_transient
from hubploy.deploy import rollback_hub as core_rollback
from hubploy.deploy.model import Target
from hubploy.errors import HubployError
from hubploy.health import HubCheck, check_hub
from hubploy.helm import UpgradeFlags
from hubploy.layout import DeploymentRepo, load_repo
from hubploy.runner import child_env
from hubploy.verified import mark_verified, verification

RETRY_DELAYS: list[float] = [10, 30]


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
        info.update(
            flow_run=f"{run.name} ({run.id})",
            flow_parameters=run.parameters,
            deployment_id=str(run.deployment_id) if run.deployment_id else None,
        )
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        info["task_run"] = f"{task_ctx.task_run.name} ({task_ctx.task_run.id})"
    return info


def audit_markdown(result: DeployResult, trigger: Mapping[str, Any]) -> str:
    rows = [
        ("hub", result.hub),
        ("env", result.env),
        ("release", result.release),
        ("namespace", result.namespace),
        ("result", result.outcome),
        ("git SHA", result.git_sha or "unknown"),
        ("values digest (secrets excluded)", result.values_digest or "not computed"),
        ("helm revision before", result.revision_before or "none"),
        ("helm revision after", result.revision_after or "none"),
        ("duration", f"{result.duration:.1f} s"),
        ("JupyterHub version", result.hub_version or "not checked"),
    ]
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


@task(
    name="deploy-hub",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retry_transient,
    task_run_name="deploy-{hub}-{env}",
)
def deploy_hub(
    hub: str,
    env: str,
    repo_path: str = ".",
    *,
    namespace: str | None = None,
    release: str | None = None,
    set_values: list[str] | None = None,
    set_string_values: list[str] | None = None,
    timeout: str = "10m",
    health_check: bool = True,
    trigger: str | None = None,
    redeploy: bool = False,
) -> dict[str, Any]:
    """Deploy ``hub`` to ``env`` under the release and cluster locks; returns the audit record.
    ``redeploy`` upgrades even a release that already runs exactly this configuration."""
    options = DeployOptions(
        namespace=namespace,
        release=release,
        set_values=tuple(set_values or ()),
        set_string_values=tuple(set_string_values or ()),
        health_check=health_check,
        flags=UpgradeFlags(timeout=timeout, atomic=True),
        skip_unchanged=not redeploy,
    )

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return deploy(repo, hub, env, options=options, **common)

    return _locked_and_audited(hub, env, repo_path, release, trigger, run)


def _retry_transient_record(task: Any, task_run: Any, state: Any) -> bool:
    record = state.result(raise_on_failure=False)
    return isinstance(record, dict) and bool(record.get("transient"))


@task(
    name="deploy-hub",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retry_transient_record,
    task_run_name="deploy-{hub}-{env}",
)
def deploy_in_wave(
    hub: str,
    env: str,
    repo_path: str = ".",
    *,
    timeout: str = "10m",
    health_check: bool = True,
    trigger: str | None = None,
    redeploy: bool = False,
) -> dict[str, Any] | State:
    """``deploy_hub`` for a wave: a hub that fails ends the task Failed with its audit record as the
    state's data (how it ended, its revisions), instead of raising."""
    options = DeployOptions(
        health_check=health_check,
        flags=UpgradeFlags(timeout=timeout, atomic=True),
        skip_unchanged=not redeploy,
    )

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return deploy(repo, hub, env, options=options, **common)

    return _record_or_failed(hub, env, repo_path, trigger, run)


def _record_or_failed(
    hub: str,
    env: str,
    repo_path: str,
    trigger: str | None,
    run: Callable[[DeploymentRepo, dict[str, Any]], DeployResult],
) -> dict[str, Any] | State:
    """``_locked_and_audited``'s record, or a Failed state carrying the record of the failed run (its
    ``transient`` says whether a retry may help)."""
    ended: list[DeployResult] = []
    try:
        return _locked_and_audited(hub, env, repo_path, None, trigger, run, ended=ended.append)
    except HubployError as exc:
        record = {
            **(ended[-1].summary() if ended else {"hub": hub, "env": env, "result": Outcome.failed}),
            "message": str(exc),
            "transient": is_transient(exc),
        }
        return Failed(message=f"{hub}: {exc}", data=record)


@task(name="recheck-hub", task_run_name="recheck-{hub}-{env}")
def recheck_hub(
    hub: str,
    env: str,
    repo_path: str,
    *,
    revision_before: int | None,
    timeout: str = "10m",
    trigger: str | None = None,
) -> dict[str, Any] | State:
    """Check a hub again after its wave's soak (health, and the spawn test when configured). A hub that
    fails goes back to ``revision_before`` (the Failed state carries the rollback's record); a failed
    first install is left for the line's stop to report."""
    logger = get_run_logger()
    try:
        seen = _check(hub, env, repo_path)
    except HubployError as exc:
        reason = str(exc)
    else:
        return {
            "hub": hub,
            "env": env,
            "result": Outcome.deployed,
            "message": f"after the soak: {seen.summary()}",
        }
    logger.warning("%s failed its check after the soak (%s)", hub, reason)
    if revision_before is None:
        message = f"failed after the soak (first install, nothing to roll back to): {reason}"
        return Failed(
            message=f"{hub}: {message}",
            data={"hub": hub, "env": env, "result": Outcome.failed, "message": message},
        )

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return core_rollback(repo, hub, env, revision=revision_before, timeout=timeout, **common)

    rolled = _record_or_failed(hub, env, repo_path, trigger, run)
    record = rolled.result(raise_on_failure=False) if isinstance(rolled, State) else rolled
    message = f"failed after the soak, rolled back to revision {revision_before}: {reason}"
    return Failed(
        message=f"{hub}: {message}", data={**(record if isinstance(record, dict) else {}), "message": message}
    )


@contextlib.contextmanager
def _cluster_target(hub: str, env: str, repo_path: str) -> Iterator[tuple[DeploymentRepo, Target]]:
    """The hub's release as a Target, with its cluster credentials, for reads and checks."""
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    base_env = child_env()
    with credentials(repo, base_env).cluster_access(hub_obj, env) as access:
        yield (
            repo,
            Target.of(helm.helm_executable(base_env), hub_obj.release(env), hub_obj.namespace(env), access),
        )


def _check(hub: str, env: str, repo_path: str) -> HubCheck:
    with _cluster_target(hub, env, repo_path) as (repo, target):
        return check_hub(
            repo.load_hub(hub),
            env,
            namespace=target.namespace,
            release=target.release,
            env=target.env,
            timeout=repo.settings.health_check_timeout,
            kube_context=target.context,
            logger=get_run_logger(),
        )


@task(name="verify-hub", task_run_name="verify-{hub}-{env}", retries=2, retry_delay_seconds=[2.0, 10.0])
def verify_hub(
    hub: str, env: str, repo_path: str, *, revision: int, wave: str, trigger: str | None = None
) -> int:
    """Mark ``revision`` of the hub's release verified (helm description) and audit it."""
    with _cluster_target(hub, env, repo_path) as (_, target):
        description = mark_verified(
            target.release,
            target.namespace,
            revision,
            env=target.env,
            kube_context=target.context,
            note=f"wave {wave}",
        )
    get_run_logger().info("%s revision %s verified", target.release, revision)
    rows = [
        ("revision", revision),
        ("wave", wave),
        ("helm description", description),
        *trigger_info(trigger).items(),
    ]
    lines = [
        f"# {target.release}: verified",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {k} | `{v}` |" for k, v in rows if v),
    ]
    create_markdown_artifact(
        key=limit_name("audit", target.release),
        markdown="\n".join(lines) + "\n",
        description=f"{target.release}: verified",
    )
    return revision


@task(name="return-to-verified", task_run_name="return-to-verified-{hub}-{env}")
def return_to_verified(
    hub: str, env: str, repo_path: str, *, timeout: str = "10m", trigger: str | None = None
) -> str:
    """Roll the hub back to its last verified revision unless it already runs it; what was done."""
    with _cluster_target(hub, env, repo_path) as (_, target):
        found = verification(target)
    if found.verified is None or found.serves_verified:
        return found.why_not_return() or ""
    record = rollback_hub.fn(
        hub, env, repo_path, revision=found.verified.revision, timeout=timeout, trigger=trigger
    )
    return (
        f"{hub}: returned to its last verified revision {found.verified.revision} (now revision "
        f"{record['revision_after']})"
    )


@task(
    name="rollback-hub",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=_retry_transient,
    task_run_name="rollback-{hub}-{env}",
)
def rollback_hub(
    hub: str,
    env: str,
    repo_path: str = ".",
    *,
    revision: int | None = None,
    namespace: str | None = None,
    release: str | None = None,
    timeout: str = "10m",
    health_check: bool = True,
    trigger: str | None = None,
) -> dict[str, Any]:
    """Roll ``hub`` in ``env`` back to ``revision`` (default: the previous deployed one) under the
    same locks as a deploy, health-check it, and audit it; returns the audit record."""

    def run(repo: DeploymentRepo, common: dict[str, Any]) -> DeployResult:
        return core_rollback(
            repo,
            hub,
            env,
            revision=revision,
            namespace=namespace,
            release=release,
            health_check=health_check,
            timeout=timeout,
            **common,
        )

    return _locked_and_audited(hub, env, repo_path, release, trigger, run)


def _locked_and_audited(
    hub: str,
    env: str,
    repo_path: str,
    release: str | None,
    trigger: str | None,
    run: Callable[[DeploymentRepo, dict[str, Any]], DeployResult],
    *,
    ended: Callable[[DeployResult], None] | None = None,
) -> dict[str, Any]:
    """Run a deploy or rollback of ``hub`` in ``env`` holding its release lock, with its cluster slot to
    hold only around cluster calls (not while the health check waits for the hub), its credentials
    (blocks.resolve.credentials) and an audit artifact; returns the audit record. ``ended`` also gets
    the final result, on success and failure alike."""
    logger = get_run_logger()
    repo = load_repo(repo_path)
    hub_obj = repo.load_hub(hub)
    base_env = child_env()
    triggered = trigger_info(trigger)
    with deploy_locks(repo, hub_obj, release or hub_obj.release(env), logger) as cluster_slot:
        result = run(
            repo,
            {
                "base_env": base_env,
                "logger": logger,
                "on_result": partial(write_audit, trigger=triggered, also=ended),
                "credentials": credentials(repo, base_env),
                "cluster_slot": cluster_slot,
            },
        )
    return {**result.summary(), **triggered}


def write_audit(
    result: DeployResult, *, trigger: Mapping[str, Any], also: Callable[[DeployResult], None] | None = None
) -> None:
    if also is not None:
        also(result)
    create_markdown_artifact(
        key=limit_name("audit", result.release),
        markdown=audit_markdown(result, trigger),
        description=f"{result.release}: {result.outcome}",
    )
