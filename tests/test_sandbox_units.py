"""Fast checks of the sandbox's pure parts (no platform needed): what the agent reports for pods,
the generated JupyterHub config (loaded in JupyterHub's own virtualenv), env exports, PID files, paths."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import pytest

from hubploy.errors import SandboxError
from hubploy.runner import CommandResult, child_env, run
from hubploy_sandbox import kubelet
from hubploy_sandbox.components import AGENT, agent_ready
from hubploy_sandbox.env import ENV_NAMES, sandbox_env, shell_exports
from hubploy_sandbox.hub_config import write_hub_config
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.procs import command_line, proc_start_time, read_pid, runs, spawn, stop

# Loads a config file the way JupyterHub does, and prints the sections the sandbox sets.
LOAD_HUB_CONFIG = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
c = PyFileConfigLoader(sys.argv[1]).load_config()
print(json.dumps({s: dict(c[s]) for s in ("JupyterHub", "ConfigurableHTTPProxy")}, default=str))
"""


def pod(
    image: str = "localhost:5000/user:v1", annotations: dict | None = None, owner: str | None = None
) -> NS:
    meta = NS(
        name="p",
        namespace="n",
        uid="1234-abcd",
        annotations=annotations or {},
        owner_references=[NS(kind=owner)] if owner else None,
        deletion_timestamp=None,
    )
    spec = NS(containers=[NS(name="c", image=image)], init_containers=None)
    return NS(metadata=meta, spec=spec, status=None)


def conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["status"]["conditions"]}


def test_pods_become_running_and_ready() -> None:
    status = kubelet.pod_status(pod())
    assert status["status"]["phase"] == "Running"
    assert conditions(status) == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert status["status"]["containerStatuses"][0]["ready"] is True


@pytest.mark.parametrize(
    "p",
    [
        pod(image="localhost:5000/never-ready/user:v2"),
        pod(annotations={"hubploy_sandbox/never-ready": "true"}),
    ],
)
def test_never_ready_pods_run_but_are_not_ready(p: NS) -> None:
    status = kubelet.pod_status(p)
    assert status["status"]["phase"] == "Running"
    assert conditions(status)["Ready"] == "False"
    assert status["status"]["containerStatuses"][0]["ready"] is False


