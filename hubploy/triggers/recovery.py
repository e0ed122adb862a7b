"""Runs whose process died are crashed, then retried: two Prefect automations, as Prefect documents for
"zombie" flow runs.

The deployments whose runs may simply run again (the fleet flows, ``deploy-hubs``, ``rollout`` and
``prod-deploy`` in prefect.yaml) carry the tag ``RECOVERY_TAG``, and their runs' environment sets
PREFECT_FLOWS_HEARTBEAT_FREQUENCY to ``HEARTBEAT_SECONDS`` (``DEPLOYMENT_SETTINGS``; prefect.yaml sets it for
every run, in its work pools), so that a run's process (a process worker's child, or a Kubernetes Job's pod)
sends a heartbeat event that often. When such a run sends
neither a heartbeat nor a final state for ``SILENCE``, its process is gone (the worker's machine died, the
pod was evicted): the first automation marks it Crashed (state name ``NoHeartbeat``), the second schedules
exactly those runs again (``AwaitingRetry``), and any worker of the pool runs them again. The dead run's
release locks are leases its process no longer renews: the server frees them when they expire
(flows/tasks/locks.py), and the retry, which waits for them, then finds the release the dead run left
pending and recovers it before it deploys.

Runs without the tag are left alone: the lifecycle's process exits on purpose while its run waits for
approval, and a flow run in someone's terminal sends heartbeats only every 3 minutes (Prefect's default).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

RECOVERY_TAG = "hubploy-retry-when-lost"
HEARTBEAT_SECONDS = 30  # Prefect's minimum
DEPLOYMENT_SETTINGS = {
    "tags": [RECOVERY_TAG],
    "job_variables": {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS)}},
}
SILENCE = timedelta(seconds=3 * HEARTBEAT_SECONDS)
CRASHED_NAME = "NoHeartbeat"
FINAL_EVENTS = {
    f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed", CRASHED_NAME)
}
CRASH = "hubploy: crash runs without heartbeats"
RETRY = "hubploy: retry runs crashed without heartbeats"


def _tagged() -> dict[str, str]:
    return {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{RECOVERY_TAG}"}


def automations() -> list[AutomationCore]:
    crash = AutomationCore(
        name=CRASH,
        description=f"A run tagged {RECOVERY_TAG} that sent no heartbeat for {SILENCE} lost its process.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_tagged(),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=SILENCE,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name=CRASHED_NAME,
                message=f"no heartbeat for {SILENCE.total_seconds():.0f} s: its process died",
            )
        ],
    )
    retry = AutomationCore(
        name=RETRY,
        description=f"Run again, on any worker of the pool, a run tagged {RECOVERY_TAG} whose process died.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_tagged(),
            expect={f"prefect.flow-run.{CRASHED_NAME}"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED, name="AwaitingRetry", message="retried: its earlier process died"
            )
        ],
    )
    return [crash, retry]


def ensure_recovery_automations() -> None:
    """Create the automations, or update them to this version, on the current Prefect server."""
    with get_client(sync_client=True) as client:
        for automation in automations():
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:
                    client.delete_automation(extra.id)
            else:
                client.create_automation(automation)
