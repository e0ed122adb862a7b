"""`hubploy up` and `hubploy demo` as a user runs them: a subprocess with its own HUBPLOY_HOME and
free ports, on the shared sandbox (already running, so neither may stop it), then Ctrl-C."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from helpers.cli import VENV_BIN
from helpers.stack import UpStack, alive, demo_hub_lock, free_port, listen_addresses, start_up, user_env

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

DEPLOYMENTS = [
    "hubploy-lifecycle/lifecycle",
    "hubploy-approval-timeout/approval-timeout",
    "hubploy-pr-validation/pr-validation",
    "hubploy-prod-deploy/prod-deploy",
    "rebuild-images/rebuild-images",
    "hubploy-drift-check/drift-check",
]
CREDENTIAL_BLOCK_TYPES = {
    "gcp-cluster-credentials",
    "aws-cluster-credentials",
    "azure-cluster-credentials",
    "kubeconfig-credentials",
}


def _other_local_address() -> str | None:
    """A local, non-loopback IPv4 address of this machine, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_hubploy_up_serves_everything_locked_down_and_ctrl_c_stops_it(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    stack = start_up(home, tmp_path / "up.log")
    proc, port, webhook_port, log = stack.proc, stack.port, stack.webhook_port, stack.log
    started = stack.started
    try:
        out = stack.output
        assert "started (prefect-server, worker, webhook)" in out
        ui = stack.ui
        assert stack.printed("Prefect UI") == ui
        # how to log in, and where the auth string is: never the auth string itself
        auth_file = home / "prefect-auth"
        assert stack.printed("log in") == f"{ui}/login with the auth string (user:password) in {auth_file}"
        assert stack.auth_string.partition(":")[2] not in out
        webhook_url, secret = stack.printed("webhook URL"), stack.printed("webhook secret")
        assert webhook_url == f"http://127.0.0.1:{webhook_port}/webhook" and len(secret) >= 32
        assert set(started) == {"prefect-server", "worker", "webhook"}
        assert all(alive(pid) for pid in started.values())

        # the UI and the receiver answer
        assert httpx.get(ui, timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{webhook_port}/health", timeout=10).status_code == 200
        # the API listens on loopback only
        assert listen_addresses(port) == {"0100007F"}
        other = _other_local_address()
        if other is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{port}/api/health", timeout=5)
        # basic auth, with the generated string kept 0600
        auth_file = home / "prefect-auth"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        user, _, password = auth_file.read_text().strip().partition(":")
        assert user and len(password) >= 24
        api = f"{ui}/api"
        assert httpx.post(f"{api}/deployments/filter", json={}, timeout=10).status_code == 401
        assert (
            httpx.post(
                f"{api}/block_documents/filter", json={"include_secrets": True}, timeout=10
            ).status_code
            == 401
        )
        assert (
            httpx.post(f"{api}/deployments/filter", json={}, auth=(user, "wrong"), timeout=10).status_code
            == 401
        )
        with httpx.Client(base_url=api, auth=(user, password), timeout=10) as client:
            for name in DEPLOYMENTS:
                found = client.get(f"/deployments/name/{name}")
                assert found.status_code == 200, name
                assert found.json()["work_pool_name"] == "hubploy-process"
            slugs = {b["slug"] for b in client.post("/block_types/filter", json={}).json()}
            assert slugs >= CREDENTIAL_BLOCK_TYPES
            documents = {b["name"] for b in client.post("/block_documents/filter", json={}).json()}
            assert {"hubploy-webhook-secret", "sandbox-registry"} <= documents
        # the printed secret is the one the receiver checks
        body = json.dumps({"zen": "hi", "hook_id": 1}).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        ok = httpx.post(
            webhook_url, content=body, headers={**headers, "X-Hub-Signature-256": signature}, timeout=10
        )
        assert ok.status_code in (200, 202), ok.text
        bad = httpx.post(
            webhook_url,
            content=body,
            headers={
                **headers,
                "X-Hub-Signature-256": "sha256=" + "0" * 64,
                "X-GitHub-Delivery": str(uuid.uuid4()),
            },
            timeout=10,
        )
        assert bad.status_code == 401

        with demo_hub_lock():
            _demo_without_approve_then_approve_from_another_shell(stack, tmp_path)
    finally:
        assert stack.stop() == 0, log.read_text()[-3000:]  # Ctrl-C in the terminal: the foreground group
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in started.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [name for name, pid in started.items() if alive(pid)], log.read_text()[-3000:]
    assert proc.poll() == 0
    assert listen_addresses(port) == set() and listen_addresses(webhook_port) == set()
    out = log.read_text()
    assert "sandbox" not in out.split("Ctrl-C stops what")[1]  # it did not start the sandbox: left alone
    from hubploy_sandbox import lifecycle

    assert lifecycle.healthy(sandbox.paths)


def _demo_without_approve_then_approve_from_another_shell(stack: UpStack, tmp_path: Path) -> None:
    """`hubploy demo` next to a running `hubploy up`: it stops at the approval form, says how to log in
    and approve, and Ctrl-C leaves the stack it did not start running; the printed approve command works."""
    with stack.demo(tmp_path) as demo:
        out, run_id = demo.output, demo.run_id
        assert "prefect-server: already running" in out and "worker: already running" in out
        assert re.search(r"run +\S+: (Paused|Suspended)", out), out
        assert demo.run_url == f"{stack.ui}/runs/flow-run/{run_id}"
        assert demo.login_url == f"{stack.ui}/login?redirect=/runs/flow-run/{run_id}"
        assert f"with the auth string (user:password) in {stack.auth_file}" in out
        assert f"log in     {demo.login_url} with the auth string" in out  # in the summary too
        assert f"or in another shell: hubploy approve {run_id}" in out
        assert stack.auth_string.partition(":")[2] not in out
    assert all(alive(pid) for pid in stack.started.values()), "the demo stopped what `hubploy up` started"
    # the approve command as printed, from another shell: it finds the server `hubploy up` runs
    shell_env = {k: v for k, v in user_env(stack.home).items() if not k.startswith("PREFECT_API")}
    approved = subprocess.run(
        [str(VENV_BIN / "hubploy"), "approve", run_id, "--reason", "from a shell"],
        cwd=tmp_path,
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert approved.returncode == 0, approved.stdout + approved.stderr
    state = stack.wait_for_final(run_id, timeout=600)
    assert state["type"] == "COMPLETED", state


def test_hubploy_demo_approve_runs_to_prod_and_cleans_up(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    port, webhook_port = free_port(), free_port()
    with demo_hub_lock():
        proc = subprocess.run(
            [
                str(VENV_BIN / "hubploy"),
                "demo",
                "--approve",
                "--port",
                str(port),
                "--webhook-port",
                str(webhook_port),
            ],
            cwd=tmp_path,
            env=user_env(home),
            capture_output=True,
            text=True,
            timeout=1500,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    out = proc.stdout + proc.stderr
    started = {name: int(pid) for name, pid in re.findall(r"(\S+): started \(pid (\d+)", out)}
    try:
        assert proc.returncode == 0, out[-5000:]
        assert set(started) == {"prefect-server", "worker", "webhook"}, out[-5000:]
        assert "demo summary" in out
        summary = out.split("demo summary", 1)[1]
        assert re.search(r"run +\S+: Completed prod runs [0-9a-f]{12}", summary), summary
        assert f"http://127.0.0.1:{port}/runs/flow-run/" in summary
        assert f"log in     http://127.0.0.1:{port}/login?redirect=/runs/flow-run/" in summary
        assert "webhook delivered" in out and "approved" in out
        origin = home / "demo" / "origin.git"
        prod_log = subprocess.run(
            ["git", "-C", str(origin), "log", "-1", "--format=%B", "prod"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "hubploy demo" in prod_log
    finally:
        for pid in started.values():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
    assert not [name for name, pid in started.items() if alive(pid)]
    assert listen_addresses(port) == set() and listen_addresses(webhook_port) == set()
    from hubploy_sandbox import lifecycle

    assert lifecycle.healthy(sandbox.paths)


def test_hubploy_up_that_cannot_start_fails_fast_and_leaves_nothing_running(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with socket.socket() as taken:  # the Prefect port is taken by something else
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        proc = subprocess.run(
            [str(VENV_BIN / "hubploy"), "up", "--port", str(port), "--webhook-port", str(free_port())],
            cwd=tmp_path,
            env=user_env(home),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "error: the Prefect server exited" in out and "Traceback" not in out
    assert elapsed < 120, f"took {elapsed:.0f} s"  # not the 180 s readiness timeout
    started = {name: int(pid) for name, pid in re.findall(r"(\S+): started \(pid (\d+)", out)}
    assert set(started) == {"prefect-server"}
    assert not any(alive(pid) for pid in started.values())
    from hubploy_sandbox import lifecycle

    assert lifecycle.healthy(sandbox.paths)
