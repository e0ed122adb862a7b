"""The sandbox agent's opt-in lazy start (pod annotation ``hubploy-sandbox/lazy-start: "true"``): the pod is
Ready without a process; the first connection to its port starts the container and is answered by it."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures.sandbox import Sandbox

from hubploy_sandbox.agent.pods import HAND_OVER_TIMEOUT

pytestmark = pytest.mark.sandbox

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {annotations}
spec:
  containers:
    - name: web
      image: registry.example.org/plain-python:1
      command: [python3, -m, http.server, "8080", --bind, 0.0.0.0, --directory, /etc]
      ports: [{{containerPort: 8080}}]
"""


def _pod(sandbox: Sandbox, namespace: str, name: str) -> dict:
    return sandbox.get("pod", name, namespace=namespace)


def _ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _pid_file(sandbox: Sandbox, pod: dict) -> Path:
    return sandbox.paths.cluster(1).agent_state / "pod-pids" / f"{pod['metadata']['uid']}_web.pid"


def _events(sandbox: Sandbox, namespace: str, name: str) -> list[str]:
    items = sandbox.get("events", namespace=namespace)["items"]
    return [e["message"] for e in items if e["involvedObject"]["name"] == name and e["reason"] == "LazyStart"]


def test_a_lazy_pod_is_ready_without_a_process_until_a_first_connection(
    sandbox: Sandbox, sandbox_namespace: str
) -> None:
    lazy = json.dumps({"hubploy-sandbox/lazy-start": "true"})
    sandbox.apply(POD.format(name="lazy", annotations=lazy), sandbox_namespace)
    sandbox.apply(POD.format(name="eager", annotations="{}"), sandbox_namespace)

    def ready(name: str) -> dict | None:
        pod = _pod(sandbox, sandbox_namespace, name)
        return pod if _ready(pod) else None

    pod = sandbox.wait_for("the lazy pod Ready", lambda: ready("lazy"))
    eager = sandbox.wait_for("the eager pod Ready", lambda: ready("eager"))
    assert _pid_file(sandbox, eager).is_file()  # without the annotation: a process at once
    time.sleep(2)
    # ready, and still no process
    assert not _pid_file(sandbox, pod).exists(), "the sandbox's agent predates lazy start (restart it)"
    assert pod["status"]["containerStatuses"][0]["state"].keys() == {"running"}
    events = _events(sandbox, sandbox_namespace, "lazy")
    assert any("start on the first connection to port(s) 8080" in m for m in events)

    url = f"http://{pod['status']['podIP']}:8080/"
    # accepted by the agent, answered by the program
    # the agent holds the connection until the container listens (HAND_OVER_TIMEOUT) on a busy machine
    with urllib.request.urlopen(url, timeout=HAND_OVER_TIMEOUT + 10) as response:
        assert response.status == 200 and "hostname" in response.read().decode()
    assert _pid_file(sandbox, pod).is_file()
    with urllib.request.urlopen(url, timeout=10) as response:  # straight to the program now
        assert response.status == 200
    assert any(
        "a first connection started the containers" in m for m in _events(sandbox, sandbox_namespace, "lazy")
    )
    assert _ready(_pod(sandbox, sandbox_namespace, "lazy"))
