#!/usr/bin/env python
"""Benchmarks of hubploy on Prefect against classic hubploy 0.4, on the sandbox. Run by hand:

    .venv/bin/python bench/run.py all [--hubs 20]      # every figure, one run, prints the table
    .venv/bin/python bench/run.py planner|overhead|fleet|lifecycle [...]
    .venv/bin/python bench/run.py cleanup               # remove every bench-* release and namespace

See bench/README.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    PrefectStack,
    Sandbox,
    TreeMemory,
    cleanup_releases,
    cpu_spent,
    ensure_classic_venv,
    first_state,
    flow_run_states,
    git_commit_all,
    machine,
    make_repo,
    median,
    now_utc,
    parse_time,
    run,
    sandbox,
    say,
    table,
    timed,
    token,
    wait_run,
)

PREFIX = "bench-"
LIFECYCLE = "hubploy-lifecycle/lifecycle"
FLEET = "deploy-hubs/bench"
RESULTS: dict[str, Any] = {}


def settle(sb: Sandbox, seconds: float = 8.0) -> None:
    """Let the sandbox's JupyterHubs of the previous phase finish starting (they cost CPU)."""
    time.sleep(seconds)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and os.getloadavg()[0] > 1.5:
        time.sleep(2)


# --- planner ---------------------------------------------------------------------------------------------


def bench_planner(sb: Sandbox | None, work: Path, hubs: int = 500, reps: int = 5) -> dict[str, Any]:
    from prefect.logging import disable_run_logger

    from flows.tasks.lifecycle import plan_commit
    from hubploy.git import changed_files
    from hubploy.layout import load_repo
    from hubploy.planner import plan_changes

    say(f"planner: generating a repo of {hubs} hubs")
    names = [f"p{i:03d}" for i in range(hubs)]
    root = make_repo(work / "planner", names, None)
    base = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    for hub in ("p007", "p123", "p499"):
        common = root / "deployments" / hub / "config" / "common.yaml"
        common.write_text(common.read_text() + "# changed\n")
    (root / "deployments" / "p250" / "image" / "hello.txt").write_text("changed\n")
    git_commit_all(root, "change 4 hubs")
    (root / "README.md").write_text("docs\n")
    head = git_commit_all(root, "docs")
    times: dict[str, list[float]] = defaultdict(list)
    plan = None
    for _ in range(reps):
        t: dict[str, float] = {}
        with timed(t, "git diff"):
            files = changed_files(root, f"{base}...{head}")
        with timed(t, "hub list"):
            repo = load_repo(root)
            hub_names = repo.hub_names()
        with timed(t, "plan_changes"):
            plan = plan_changes(
                files, hub_names, chart=repo.settings.chart, shared_paths=repo.settings.shared_paths
            )
        with timed(t, "plan_commit task body"), disable_run_logger():
            change = plan_commit.fn(str(root), head, base)
        for k, v in t.items():
            times[k].append(v)
    assert plan is not None and plan.hub_names == ["p007", "p123", "p250", "p499"], plan
    assert change.plan.hubs[2].images_changed == ("image",), change.plan
    result = {k: median(v) for k, v in times.items()}
    result["diff+plan"] = result["git diff"] + result["hub list"] + result["plan_changes"]
    result["hubs"] = hubs
    say("planner:", {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()})
    return result


# --- overhead: one hub, our deploy (no health check) vs raw helm -----------------------------------------


