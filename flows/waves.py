"""Rolling a fleet out wave by wave: the lifecycle's staging and prod deploys, ``deploy-hubs``, the
``hubploy-rollout`` flow and ``hubploy rollout`` all deploy through ``roll_out``.

Each wave (hubploy/rollout.py plans them from ``rollout.waves``) is a subflow run named
``wave-<n>-<name>-<env>``: its hubs are deployed at once (at most ``max_parallel``, and each cluster's
``cluster_concurrency``), each checked (health, and the spawn test with ``smoke_test: spawn``); a hub
that fails is rolled back by its deploy. When every hub passed, the wave soaks (a task ``soak-<wave>``
that waits), its hubs are checked again, and each revision that passed is marked verified. A wave
with a hub that failed stops the line: its other hubs finish, later waves are never deployed, the
hubs that failed return to their last verified release (``rollout.on_failure: rollback``), and the
caller ends in the state ``WaveFailed``. Held hubs (``hubploy hold``) are skipped and listed.

The fleet holds the release locks of all its hubs for the whole rollout, so no other run deploys a
hub of a later wave meanwhile.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.tasks.deploy import deploy_in_wave, recheck_hub, return_to_verified, verify_hub
from flows.tasks.holds import holds
from flows.tasks.locks import fleet_release_locks
from hubploy.config.repo_settings import OnFailure
from hubploy.deploy import Outcome
from hubploy.errors import HubployError
from hubploy.layout import DeploymentRepo, load_repo
from hubploy.rollout import (
    HubOutcome,
    HubReport,
    RolloutReport,
    WavePlan,
    WaveReport,
    plan_waves,
    select_wave,
    untouched,
)

MAX_PARALLEL = 32  # tasks mostly wait (cluster slot, helm --wait, the hub); the cluster limit bounds helm
WAVE_FAILED = "WaveFailed"
OUTCOMES = {
    Outcome.deployed: HubOutcome.deployed,
    Outcome.unchanged: HubOutcome.unchanged,
    Outcome.rolled_back: HubOutcome.rolled_back,
    Outcome.refused: HubOutcome.refused,
}


def roll_out(
    tree: str,
    hubs: Sequence[str],
    env: str,
    *,
    trigger: str,
    wave: str | None = None,
    timeout: str | None = None,
    redeploy: bool = False,
    health_check: bool = True,
) -> RolloutReport:
    """Deploy ``hubs`` to ``env`` wave after wave (only the wave ``wave`` when given), stopping at the
    first wave with a hub that failed; how each hub ended. ``timeout``: helm's wait for each hub (default:
    ``helm_timeout`` of hubploy-repo.yaml)."""
    logger = get_run_logger()
    repo = load_repo(tree)
    timeout = timeout or repo.settings.helm_timeout
    waves = plan_waves(hubs, repo.settings.rollout)
    if wave is not None:
        try:
            waves = select_wave(waves, wave)
        except ValueError as exc:
            raise HubployError(str(exc), hint="`hubploy plan` shows the waves") from None
    held = _held(repo, hubs, env)
    for hub, why in held.items():
        logger.warning("%s is held in %s and is skipped: %s", hub, env, why)
    done: list[WaveReport] = []
    stopped_notes: tuple[str, ...] = ()
    not_deployed: tuple[tuple[str, str], ...] = ()
    with fleet_release_locks(tree, [h for w in waves for h in w.hubs if h not in held], env):
        for index, plan in enumerate(waves):
            report = _run_wave(
                plan,
                held,
                env,
                tree,
                staged=repo.settings.rollout is not None,
                trigger=trigger,
                timeout=timeout,
                redeploy=redeploy,
                health_check=health_check,
            )
            done.append(report)
            if report.failed:
                not_deployed = untouched(waves[index + 1 :])
                stopped_notes = _after_stop(repo, report, env, tree, trigger=trigger, timeout=timeout)
                break
    rollout = RolloutReport(
        env, tuple(done), not_deployed, staged=repo.settings.rollout is not None, notes=stopped_notes
    )
    create_table_artifact(
        key=f"rollout-{env}",
        table=rollout.table(),
        description=f"rollout of {len(list(hubs))} hub(s) to {env} in {len(waves)} wave(s)",
    )
    return rollout


def _held(repo: DeploymentRepo, hubs: Sequence[str], env: str) -> dict[str, str]:
    """{hub: why} for the hubs whose release in ``env`` is held; a hub whose config does not load is
    left to its deploy, which reports the error."""
    releases = {}
    for hub in hubs:
        loaded, _ = repo.try_load_hub(hub)
        if loaded is not None and env in loaded.environments:
            releases[loaded.release(env)] = hub
    return {releases[release]: hold.describe() for release, hold in holds(releases).items()}


def _run_wave(
    plan: WavePlan, held: dict[str, str], env: str, tree: str, *, staged: bool, **options: Any
) -> WaveReport:
    """The wave (its held hubs skipped and reported): a subflow run of its own in a repository with
    ``rollout``, else run in the calling flow as before waves existed."""
    skipped = tuple(HubReport(hub, HubOutcome.held, held[hub]) for hub in plan.hubs if hub in held)
    active = [hub for hub in plan.hubs if hub not in held]
    if not active:
        return WaveReport(plan, skipped)
    if staged:
        # Prefect's task_runner type (TaskRunner[PrefectFuture[Any]]) excludes its own ThreadPoolTaskRunner
        wave_flow = deploy_wave.with_options(
            task_runner=ThreadPoolTaskRunner(max_workers=plan.max_parallel or MAX_PARALLEL)  # type: ignore[arg-type]
        )
        report: WaveReport = wave_flow(
            plan.number, plan.name, active, env, tree, soak_seconds=plan.soak_seconds, **options
        )
    else:
        report = wave_steps(dataclasses.replace(plan, hubs=tuple(active)), env, tree, verify=False, **options)
    return WaveReport(plan, (*report.hubs, *skipped), report.seconds, report.soaked_seconds)


def _after_stop(
    repo: DeploymentRepo, stopped: WaveReport, env: str, tree: str, *, trigger: str, timeout: str
) -> tuple[str, ...]:
    """``rollout.on_failure: rollback``: the hubs that failed after a change return to their last verified
    release (a refused deploy changed nothing)."""
    rollout = repo.settings.rollout
    if rollout is None or rollout.on_failure is OnFailure.keep:
        return ()
    changed = [h for h in stopped.failed if h.outcome is not HubOutcome.refused]
    futures = [return_to_verified.submit(h.hub, env, tree, timeout=timeout, trigger=trigger) for h in changed]
    wait(futures)
    return tuple(
        str(f.result())
        if f.state.is_completed()
        else f"{hub.hub}: could not return to its last verified release: {f.state.message}"
        for f, hub in zip(futures, changed, strict=True)
    )


@task(name="soak", task_run_name="soak-{wave}")
def soak(wave: str, seconds: float) -> float:
    """Wait ``seconds`` after the wave became healthy; then its hubs are checked again."""
    get_run_logger().info("wave %s soaks for %g s", wave, seconds)
    time.sleep(seconds)
    return seconds


# Prefect's task_runner type (TaskRunner[PrefectFuture[Any]]) excludes its own ThreadPoolTaskRunner
@flow(
    name="hubploy-wave",
    flow_run_name="wave-{number}-{name}-{env}",
    persist_result=True,
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL),  # type: ignore[arg-type]
)
def deploy_wave(
    number: int,
    name: str,
    hubs: list[str],
    env: str,
    tree: str,
    *,
    soak_seconds: float = 0.0,
    trigger: str = "manual",
    timeout: str = "10m",
    redeploy: bool = False,
    health_check: bool = True,
) -> WaveReport:
    """One wave of a rollout, as a subflow run named after it (``wave_steps``)."""
    return wave_steps(
        WavePlan(number, name, tuple(hubs), soak_seconds),
        env,
        tree,
        trigger=trigger,
        timeout=timeout,
        redeploy=redeploy,
        health_check=health_check,
        verify=True,
    )


def wave_steps(
    plan: WavePlan,
    env: str,
    tree: str,
    *,
    trigger: str,
    timeout: str,
    redeploy: bool,
    health_check: bool,
    verify: bool,
) -> WaveReport:
    """Deploy and check the wave's hubs at once; when all passed, soak, check them again and (``verify``)
    mark each revision verified. How each hub ended (the soak excluded from ``seconds``)."""
    logger = get_run_logger()
    started = time.monotonic()
    name, hubs = plan.name, plan.hubs
    logger.info("wave %s (%d): deploying %s to %s", name, plan.number, ", ".join(hubs), env)
    deployed = _ended(
        {
            hub: deploy_in_wave.submit(
                hub, env, tree, timeout=timeout, trigger=trigger, redeploy=redeploy, health_check=health_check
            )
            for hub in hubs
        }
    )
    soaked = 0.0
    if all(r.outcome.ok for r in deployed.values()) and health_check and plan.soak_seconds > 0:
        soaked = soak(name, plan.soak_seconds)
        rechecked = _ended(
            {
                hub: recheck_hub.submit(
                    hub, env, tree, revision_before=r.revision_before, timeout=timeout, trigger=trigger
                )
                for hub, r in deployed.items()
            }
        )
        deployed = {hub: r if rechecked[hub].outcome.ok else rechecked[hub] for hub, r in deployed.items()}
    if all(r.outcome.ok for r in deployed.values()) and health_check and verify:
        deployed = _verified(deployed, name, env, tree, trigger)
    seconds = round(time.monotonic() - started - soaked, 3)
    for report in deployed.values():
        logger.info(
            "wave %s: %s %s%s",
            name,
            report.hub,
            report.outcome.value,
            f" ({report.message})" if report.message else "",
        )
    return WaveReport(plan, tuple(deployed[hub] for hub in hubs), seconds, soaked)


def _ended(futures: dict[str, PrefectFuture[Any]]) -> dict[str, HubReport]:
    """How each hub's task ended: its record, from the result or the Failed state's data."""
    wait(list(futures.values()))
    return {hub: _report(hub, future.state) for hub, future in futures.items()}


def _report(hub: str, state: State) -> HubReport:
    record = state.result(raise_on_failure=False)
    if not isinstance(record, dict):  # an error no step turned into a record (a bug, a lost worker)
        return HubReport(hub, HubOutcome.failed, state.message or str(record))
    outcome = OUTCOMES.get(Outcome(record.get("result", Outcome.failed)), HubOutcome.failed)
    if state.is_failed() and outcome.ok:
        outcome = HubOutcome.failed
    return HubReport(
        hub,
        outcome,
        str(record.get("message") or ""),
        record.get("revision_before"),
        record.get("revision_after"),
        seconds=float(record.get("duration") or 0.0),
        record=record,
    )


def _verified(
    reports: dict[str, HubReport], wave: str, env: str, tree: str, trigger: str
) -> dict[str, HubReport]:
    """Mark every hub's serving revision verified; a mark that cannot be written is logged, not fatal."""
    futures = {
        hub: verify_hub.submit(hub, env, tree, revision=r.revision_after, wave=wave, trigger=trigger)
        for hub, r in reports.items()
        if r.revision_after is not None
    }
    wait(list(futures.values()))
    marked = {}
    for hub, report in reports.items():
        future = futures.get(hub)
        if future is not None and future.state.is_completed():
            marked[hub] = dataclasses.replace(report, verified_revision=future.result())
        else:
            if future is not None:
                get_run_logger().warning("%s: not marked verified: %s", hub, future.state.message)
            marked[hub] = report
    return marked


def wave_failed(report: RolloutReport) -> State | None:
    """The state ``WaveFailed`` naming the wave that stopped the line, or None when none did."""
    message = report.failure_message()
    return Failed(name=WAVE_FAILED, message=message) if message else None


def waves_markdown(report: RolloutReport) -> list[str]:
    """Markdown lines of a rollout's waves: for the approval form and artifacts."""
    lines = ["| wave | hub | result | revision | verified |", "|---|---|---|---|---|"]
    lines += [
        f"| {row['wave']} | {row['hub']} | {row['result']} | {row['revision'] or '–'} | "
        f"{row['verified'] or '–'} |"
        for row in report.table()
    ]
    soaks = [f"{w.wave.name}: soaked {w.soaked_seconds:g} s" for w in report.waves if w.soaked_seconds]
    return lines + (["", f"Soak: {'; '.join(soaks)}."] if soaks else [])
