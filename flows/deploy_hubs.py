"""Flow ``deploy_hubs``: several hubs to one environment at once, one task per hub (no subflows, which
cost a heartbeat-bound second each). The flow takes every release lock in one request; each task holds
a slot of its cluster's limit while it loads the cluster API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.tasks.deploy import deploy_hub
from flows.tasks.locks import fleet_release_locks
from hubploy.deploy import Outcome
from hubploy.errors import DeployError

MAX_PARALLEL = 32  # tasks mostly wait (cluster slot, helm --wait, the hub); the cluster limit bounds helm


@flow(name="deploy-hubs", task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL),
      flow_run_name="deploy-{env}")
def deploy_hubs(hubs: Sequence[str], env: str, repo_path: str = ".", trigger: str = "manual",
                timeout: str = "10m", redeploy: bool = False, health_check: bool = True) -> dict[str, dict[str, Any]]:
    """Deploy ``hubs`` to ``env`` concurrently; returns {hub: audit record}. Fails if any hub failed,
    after every hub has finished (one failure never cancels the others). Hubs whose release already
    runs exactly their configuration are left alone unless ``redeploy``; ``health_check=False`` does not
    wait for the hubs to answer after helm's own wait (nor roll back on it)."""
    logger = get_run_logger()
    with fleet_release_locks(repo_path, hubs, env):
        futures = {hub: deploy_hub.submit(hub, env, repo_path, timeout=timeout, trigger=trigger, redeploy=redeploy,
                                          health_check=health_check)
                   for hub in hubs}
        wait(list(futures.values()))
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for hub, future in futures.items():
        record = future.result(raise_on_failure=False)
        if future.state.is_completed():
            results[hub] = record
        else:
            results[hub] = {"hub": hub, "env": env, "result": Outcome.failed, "message": str(record)}
            failed.append(hub)
        logger.info("%s: %s %s", hub, results[hub].get("result"), results[hub].get("message") or "")
    create_table_artifact(key=f"deploy-hubs-{env}", description=f"deploy of {len(hubs)} hub(s) to {env}",
                          table=[{k: str(r.get(k, "")) for k in ("hub", "result", "revision_before",
                                                                  "revision_after", "duration", "message")}
                                 for r in results.values()])
    if failed:
        raise DeployError(f"{len(failed)} of {len(hubs)} hub(s) failed to deploy to {env}: {', '.join(failed)}")
    return results
