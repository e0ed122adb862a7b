#!/usr/bin/env python
"""The wave path of a fleet deploy on the sandbox: time per wave, the soak excluded.

N generated copies of `deployments/minimal` (user image pinned to the sandbox base image, nothing to
build) in three waves: `canary` (1 hub), `middle` (half the rest), `remaining`, each with a soak.
Three phases, each a rollout to staging through flows/waves.py as `hubploy rollout` runs it (the flow
in this process, a private Prefect server): fresh installs; a change in every hub (a new hub
`extraEnv` value, so every hub pod is replaced); the same commit again (every release unchanged).
Per wave: wall time of its deploys, checks, re-checks after the soak and verified marks (the soak
itself excluded), and the median per-hub deploy time inside it.

    .venv/bin/python bench/waves.py [--hubs 6] [--soak 5] [--spawn] [--keep]

`--spawn` turns on the spawn smoke test (a user server started and stopped per check).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_DIR,
    PrefectStack,
    cleanup_releases,
    git_commit_all,
    make_repo,
    median,
    sandbox,
    say,
    table,
    token,
)

SMOKE_VALUES = {
    "services": {"smoke": {}},
    "config": {"Spawner": {"http_timeout": 120}},
    "loadRoles": {
        "smoke": {"services": ["smoke"], "scopes": ["admin:users", "admin:servers", "access:servers"]}
    },
}


def settings(hubs: list[str], soak: float, spawn: bool) -> str:
    middle = hubs[1 : 1 + max(1, (len(hubs) - 1) // 2)]
    waves = [
        {"name": "canary", "hubs": hubs[:1], "soak": f"{soak:g}s"},
        {"name": "middle", "hubs": middle, "soak": f"{soak:g}s"},
    ]
    rollout: dict[str, Any] = {"waves": waves}
    if spawn:
        rollout.update(smoke_test="spawn", spawn={"service": "smoke", "timeout": 180})
    return "\n" + yaml.safe_dump({"rollout": rollout})


def set_values(root: Path, hub: str, *, colour: str | None, spawn: bool) -> None:
    common = root / "deployments" / hub / "config" / "common.yaml"
    values = yaml.safe_load(common.read_text())
    hub_values = values["jupyterhub"].setdefault("hub", {})
    if spawn:
        for key, value in SMOKE_VALUES.items():
            hub_values.setdefault(key, {}).update(value)
    if colour:
        hub_values.setdefault("extraEnv", {})["COLOUR"] = colour
    common.write_text(yaml.safe_dump(values))


def phase(root: Path, hubs: list[str], name: str) -> list[list[object]]:
    from prefect import flow

    from flows.waves import roll_out

    @flow(name="bench-waves", flow_run_name=f"bench-waves-{name}")
    def rollout() -> Any:
        return roll_out(str(root), hubs, "staging", trigger=f"bench {name}", timeout="5m")

    start = time.perf_counter()
    report = rollout()
    total = time.perf_counter() - start
    rows: list[list[object]] = []
    for wave in report.waves:
        per_hub = [h.seconds for h in wave.hubs]
        outcomes = sorted({h.outcome.value for h in wave.hubs})
        rows.append(
            [
                name,
                wave.wave.name,
                len(wave.hubs),
                f"{wave.seconds:.1f}",
                f"{wave.soaked_seconds:g}",
                f"{median(per_hub):.1f}",
                ",".join(outcomes),
            ]
        )
    soaked = sum(w.soaked_seconds for w in report.waves)
    rows.append([name, "(all, soak excluded)", len(hubs), f"{total - soaked:.1f}", f"{soaked:g}", "", ""])
    if report.stopped_at is not None:
        raise RuntimeError(f"{name}: {report.failure_message()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hubs", type=int, default=6)
    parser.add_argument("--soak", type=float, default=5.0)
    parser.add_argument("--spawn", action="store_true", help="check with the spawn smoke test")
    parser.add_argument("--keep", action="store_true", help="leave the releases and the Prefect server")
    args = parser.parse_args()
    if args.hubs < 3:
        sys.exit("--hubs must be at least 3 (one hub per wave)")

    sb = sandbox()
    prefix = f"bench-{token()}"
    hubs = [f"{prefix}-w{i:02d}" for i in range(args.hubs)]
    root = BENCH_DIR / f"run-{prefix}" / "repo"
    make_repo(root, hubs, sb.base_image(), settings_extra=settings(hubs, args.soak, args.spawn))
    for hub in hubs:
        set_values(root, hub, colour=None, spawn=args.spawn)
    git_commit_all(root, "waves")
    os.environ.update(sb.env)  # the tasks take their child env from this process, as a worker would
    stack = PrefectStack(sb)
    stack.start_server()
    rows: list[list[object]] = []
    try:
        rows += phase(root, hubs, "install")
        for hub in hubs:
            set_values(root, hub, colour="blue", spawn=False)
        git_commit_all(root, "a change in every hub")
        rows += phase(root, hubs, "change")
        rows += phase(root, hubs, "unchanged")
    finally:
        say(table(rows, ["phase", "wave", "hubs", "seconds", "soak s", "per hub median s", "outcomes"]))
        if not args.keep:
            stack.stop()
            say(f"removed {cleanup_releases(sb, prefix)} release(s)")


if __name__ == "__main__":
    main()
