"""`hubploy sandbox up | status | env | down` end to end, on a second sandbox with its own runtime dir
and shifted ports, so the shared sandbox other tests use is never disturbed."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from fixtures.sandbox import free_port_offset

from hubploy.processes import proc_start_time
from hubploy.runner import child_env, run
from hubploy_sandbox.versions import KUBERNETES_VERSION

pytest_plugins = ["fixtures.sandbox"]

pytestmark = pytest.mark.sandbox


def hubploy(env: dict[str, str], *args: str, check: bool = True):
    return run(
        [sys.executable, "-m", "hubploy.cli.main", "sandbox", *args], env=env, check=check, timeout=300
    )


def exports(text: str) -> dict[str, str]:
    return dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in text.splitlines())


def recorded_pids(runtime: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in (runtime / "pids").rglob("*.pid")]


def bridges() -> set[str]:
    out = run(["ip", "-j", "link", "show", "type", "bridge"], env=child_env()).stdout or "[]"
    return {link["ifname"] for link in json.loads(out)}


def test_up_with_two_clusters_is_idempotent_and_down_stops_everything(tmp_path: Path) -> None:
    runtime = tmp_path / "sandbox"
    offset = free_port_offset()
    env = child_env(
        {"HUBPLOY_SANDBOX_DIR": str(runtime), "HUBPLOY_SANDBOX_PORT_OFFSET": str(offset)},
        drop=["HUBPLOY_SANDBOX_KUBECONFIG"],
    )
    try:
        first = hubploy(env, "up", "--clusters", "2").stdout
        assert "kube-apiserver: ready in" in first and "kube-apiserver-2: ready in" in first
        assert f"127.0.0.1:{5000 + offset}" in first and "contexts: sandbox, sandbox-2" in first
        second = hubploy(env, "up").stdout  # keeps the clusters it has
        assert "kube-apiserver-2: already running" in second and "agent-2: already running" in second
        status = hubploy(env, "status").stdout
        assert "stopped" not in status and KUBERNETES_VERSION in status
        sandbox_env = exports(hubploy(env, "env").stdout)
        assert sandbox_env["HUBPLOY_REGISTRY"] == f"localhost:{5000 + offset}"
        assert sandbox_env["KUBECONFIG"] == str(runtime / "kubeconfig")
        kubectl = sandbox_env["PATH"].split(":")[0] + "/kubectl"
        nodes = {}
        for context in ("sandbox", "sandbox-2"):
            got = run(
                [kubectl, "--context", context, "get", "nodes", "-o", "json"], env={**env, **sandbox_env}
            )
            (node,) = json.loads(got.stdout)["items"]
            nodes[context] = node["status"]["addresses"][0]["address"]
        assert nodes["sandbox"] != nodes["sandbox-2"]  # two control planes, each with its own node
        run(
            [kubectl, "--context", "sandbox-2", "create", "namespace", "only-on-two"],
            env={**env, **sandbox_env},
        )
        assert (
            run(
                [kubectl, "--context", "sandbox", "get", "namespace", "only-on-two"],
                env={**env, **sandbox_env},
                check=False,
            ).returncode
            != 0
        )
        pids = recorded_pids(runtime)
        # the registry, and etcd, API server, controller manager, scheduler, agent twice
        assert len(pids) == 11
        networks = {
            json.loads((runtime / "clusters" / i / "network.json").read_text())["block"] for i in "12"
        }
        assert {f"hsb{b}" for b in networks} <= bridges()
    finally:
        hubploy(env, "down")
    assert not runtime.exists()
    assert all(proc_start_time(pid) is None for pid in pids)
    assert not {f"hsb{b}" for b in networks} & bridges()
    status = hubploy(env, "status", check=False)
    assert status.returncode == 1 and "running" not in status.stdout.replace("kubernetes", "")
    assert hubploy(env, "env", check=False).returncode == 1


def test_existing_cluster_skips_kubernetes_and_the_agent(sandbox, tmp_path: Path) -> None:
    runtime = tmp_path / "external"
    env = child_env(
        {"HUBPLOY_SANDBOX_DIR": str(runtime), "HUBPLOY_SANDBOX_PORT_OFFSET": str(free_port_offset(1200))},
        drop=["HUBPLOY_SANDBOX_KUBECONFIG"],
    )
    try:
        out = hubploy(env, "up", "--use-kubeconfig", str(sandbox.kubeconfig)).stdout
        assert "existing cluster" in out and "kube-apiserver" not in out
        assert exports(hubploy(env, "env").stdout)["KUBECONFIG"] == str(sandbox.kubeconfig)
        assert len(recorded_pids(runtime)) == 1  # only the registry
    finally:
        hubploy(env, "down")
    assert sandbox.kubectl("get", "nodes").returncode == 0  # the cluster itself is untouched