def instrument_commands() -> dict[str, list[float]]:
    """Time every command hubploy runs in this process, by tool and subcommand (profiling aid)."""
    from hubploy import runner

    spent: dict[str, list[float]] = defaultdict(list)
    original = runner.run

    def timed_run(argv: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(argv, *args, **kwargs)
        finally:
            words = [Path(str(argv[0])).name] + [str(a) for a in argv[1:] if not str(a).startswith("-")][:2]
            key = " ".join(words[:2]) if words[0] != "kubectl" else " ".join(words[:3])
            spent[key].append(time.perf_counter() - start)

    for name, module in list(sys.modules.items()):
        if name.startswith("hubploy") and getattr(module, "run", None) is original:
            module.run = timed_run  # type: ignore[attr-defined]
    import hubploy.deploy.images as deploy_images

    original_digest = deploy_images.manifest_digest

    def timed_digest(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_digest(*args, **kwargs)
        finally:
            spent["registry manifest HEAD"].append(time.perf_counter() - start)

    deploy_images.manifest_digest = timed_digest
    return spent


def raw_helm_argv(sb: Sandbox, root: Path, hub: str, files: dict[Path, Path]) -> list[str]:
    from hubploy import values
    from hubploy.images import effective_tag
    from hubploy.layout import load_repo

    repo = load_repo(root)
    hub_obj = repo.load_hub(hub)
    images = [
        values.ImageValue(s.helm_substitution_path, s.name, effective_tag(hub_obj, s)) for s in hub_obj.images
    ]
    plan = values.layered_values(hub_obj.dir, repo.root, hub, "staging", images=images)
    return [
        sb.helm,
        "upgrade",
        "--install",
        "--wait",
        "--timeout",
        "10m",
        f"{hub}-staging",
        str(repo.chart_dir),
        "--namespace",
        f"{hub}-staging",
        *plan.helm_args(files),
    ]


def bench_overhead(sb: Sandbox, root: Path, hub: str, reps: int = 5) -> dict[str, Any]:
    from hubploy import values
    from hubploy.deploy import DeployOptions, deploy, sops_env
    from hubploy.helm import UpgradeFlags
    from hubploy.layout import load_repo
    from hubploy.secrets import decrypted

    repo = load_repo(root)
    hub_obj = repo.load_hub(hub)
    plan = values.layered_values(hub_obj.dir, repo.root, hub, "staging")
    spent = instrument_commands()
    # skip_unchanged=False: the release is at these values, and the point is to time a real upgrade.
    no_health = DeployOptions(
        flags=UpgradeFlags(timeout="10m", atomic=True), health_check=False, skip_unchanged=False
    )
    with_health = DeployOptions(
        flags=UpgradeFlags(timeout="10m", atomic=True), health_check=True, skip_unchanged=False
    )
    raw_t, ours_t, health_t = [], [], []
    with decrypted(plan.secret_files, env=sops_env(repo, sb.env)) as files:
        argv = raw_helm_argv(sb, root, hub, files)
        # warm-up: the release exists at these values
        deploy(load_repo(root), hub, "staging", options=no_health, base_env=sb.env)
        run(argv, env=sb.env)
        spent.clear()
        for _ in range(reps):
            start = time.perf_counter()
            run(argv, env=sb.env)
            raw_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            deploy(load_repo(root), hub, "staging", options=no_health, base_env=sb.env)
            ours_t.append(time.perf_counter() - start)
        breakdown = {
            k: (len(v) / reps, sum(v) / reps) for k, v in sorted(spent.items(), key=lambda kv: -sum(kv[1]))
        }
        for _ in range(2):
            start = time.perf_counter()
            deploy(load_repo(root), hub, "staging", options=with_health, base_env=sb.env)
            health_t.append(time.perf_counter() - start)
    result = {
        "raw helm": median(raw_t),
        "ours, no health check": median(ours_t),
        "ours, with health check": median(health_t),
        "reps": reps,
        "breakdown (calls/deploy, s/deploy)": breakdown,
    }
    result["ratio"] = result["ours, no health check"] / result["raw helm"]
    say("overhead:", json.dumps(result, default=str, indent=1))
    return result


# --- fleet: N hubs to staging, ours (deploy_hubs on a worker) vs classic 0.4 in sequence -----------------


def classic_fleet(sb: Sandbox, root: Path, hubs: list[str]) -> dict[str, Any]:
    exe = ensure_classic_venv()
    env = {
        **{k: v for k, v in sb.env.items() if k != "PYTHONPATH"},  # our `hubploy` package would shadow its
        "SOPS_AGE_KEY_FILE": str(root / "example-age.key"),
        "PATH": f"{exe.parent}:{sb.env['PATH']}",
    }
    per_hub = []
    cpu: dict[str, float] = {}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with cpu_spent(sb.process_groups(), cpu):
        for hub in hubs:
            t0 = time.perf_counter()
            run([str(exe), "deploy", hub, "hub", "staging"], env=env, cwd=root)
            per_hub.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu["classic hubploy (with helm)"] = (
        after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    )
    return {
        "total": total,
        "per hub median": median(per_hub),
        "per hub max": max(per_hub),
        "CPU seconds": cpu,
        "load average (1 min) at the end": os.getloadavg()[0],
    }


OURS_CPU = "hubploy (workers, flow-run processes, helm, sops)"
SERVER_CPU = "Prefect server (and PostgreSQL)"


def ours_fleet(stack: PrefectStack, root: Path, hubs: list[str], health_check: bool = True) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    assert stack.worker_procs
    cpu: dict[str, float] = {}
    groups = {OURS_CPU: stack.worker_pids(), SERVER_CPU: stack.server_pids(), **stack.sb.process_groups()}
    with (
        TreeMemory(stack.worker_pids()) as memory,
        TreeMemory(stack.server_pids()) as server_memory,
        cpu_spent(groups, cpu),
    ):
        start = time.perf_counter()
        flow_run = run_deployment(
            FLEET,
            parameters={
                "hubs": hubs,
                "env": "staging",
                "repo_path": str(root),
                "trigger": "bench",
                "health_check": health_check,
            },
            timeout=0,
        )
        done = wait_run(flow_run.id, lambda r: r.state is not None and r.state.is_completed(), timeout=3600)
        total = time.perf_counter() - start
    states = flow_run_states(flow_run.id)
    scheduled = first_state(states, "SCHEDULED").timestamp
    running = first_state(states, "RUNNING").timestamp
    completed = first_state(states, "COMPLETED").timestamp
    waits = lock_waits(flow_run.id)
    return {
        "load average (1 min) at the end": os.getloadavg()[0],
        "lock wait per hub (median, max)": (median(waits), max(waits) if waits else None),
        "mean slots held (of cluster_concurrency)": LAST_OCCUPANCY.get(flow_run.id),
        "lock wait total": sum(waits),
        "total (trigger to Completed)": total,
        "flow run (Running to Completed)": (completed - running).total_seconds(),
        "process start (Scheduled to Running)": (running - scheduled).total_seconds(),
        "worker tree peak RSS MB": memory.peak_tree_kb / 1024,
        "server peak RSS MB": server_memory.peak_tree_kb / 1024,
        "CPU seconds": cpu,
        "peak VmHWM by process": [(round(kb / 1024), cmd) for kb, cmd in memory.top(4)],
        "flow-run process CPU seconds (own, children: helm, sops, git)": tuple(
            round(sum(cpu[i] for cpu in memory.flow_run_cpu.values()), 2) for i in (0, 1)
        ),
        "flow run": done.name,
    }


def lock_waits(run_id: Any) -> list[float]:
    """Per deploy-hub task: task start to its "holding a slot of cluster-" log line (time queued for the
    locks); also the mean number of slots held, from the slot log lines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        logs: list[Any] = []
        while True:
            page = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200,
                offset=len(logs),
            )
            logs += page
            if len(page) < 200:
                break
    held = {
        log.task_run_id: log.timestamp for log in logs if log.message.startswith("holding a slot of cluster-")
    }
    left = {
        log.task_run_id: log.timestamp for log in logs if log.message.startswith("left the slot of cluster-")
    }
    waits = [(held[t.id] - t.start_time).total_seconds() for t in tasks if t.id in held and t.start_time]
    spans = [(held[t], left[t]) for t in held if t in left]
    if spans:  # mean number of deploys holding a cluster slot, from the first acquire to the last release
        first, last = min(a for a, _ in spans), max(b for _, b in spans)
        busy = sum((b - a).total_seconds() for a, b in spans)
        LAST_OCCUPANCY[run_id] = busy / max((last - first).total_seconds(), 1e-9)
    return waits


LAST_OCCUPANCY: dict[Any, float] = {}


FLEET_PHASES = {
    "install": "fresh installs",
    "change": "a real change to every hub (a new hub env variable: every hub pod is replaced)",
    "same commit": "the same commit deployed again (classic upgrades every hub; ours finds each unchanged)",
    "change, no health-check wait": "another real change; ours without waiting for the hubs to answer "
    "(classic never waits for them); classic: its figure of the change phase",
}
NO_HEALTH_CHECK = "change, no health-check wait"


def change_every_hub(root: Path, hubs: list[str], value: str) -> str:
    """Commit one new value (``jupyterhub.hub.extraEnv.BENCH_ROUND``) in every hub's config/common.yaml;
    the commit's SHA."""
    import yaml

    for hub in hubs:
        common = root / "deployments" / hub / "config" / "common.yaml"
        values = yaml.safe_load(common.read_text())
        values["jupyterhub"]["hub"].setdefault("extraEnv", {})["BENCH_ROUND"] = value
        common.write_text(yaml.safe_dump(values))
    return git_commit_all(root, f"bench round {value}")


def bench_fleet(
    sb: Sandbox,
    stack: PrefectStack,
    work: Path,
    tok: str,
    n: int,
    classic: bool = True,
    cluster_concurrency: int | None = None,
    lazy: bool = False,
) -> dict[str, Any]:
    """The four fleet phases, both tools deploying to every cluster of the sandbox (hub i: cluster i
    mod N). ``lazy``: both tools' hubs start their processes only at a first connection (as in the scale
    bench), ours deploys without the health check (which would connect), and the phase without the
    health-check wait, then the same as the change, is left out."""
    image = sb.base_image()
    ours_hubs = [f"{PREFIX}{tok}-o{i:02d}" for i in range(1, n + 1)]
    classic_hubs = [f"{PREFIX}{tok}-c{i:02d}" for i in range(1, n + 1)]
    placement = sb.placement()
    ours_root = make_repo(work / "fleet-ours", ours_hubs, image, placement=placement, env=sb.env, lazy=lazy)
    if cluster_concurrency:
        settings = ours_root / "hubploy-repo.yaml"
        settings.write_text(
            re.sub(
                r"(?m)^cluster_concurrency: .*$",
                f"cluster_concurrency: {cluster_concurrency}",
                settings.read_text(),
            )
        )
        git_commit_all(ours_root, f"cluster_concurrency {cluster_concurrency}")
    classic_root = make_repo(
        work / "fleet-classic", classic_hubs, image, classic=True, placement=placement, lazy=lazy
    )
    result: dict[str, Any] = {
        "hubs": n,
        "clusters": len(placement.contexts),
        "ours_root": str(ours_root),
        "ours_hubs": ours_hubs,
        "helm": Path(sb.helm).name,
        "workers": stack.workers,
        "database": stack.database,
        "cluster_concurrency": cluster_concurrency or "default",
        "lazy": lazy,
    }
    for phase in FLEET_PHASES:
        if lazy and phase == NO_HEALTH_CHECK:
            continue
        if phase == "change":
            change_every_hub(ours_root, ours_hubs, "2")
            change_every_hub(classic_root, classic_hubs, "2")
        if phase == NO_HEALTH_CHECK:
            change_every_hub(ours_root, ours_hubs, "3")
            if classic:
                result[f"classic {phase}"] = result["classic change"]
        elif classic:
            settle(sb)
            say(f"fleet {phase}: classic hubploy 0.4, {n} hubs one after another")
            result[f"classic {phase}"] = classic_fleet(sb, classic_root, classic_hubs)
            say(f"fleet {phase}: classic", result[f"classic {phase}"])
        settle(sb)
        say(f"fleet {phase}: ours, deploy-hubs flow run by the worker")
        result[f"ours {phase}"] = ours_fleet(
            stack, ours_root, ours_hubs, health_check=phase != NO_HEALTH_CHECK and not lazy
        )
        say(f"fleet {phase}: ours", result[f"ours {phase}"])
    return result


# --- scale: 10, 50, 100 hubs over the sandbox's clusters, per-hub cost -----------------------------------

SCALE_PHASES = ("install", "same commit")


def bench_scale(
    sb: Sandbox, stack: PrefectStack, work: Path, tok: str, sizes: list[int], *, lazy: bool
) -> dict[str, Any]:
    """Fleets of each size spread over every cluster of the sandbox, installed and then deployed again
    unchanged; per size the cost per hub (flow-run time and hubploy's CPU, divided by the hubs). ``lazy``:
    the hubs' pods start their processes only when something connects to them (see the agent), and the
    deploys skip the health check, which would connect; else every hub runs JupyterHub and CHP and is
    health-checked."""
    placement = sb.placement()
    out: dict[str, Any] = {
        "clusters": len(placement.contexts),
        "lazy": lazy,
        "helm": Path(sb.helm).name,
        "database": stack.database,
        "workers": stack.workers,
        "sizes": {},
    }
    for n in sizes:
        prefix = f"{PREFIX}{tok}-s{n}-"
        hubs = [f"{prefix}{i:03d}" for i in range(1, n + 1)]
        root = make_repo(
            work / f"scale-{n}", hubs, sb.base_image(), placement=placement, env=sb.env, lazy=lazy
        )
        result: dict[str, Any] = {}
        for phase in SCALE_PHASES:
            settle(sb)
            say(f"scale {n} hubs over {len(placement.contexts)} clusters, {phase}")
            fleet = ours_fleet(stack, root, hubs, health_check=not lazy)
            fleet["per hub (flow run / hubs)"] = fleet["flow run (Running to Completed)"] / n
            fleet["hubploy CPU per hub"] = fleet["CPU seconds"][OURS_CPU] / n
            result[phase] = fleet
            say(f"scale {n} {phase}:", json.dumps(fleet, default=str))
        out["sizes"][n] = result
        say(f"scale {n}: removing its releases")
        cleanup_releases(sb, prefix, wait=True)
    return out


# --- lifecycle: trigger to approval pause, and resume to the first prod helm call ------------------------


def helm_history(sb: Sandbox, release: str) -> list[dict[str, Any]]:
    out = run([sb.helm, "history", release, "-n", release, "-o", "json"], env=sb.env, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else []


def prod_task_start(run_id: Any, hub: str, after: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    starts = [
        r.start_time
        for r in runs
        if r.name.startswith(f"deploy-{hub}-prod") and r.start_time and r.start_time >= after
    ]
    return min(starts) if starts else None


def bench_lifecycle(
    sb: Sandbox, stack: PrefectStack, work: Path, tok: str, origin: Path, rounds: int = 2
) -> dict[str, Any]:
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    from hubploy.deploy import DeployOptions, deploy
    from hubploy.helm import UpgradeFlags
    from hubploy.layout import load_repo

    hub = f"{PREFIX}{tok}-lc"
    root = work / "lc-work"
    say("lifecycle: first staging deploy of", hub, "(not timed)")
    deploy(
        load_repo(root),
        hub,
        "staging",
        options=DeployOptions(flags=UpgradeFlags(timeout="5m", atomic=True)),
        base_env=sb.env,
    )
    common = root / "deployments" / hub / "config" / "common.yaml"
    out: dict[str, Any] = {"rounds": []}
    for n in range(1, rounds + 1):
        # Round 1 changes only a comment: staging is left alone (unchanged), prod is installed.
        # Later rounds change a value: staging and prod are upgraded, their hub pods replaced.
        if n == 1:
            common.write_text(common.read_text() + f"# bench change {n}\n")
            sha = git_commit_all(root, f"bench change {n}")
        else:
            sha = change_every_hub(root, [hub], str(n))
        subprocess.run(["git", "push", "-q", str(origin), "staging"], cwd=root, check=True)
        t0 = now_utc()
        start = time.perf_counter()
        flow_run = run_deployment(LIFECYCLE, parameters={"sha": sha, "repo_url": str(origin)}, timeout=0)
        wait_run(flow_run.id, lambda r: r.state is not None and r.state.is_paused(), timeout=600)
        seen = time.perf_counter() - start
        states = flow_run_states(flow_run.id)
        scheduled = first_state(states, "SCHEDULED").timestamp
        running = first_state(states, "RUNNING").timestamp
        paused = first_state(states, "PAUSED").timestamp
        r: dict[str, Any] = {
            "change": "comment only" if n == 1 else "a hub value",
            "trigger to Paused (client)": seen,
            "trigger to Paused (server)": (paused - t0).total_seconds(),
            "Prefect start (Scheduled to Running)": (running - scheduled).total_seconds(),
            "ours (Running to Paused)": (paused - running).total_seconds(),
        }
        before = len(helm_history(sb, f"{hub}-prod"))
        resumed = now_utc()
        resume_flow_run(
            flow_run.id, run_input={"decision": "approve", "sha": sha, "reason": "bench", "approver": "bench"}
        )
        done = wait_run(flow_run.id, lambda x: x.state is not None and x.state.is_final(), timeout=600)
        if not done.state.is_completed():
            raise RuntimeError(f"lifecycle ended {done.state.name}: {done.state.message}")
        history = helm_history(sb, f"{hub}-prod")
        new = list(history[before:])
        helm_start = parse_time(new[0]["updated"]) if new else None
        task_start = prod_task_start(flow_run.id, hub, resumed)
        states = flow_run_states(flow_run.id)
        rerun = first_state(states, "RUNNING", after=resumed).timestamp
        r.update(
            {
                "resume to flow Running again": (rerun - resumed).total_seconds(),
                "resume to prod deploy task start": (
                    (task_start - resumed).total_seconds() if task_start else None
                ),
                "resume to prod helm upgrade (helm history)": (helm_start - resumed).total_seconds()
                if helm_start
                else None,
                "resume to Completed": (done.state.timestamp - resumed).total_seconds(),
            }
        )
        say(f"lifecycle round {n}:", json.dumps(r, indent=1, default=str))
        out["rounds"].append(r)
    out["hub"] = hub
    return out


def make_lifecycle_repo(sb: Sandbox, work: Path, tok: str) -> Path:
    hub = f"{PREFIX}{tok}-lc"
    root = make_repo(work / "lc-work", [hub], sb.base_image(), settings_extra="health_check_timeout: 60\n")
    origin = work / "lc-origin.git"
    subprocess.run(["git", "init", "--bare", "-q", str(origin)], check=True)
    subprocess.run(["git", "branch", "prod"], cwd=root, check=True)
    subprocess.run(["git", "push", "-q", str(origin), "staging", "prod"], cwd=root, check=True)
    return origin


# --- report ----------------------------------------------------------------------------------------------


def f(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(results: dict[str, Any]) -> str:
    rows = []
    fleet = results.get("fleet")
    if fleet and "classic install" in fleet:
        phases = [phase for phase in FLEET_PHASES if f"ours {phase}" in fleet]  # a lazy fleet skips one
        lazy = ", lazy hubs" if fleet.get("lazy") else ""
        for phase in phases:
            ours, classic = fleet[f"ours {phase}"], fleet[f"classic {phase}"]
            e2e, inner = ours["total (trigger to Completed)"], ours["flow run (Running to Completed)"]
            rows.append(
                (
                    f"Fleet {phase}, {fleet['hubs']} hubs{lazy}, trigger to Completed",
                    f"{f(e2e, 1)} s / {f(classic['total'], 1)} s",
                    f(e2e / classic["total"]),
                    "≤ 0.25",
                )
            )
            rows.append(
                (
                    f"Fleet {phase}, flow run only (Running to Completed)",
                    f"{f(inner, 1)} s / {f(classic['total'], 1)} s",
                    f(inner / classic["total"]),
                    "≤ 0.25",
                )
            )
        rows.append(
            (
                "Memory: worker tree peak RSS during the fleet phases",
                " / ".join(
                    f"{f(fleet[f'ours {phase}']['worker tree peak RSS MB'], 0)} MB" for phase in phases
                ),
                "–",
                "–",
            )
        )
        rows.append(
            (
                "Memory: Prefect server (and PostgreSQL) peak RSS during the fleet phases",
                " / ".join(f"{f(fleet[f'ours {phase}']['server peak RSS MB'], 0)} MB" for phase in phases),
                "–",
                "–",
            )
        )
    scale = results.get("scale")
    if scale:
        rows += scale_rows(scale)
    over = results.get("overhead")
    if over:
        rows.append(
            (
                "Overhead: one hub, ours without health check / raw helm upgrade --install --wait",
                f"{f(over['ours, no health check'])} s / {f(over['raw helm'])} s",
                f(over["ratio"]),
                "≤ 1.5",
            )
        )
    lc = results.get("lifecycle")
    if lc:
        for i, r in enumerate(lc["rounds"], 1):
            rows.append(
                (
                    f"Lifecycle #{i} ({r['change']}): trigger to Paused (Prefect start + ours)",
                    (
                        f"{f(r['Prefect start (Scheduled to Running)'], 1)} + "
                        f"{f(r['ours (Running to Paused)'], 1)} s"
                    ),
                    f"{f(r['trigger to Paused (server)'], 1)} s total",
                    "ours ≤ 5 s",
                )
            )
            helm_at, rerun = (
                r["resume to prod helm upgrade (helm history)"],
                r["resume to flow Running again"],
            )
            rows.append(
                (
                    f"Approval latency #{i}: resume to prod helm upgrade (Prefect restart + ours)",
                    f"{f(rerun, 1)} + {f(helm_at - rerun if helm_at is not None else None, 1)} s",
                    f"{f(helm_at, 1)} s total",
                    "≤ 5 s",
                )
            )
    pl = results.get("planner")
    if pl:
        rows.append(
            (
                (f"Planner, {pl['hubs']} hubs: git diff + hub list + plan_changes (plan_commit task body)"),
                f"{f(pl['diff+plan'], 3)} s ({f(pl['plan_commit task body'], 3)} s)",
                "–",
                "≤ 1 s",
            )
        )
    return table(rows, ("figure", "measured", "ratio", "target"))


def scale_rows(scale: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Per size and phase: flow run, cost per hub (time, hubploy CPU), peak RSS, where the CPU went; the
    growth of the per-hub cost from the smallest to the largest size."""
    rows = []
    lazy = ", lazy hubs" if scale["lazy"] else ""
    what = f"{scale['clusters']} clusters, {scale['helm']}, {scale['database']}{lazy}"
    sizes = sorted(scale["sizes"], key=int)
    for n in sizes:
        for phase, r in scale["sizes"][n].items():
            cpu = ", ".join(f"{name} {f(seconds, 0)}" for name, seconds in r["CPU seconds"].items())
            per_hub = f"{f(r['per hub (flow run / hubs)'])} s, {f(r['hubploy CPU per hub'])} s"
            rows.append(
                (
                    f"Scale {n} hubs ({what}), {phase}: flow run; per hub (time, hubploy CPU)",
                    f"{f(r['flow run (Running to Completed)'], 1)} s; {per_hub}",
                    "–",
                    "–",
                )
            )
            rows.append(
                (
                    f"  peak RSS worker / server; CPU s ({phase})",
                    f"{f(r['worker tree peak RSS MB'], 0)} / {f(r['server peak RSS MB'], 0)} MB; {cpu}",
                    "–",
                    "–",
                )
            )
    for phase in SCALE_PHASES:
        first, last = scale["sizes"][sizes[0]][phase], scale["sizes"][sizes[-1]][phase]
        rows.append(
            (
                f"Scale per-hub time growth {sizes[0]} to {sizes[-1]} hubs ({phase})",
                f"{f(last['per hub (flow run / hubs)'])} s / {f(first['per hub (flow run / hubs)'])} s",
                f(last["per hub (flow run / hubs)"] / first["per hub (flow run / hubs)"]),
                "≤ 1.2",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "what", choices=["all", "planner", "overhead", "fleet", "scale", "lifecycle", "cleanup"]
    )
    parser.add_argument("--hubs", type=int, default=20, help="fleet size (default 20)")
    parser.add_argument("--sizes", default="10,50,100", help="scale: fleet sizes (default 10,50,100)")
    parser.add_argument(
        "--run-hubs",
        action="store_true",
        help="scale: every hub runs JupyterHub and CHP and is health-checked (default: the "
        "hubs' processes start lazily, on a first connection, and no health check "
        "connects)",
    )
    parser.add_argument(
        "--lazy-hubs",
        action="store_true",
        help="fleet: both tools' hubs start their processes lazily, on a first connection, and ours "
        "skips the health check (as the scale bench does by default)",
    )
    parser.add_argument("--planner-hubs", type=int, default=500)
    parser.add_argument("--skip-classic", action="store_true", help="fleet: ours only (A/B runs of our code)")
    parser.add_argument(
        "--keep", action="store_true", help="leave the releases and the Prefect server running"
    )
    parser.add_argument(
        "--helm",
        type=int,
        choices=[3, 4],
        default=3,
        help="the helm major version both tools run (default 3, as classic hubploy's users do)",
    )
    parser.add_argument(
        "--cluster-concurrency",
        type=int,
        help="fleet: cluster_concurrency of our generated repo (default: hubploy-repo.yaml's)",
    )
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the bench's Prefect server's database (default sqlite)",
    )
    parser.add_argument("--workers", type=int, default=1, help="process workers on the pool (default 1)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup in `finally` on kill

    if args.what == "planner":
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        work = BENCH_DIR / f"run-{token()}"
        RESULTS["planner"] = bench_planner(None, work, args.planner_hubs)
        print(report(RESULTS))
        shutil.rmtree(work, ignore_errors=True)
        return
    sb = sandbox(args.helm)
    if args.what == "cleanup":
        say("removed", cleanup_releases(sb, PREFIX), "releases")
        return
    tok = token()
    work = BENCH_DIR / f"run-{tok}"
    work.mkdir(parents=True)
    say("bench run", tok, "in", work)
    RESULTS["machine"] = machine()
    say("machine:", RESULTS["machine"])
    stack = PrefectStack(sb, database=args.database, workers=args.workers)
    try:
        run_phases(args, sb, stack, work, tok)
    finally:
        (work / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))
        if not args.keep:
            stack.stop()
            say("cleanup: removed", cleanup_releases(sb, f"{PREFIX}{tok}"), "releases")
    print()
    print(json.dumps(RESULTS.get("machine", {}), indent=1))
    print(report(RESULTS))
    print(f"\nraw results: {work / 'results.json'}")


def run_phases(args: argparse.Namespace, sb: Sandbox, stack: PrefectStack, work: Path, tok: str) -> None:
    if args.what in ("all", "planner"):
        RESULTS["planner"] = bench_planner(sb, work, args.planner_hubs)
    if args.what in ("all", "fleet", "scale", "lifecycle"):
        say(f"starting a Prefect server ({args.database}) and {args.workers} worker(s)")
        stack.start_server()
        origin = make_lifecycle_repo(sb, work, tok)
        stack.deploy(str(origin))
        stack.start_workers()
    if args.what in ("all", "fleet"):
        RESULTS["fleet"] = bench_fleet(
            sb,
            stack,
            work,
            tok,
            args.hubs,
            classic=not args.skip_classic,
            cluster_concurrency=args.cluster_concurrency,
            lazy=args.lazy_hubs,
        )
    if args.what in ("all", "scale"):
        RESULTS["scale"] = bench_scale(
            sb, stack, work, tok, [int(n) for n in args.sizes.split(",")], lazy=not args.run_hubs
        )
    if args.what in ("all", "overhead"):
        if "fleet" in RESULTS:
            root, hub = Path(RESULTS["fleet"]["ours_root"]), RESULTS["fleet"]["ours_hubs"][0]
        else:
            hub = f"{PREFIX}{tok}-ov"
            root = make_repo(work / "overhead", [hub], sb.base_image())
        settle(sb)
        RESULTS["overhead"] = bench_overhead(sb, root, hub)
    if args.what in ("all", "lifecycle"):
        settle(sb)
        RESULTS["lifecycle"] = bench_lifecycle(sb, stack, work, tok, origin)


if __name__ == "__main__":
    main()
