"""A deployable fleet for tests and benchmarks that run many hubs on a small machine: copies of the
``minimal`` example hub, lean (``LEAN_VALUES``), their user image pinned to the sandbox's base image, the
chart's images in the given registry (a private sandbox's has another port), committed on ``staging``."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from helpers.example_repo import copy_example_repo

GIT = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t"]
SANDBOX_REGISTRY = "localhost:5000"  # where hub/values.yaml names the chart's images
# What the hubs leave out: Z2JH's user-scheduler (two kube-scheduler replicas per hub) and its image
# pullers (a pre-install hook Job and two DaemonSets per hub). Each hub still runs its hub and proxy pods.
LEAN_VALUES: dict[str, Any] = {
    "scheduling": {"userScheduler": {"enabled": False}},
    "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}},
}


def set_values(root: Path, hub: str, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into the top level of the hub's ``jupyterhub`` values (config/common.yaml)."""
    common = root / "deployments" / hub / "config" / "common.yaml"
    merged = yaml.safe_load(common.read_text())
    merged["jupyterhub"].update(values)
    common.write_text(yaml.safe_dump(merged))


def commit(root: Path, message: str) -> str:
    """Commit everything; the commit's SHA."""
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=root, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


def fleet_repo(root: Path, hubs: Sequence[str], image: str, *, registry_block: str | None = None) -> Path:
    """``root`` with ``hubs`` pinned to ``image`` (their images' registry is ``image``'s), committed;
    ``registry_block`` names the Prefect block with the registry's credentials (else the deploy's env)."""
    copy_example_repo(root, dict.fromkeys(hubs, "minimal"))
    chart_values = root / "hub" / "values.yaml"
    registry = image.split("/", 1)[0]
    chart_values.write_text(chart_values.read_text().replace(f"{SANDBOX_REGISTRY}/", f"{registry}/"))
    images: dict[str, Any] = {"images": [{"name": image}]}
    if registry_block:
        images["registry"] = {
            "provider": "dockerconfig",
            "dockerconfig": {"credentials_block": registry_block},
        }
    for hub in hubs:
        (root / "deployments" / hub / "hubploy.yaml").write_text(yaml.safe_dump({"images": images}))
        set_values(root, hub, LEAN_VALUES)
    subprocess.run(["git", "init", "-q", "-b", "staging", str(root)], check=True)
    commit(root, "fleet")
    return root
