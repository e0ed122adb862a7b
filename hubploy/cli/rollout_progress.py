"""Progress of a rollout as the Prefect server records it: each wave (a subflow run ``wave-<n>-<name>-<env>``,
or the run itself without waves) and, per hub, the task it is at and that task's state. The same view
follows a rollout run here (`hubploy rollout`) and one a worker runs (`hubploy rollout --remote`)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.live import Live
from rich.table import Table

POLL_SECONDS = 1.0
STEPS = ("deploy", "recheck", "verify", "rollback", "return-to-verified")
_WAVE_RUN = re.compile(r"^wave-(\d+)-(.+)-[a-z]+$")


@dataclass(frozen=True)
class Step:
    wave: str
    hub: str  # "" for a wave's own step (its soak)
    step: str
    state: str
    seconds: float

    def line(self) -> str:
        who = f"{self.hub}: " if self.hub else ""
        return f"wave {self.wave}: {who}{self.step} {self.state.lower()} ({self.seconds:.0f} s)"


def _task_step(name: str, env: str) -> tuple[str, str] | None:
    """(step, hub) of a task run name such as ``deploy-physics-staging`` or ``soak-canary``."""
    if name.startswith("soak-"):
        return "soak", ""
    for step in sorted(STEPS, key=len, reverse=True):
        if name.startswith(f"{step}-") and name.endswith(f"-{env}"):
            return step, name[len(step) + 1 : -len(env) - 1]
    return None


def steps(client: Any, run_id: UUID, env: str) -> list[Step]:
    """The latest step of each hub of the run, wave by wave."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    waves = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
    )
    names = {run_id: "all"}
    for run in waves:
        match = _WAVE_RUN.match(run.name)
        if match:
            names[run.id] = f"{match.group(1)}. {match.group(2)}"
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(names))))
    latest: dict[tuple[str, str], Step] = {}
    for task in sorted(tasks, key=lambda t: t.expected_start_time or t.created):
        parsed = _task_step(task.name, env)
        if parsed is None or task.flow_run_id not in names:
            continue
        step, hub = parsed
        wave = names[task.flow_run_id]
        seconds = task.total_run_time.total_seconds() if task.total_run_time else 0.0
        if task.state is not None and task.state.is_running() and task.start_time:
            seconds = max(seconds, time.time() - task.start_time.timestamp())
        latest[(wave, hub)] = Step(wave, hub, step, task.state.name if task.state else "Pending", seconds)
    return sorted(latest.values(), key=lambda s: (s.wave, not s.hub, s.hub))


def table(rows: list[Step], title: str) -> Table:
    view = Table("wave", "hub", "step", "state", "time", title=title)
    for row in rows:
        view.add_row(row.wave, row.hub or "–", row.step, row.state, f"{row.seconds:.0f} s")
    return view


def follow(run_id: UUID, env: str, *, console: Console) -> Any:
    """Show the run's progress until it ends; its final flow run."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if console.is_terminal:
            with Live(console=console, auto_refresh=False) as live:
                for run, rows in _polls(client, run_id, env):
                    title = f"{run.name}: {run.state.name if run.state else '…'}"
                    live.update(table(rows, title), refresh=True)
            return run
        shown: set[Step] = set()
        for run, rows in _polls(client, run_id, env):  # noqa: B007 (the last run is returned)
            for row in rows:
                key = Step(row.wave, row.hub, row.step, row.state, 0.0)
                if key not in shown:
                    shown.add(key)
                    console.print(row.line(), highlight=False)
        return run


def _polls(client: Any, run_id: UUID, env: str) -> Iterator[tuple[Any, list[Step]]]:
    while True:
        run = client.read_flow_run(run_id)
        rows = steps(client, run_id, env)
        yield run, rows
        if run.state is not None and run.state.is_final():
            return
        time.sleep(POLL_SECONDS)