def test_job_pods_complete() -> None:
    status = kubelet.pod_status(pod(owner="Job"))
    assert status["status"]["phase"] == "Succeeded"
    assert status["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_not_ready_taint_is_dropped_and_others_kept() -> None:
    node = NS(
        spec=NS(
            taints=[
                NS(key="node.kubernetes.io/not-ready", value=None, effect="NoSchedule"),
                NS(key="dedicated", value="x", effect="NoSchedule"),
            ]
        )
    )
    assert kubelet.kept_taints(node) == [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    assert kubelet.kept_taints(NS(spec=NS(taints=None))) is None


def run_hub_config(path: Path) -> CommandResult:
    """Load ``path`` with traitlets in JupyterHub's own virtualenv (the project's has neither)."""
    python = SandboxPaths.from_env().hub_python
    assert python.exists(), f"{python} is missing: run `hubploy sandbox install`"
    return run([python, "-c", LOAD_HUB_CONFIG, path], env=child_env(), check=False, timeout=60)


def load_hub_config(path: Path) -> dict[str, dict[str, Any]]:
    result = run_hub_config(path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_hub_config_applies_values_like_z2jh(tmp_path: Path) -> None:
    values = {
        "hub": {
            "config": {"JupyterHub": {"authenticator_class": "dummy", "admin_access": True}},
            "extraConfig": {
                "20-b": "c.JupyterHub.concurrent_spawn_limit = 7\n",
                "10-a": "c.JupyterHub.concurrent_spawn_limit = 3\n"
                "c.JupyterHub.template_vars = {'x': z2jh_get_config('hub.db.type')}\n",
            },
            "db": {"type": "sqlite-memory"},
        }
    }
    c = load_hub_config(write_hub_config(tmp_path, values, public=1001, hub=1002, api=1003))
    hub, proxy = c["JupyterHub"], c["ConfigurableHTTPProxy"]
    assert hub["authenticator_class"] == "dummy" and hub["admin_access"] is True
    assert hub["concurrent_spawn_limit"] == 7  # snippets run in name order
    assert hub["template_vars"] == {"x": "sqlite-memory"}
    assert hub["bind_url"] == "http://127.0.0.1:1001"
    assert hub["hub_bind_url"] == "http://127.0.0.1:1002"
    assert proxy["api_url"] == "http://127.0.0.1:1003"
    assert hub["db_url"] == "sqlite:///:memory:"


def test_hub_config_extra_config_errors_propagate(tmp_path: Path) -> None:
    values = {"hub": {"extraConfig": {"x": "raise RuntimeError('boom')\n"}}}
    result = run_hub_config(write_hub_config(tmp_path, values, public=1, hub=2, api=3))
    assert result.returncode != 0 and "RuntimeError: boom" in result.stderr


def test_shell_exports_are_quoted() -> None:
    env = {name: f"value of {name} with 'quotes' $x" for name in ENV_NAMES}
    out = shell_exports(env)
    parsed = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    assert parsed == env


def test_env_of_a_sandbox_that_is_not_up_is_an_error(tmp_path: Path) -> None:
    paths = SandboxPaths.from_env({"HUBPLOY_SANDBOX_DIR": str(tmp_path / "none")})
    with pytest.raises(SandboxError, match="no sandbox is running"):
        sandbox_env(paths)


def test_pid_files_guard_against_pid_reuse(tmp_path: Path) -> None:
    me = os.getpid()
    good, reused = tmp_path / "good.pid", tmp_path / "reused.pid"
    good.write_text(f"{me} {proc_start_time(me)}\n")
    reused.write_text(f"{me} {proc_start_time(me) + 1}\n")
    assert read_pid(good) == me
    assert read_pid(reused) is None
    assert read_pid(tmp_path / "missing.pid") is None


def test_a_process_runs_its_command_line_whichever_link_started_it(tmp_path: Path) -> None:
    mine = command_line(os.getpid())
    assert mine is not None
    link = tmp_path / "python-link"
    link.symlink_to(sys.executable)
    assert runs(os.getpid(), mine) and runs(os.getpid(), [link, *mine[1:]])
    assert not runs(os.getpid(), [*mine, "--one-more"])
    assert not runs(os.getpid(), ["/bin/sh", *mine[1:]])


def test_a_ready_file_left_by_an_earlier_agent_does_not_count(tmp_path: Path) -> None:
    paths = SandboxPaths.from_env({"HUBPLOY_SANDBOX_DIR": str(tmp_path)})
    paths.agent_state.mkdir(parents=True)
    (paths.agent_state / "ready").write_text(f"{os.getpid()}\n")
    assert not agent_ready(paths)
    AGENT.pid_file(paths).parent.mkdir(parents=True)
    AGENT.pid_file(paths).write_text(f"{os.getpid()} {proc_start_time(os.getpid())}\n")
    assert agent_ready(paths)


def test_port_offset_moves_every_port() -> None:
    paths = SandboxPaths.from_env({"HUBPLOY_SANDBOX_PORT_OFFSET": "100"})
    assert (paths.ports.etcd_client, paths.ports.apiserver, paths.registry_host) == (
        22479,
        26543,
        "localhost:5100",
    )


def test_stop_with_children_also_stops_the_sessions_they_lead(tmp_path: Path) -> None:
    """As a Prefect process worker does: each flow-run process leads a session of its own."""
    parent = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True); "
              f"open({str(tmp_path / 'child')!r}, 'w').write(str(child.pid)); time.sleep(300)")
    pid_file = tmp_path / "parent.pid"
    spawn([sys.executable, "-c", parent], pid_file=pid_file, log=tmp_path / "parent.log", env=child_env())
    deadline = time.monotonic() + 30
    while not (tmp_path / "child").is_file() or not (tmp_path / "child").read_text():
        assert time.monotonic() < deadline, "the parent did not start its child"
        time.sleep(0.05)
    child = int((tmp_path / "child").read_text())
    assert proc_start_time(child) is not None
    assert stop(pid_file, timeout=5, children=True)
    deadline = time.monotonic() + 10
    while proc_start_time(child) is not None and command_line(child):  # gone, or a zombie (no command line)
        assert time.monotonic() < deadline, "the child's session outlived stop(children=True)"
        time.sleep(0.05)
