"""Flow ``deploy_hubs``: several hubs to one environment, wave after wave (flows/waves.py; without
``rollout`` in hubploy-repo.yaml, all at once in one wave). The flow takes every release lock in one
request; each hub's task holds a slot of its cluster's limit while it loads the cluster API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.waves import MAX_PARALLEL, roll_out, wave_failed
from hubploy.errors import DeployError
from hubploy.rollout import HubOutcome


# Prefect's task_runner type (TaskRunner[PrefectFuture[Any]]) excludes its own ThreadPoolTaskRunner
@flow(
    name="deploy-hubs",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL),  # type: ignore[arg-type]
    flow_run_name="deploy-{env}",
)
def deploy_hubs(
    hubs: Sequence[str],
    env: str,
    repo_path: str = ".",
    trigger: str = "manual",
    timeout: str | None = None,
    redeploy: bool = False,
    health_check: bool = True,
    wave: str | None = None,
) -> dict[str, dict[str, Any]] | State:
    """Deploy ``hubs`` to ``env``; returns {hub: audit record} (a held hub's is empty) when no hub failed.

    A repository with ``rollout`` goes wave after wave and ends ``WaveFailed`` when a wave stops the
    line. Without it every hub deploys at once, one failure never cancels the others, and the flow
    fails with a DeployError naming the hubs that failed. Hubs whose release already runs exactly their
    configuration are left alone unless ``redeploy``; ``health_check=False`` does not wait for the hubs
    to answer after helm's own wait (nor roll back on it, nor soak). ``wave``: only that wave."""
    report = roll_out(
        repo_path,
        hubs,
        env,
        trigger=trigger,
        wave=wave,
        timeout=timeout,
        redeploy=redeploy,
        health_check=health_check,
    )
    stopped = wave_failed(report) if report.staged else None
    if stopped is not None:
        return stopped
    failed = [h.hub for h in report.hubs.values() if not h.outcome.ok and h.outcome is not HubOutcome.held]
    if failed:
        raise DeployError(
            f"{len(failed)} of {len(hubs)} hub(s) failed to deploy to {env}: {', '.join(failed)}"
        )
    return {hub: dict(h.record) for hub, h in report.hubs.items()}
