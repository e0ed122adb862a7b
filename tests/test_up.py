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

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

DEPLOYMENTS = ["hubploy-lifecycle/lifecycle", "hubploy-approval-timeout/approval-timeout",
               "hubploy-pr-validation/pr-validation", "hubploy-prod-deploy/prod-deploy",
               "rebuild-images/rebuild-images", "hubploy-drift-check/drift-check"]
CREDENTIAL_BLOCK_TYPES = {"gcp-cluster-credentials", "aws-cluster-credentials", "azure-cluster-credentials",
                          "kubeconfig-credentials"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # nothing configured
    env.update(HUBPLOY_HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("COLUMNS", None)  # not a terminal: rich assumes 80 columns; the URL and secret must not wrap
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _listen_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp{,6}), as hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def _other_local_address() -> str | None:
    """A local, non-loopback IPv4 address of this machine, if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _wait_for(text: str, log: Path, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        if text in out:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {text!r}:\n{out[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} after {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def _pids(home: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().split()[0]) for p in (home / "pids").glob("*.pid")}


def test_hubploy_up_serves_everything_locked_down_and_ctrl_c_stops_it(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    port, webhook_port = _free_port(), _free_port()
    log = tmp_path / "up.log"
    proc = subprocess.Popen([str(VENV_BIN / "hubploy"), "up", "--port", str(port), "--webhook-port", str(webhook_port)],
                            cwd=tmp_path, env=_env(home), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out = _wait_for("Ctrl-C stops what this `hubploy up` started", log, proc, timeout=300)
        assert "started (prefect-server, worker, webhook)" in out
        ui = f"http://127.0.0.1:{port}"
        assert f"Prefect UI       {ui}" in out
        webhook_url = re.search(r"webhook URL +(\S+)", out).group(1)
        secret = re.search(r"webhook secret +(\S+)", out).group(1)
        assert webhook_url == f"http://127.0.0.1:{webhook_port}/webhook" and len(secret) >= 32
        started = _pids(home)
        assert set(started) == {"prefect-server", "worker", "webhook"}
        assert all(_alive(pid) for pid in started.values())

        # the UI and the receiver answer
        assert httpx.get(ui, timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{webhook_port}/health", timeout=10).status_code == 200
        # the API listens on loopback only
        assert _listen_addresses(port) == {"0100007F"}
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
        assert httpx.post(f"{api}/block_documents/filter", json={"include_secrets": True},
                          timeout=10).status_code == 401
        assert httpx.post(f"{api}/deployments/filter", json={}, auth=(user, "wrong"), timeout=10).status_code == 401
        with httpx.Client(base_url=api, auth=(user, password), timeout=10) as client:
            for name in DEPLOYMENTS:
                found = client.get(f"/deployments/name/{name}")
                assert found.status_code == 200, name
                assert found.json()["work_pool_name"] == "hubploy-process"
            slugs = {b["slug"] for b in client.post("/block_types/filter", json={}).json()}
            assert CREDENTIAL_BLOCK_TYPES <= slugs
            documents = {b["name"] for b in client.post("/block_documents/filter", json={}).json()}
            assert {"hubploy-webhook-secret", "sandbox-registry"} <= documents
        # the printed secret is the one the receiver checks
        body = json.dumps({"zen": "hi", "hook_id": 1}).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()),
                   "Content-Type": "application/json"}
        ok = httpx.post(webhook_url, content=body, headers={**headers, "X-Hub-Signature-256": signature}, timeout=10)
        assert ok.status_code in (200, 202), ok.text
        bad = httpx.post(webhook_url, content=body, headers={**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64,
                                                             "X-GitHub-Delivery": str(uuid.uuid4())}, timeout=10)
        assert bad.status_code == 401

        _demo_without_approve_then_approve_from_another_shell(home, port, webhook_port, started, tmp_path)

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the foreground process group
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _pids(home).values() if (home / "pids").is_dir() else ():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in started.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [name for name, pid in started.items() if _alive(pid)], log.read_text()[-3000:]
    assert _listen_addresses(port) == set() and _listen_addresses(webhook_port) == set()
    out = log.read_text()
    assert "sandbox" not in out.split("Ctrl-C stops what")[1]  # it did not start the sandbox: left alone
    from hubploy_sandbox import lifecycle
    assert lifecycle.healthy(sandbox.paths)


def _demo_without_approve_then_approve_from_another_shell(home: Path, port: int, webhook_port: int,
                                                          up_pids: dict[str, int], tmp_path: Path) -> None:
    """`hubploy demo` next to a running `hubploy up`: it stops at the approval form, says how to approve,
    and Ctrl-C leaves the stack it did not start running; the printed approve command works."""
    log = tmp_path / "demo.log"
    demo = subprocess.Popen([str(VENV_BIN / "hubploy"), "demo", "--port", str(port), "--webhook-port",
                             str(webhook_port)], cwd=tmp_path, env=_env(home), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out = _wait_for("Everything keeps running until Ctrl-C.", log, demo, timeout=900)
        assert "prefect-server: already running" in out and "worker: already running" in out
        assert re.search(r"run +\S+: (Paused|Suspended)", out), out
        run_id = re.search(r"hubploy approve ([0-9a-f-]{36})", out).group(1)
        assert f"Approve in the UI: http://127.0.0.1:{port}/runs/flow-run/{run_id}" in out
        assert f"or in another shell: hubploy approve {run_id}" in out
        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert all(_alive(pid) for pid in up_pids.values()), "the demo stopped what `hubploy up` started"
    # the approve command as printed, from another shell: it finds the server `hubploy up` runs
    shell_env = {k: v for k, v in _env(home).items() if not k.startswith("PREFECT_API")}
    approved = subprocess.run([str(VENV_BIN / "hubploy"), "approve", run_id, "--reason", "from a shell"],
                              cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=120,
                              check=False)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    user, _, password = (home / "prefect-auth").read_text().strip().partition(":")
    deadline = time.monotonic() + 600
    while True:
        state = httpx.get(f"http://127.0.0.1:{port}/api/flow_runs/{run_id}", auth=(user, password),
                          timeout=10).json()["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED"):
            break
        assert time.monotonic() < deadline, state
        time.sleep(2)
    assert state["type"] == "COMPLETED", state


def test_hubploy_demo_approve_runs_to_prod_and_cleans_up(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    port, webhook_port = _free_port(), _free_port()
    proc = subprocess.run([str(VENV_BIN / "hubploy"), "demo", "--approve", "--port", str(port),
                           "--webhook-port", str(webhook_port)], cwd=tmp_path, env=_env(home), capture_output=True,
                          text=True, timeout=1500, stdin=subprocess.DEVNULL, check=False)
    out = proc.stdout + proc.stderr
    started = {name: int(pid) for name, pid in re.findall(r"(\S+): started \(pid (\d+)", out)}
    try:
        assert proc.returncode == 0, out[-5000:]
        assert set(started) == {"prefect-server", "worker", "webhook"}, out[-5000:]
        assert "demo summary" in out
        summary = out.split("demo summary", 1)[1]
        assert re.search(r"run +\S+: Completed prod runs [0-9a-f]{12}", summary), summary
        assert f"http://127.0.0.1:{port}/runs/flow-run/" in summary
        assert "webhook delivered" in out and "approved" in out
        origin = home / "demo" / "origin.git"
        prod_log = subprocess.run(["git", "-C", str(origin), "log", "-1", "--format=%B", "prod"], capture_output=True,
                                  text=True, check=True).stdout
        assert "hubploy demo" in prod_log
    finally:
        for pid in started.values():
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
    assert not [name for name, pid in started.items() if _alive(pid)]
    assert _listen_addresses(port) == set() and _listen_addresses(webhook_port) == set()
    from hubploy_sandbox import lifecycle
    assert lifecycle.healthy(sandbox.paths)


def test_hubploy_up_that_cannot_start_fails_fast_and_leaves_nothing_running(sandbox, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with socket.socket() as taken:  # the Prefect port is taken by something else
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        proc = subprocess.run([str(VENV_BIN / "hubploy"), "up", "--port", str(port), "--webhook-port",
                               str(_free_port())], cwd=tmp_path, env=_env(home), capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL, check=False)
        elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "error: the Prefect server exited" in out and "Traceback" not in out
    assert elapsed < 120, f"took {elapsed:.0f} s"  # not the 180 s readiness timeout
    started = {name: int(pid) for name, pid in re.findall(r"(\S+): started \(pid (\d+)", out)}
    assert set(started) == {"prefect-server"}
    assert not any(_alive(pid) for pid in started.values())
    from hubploy_sandbox import lifecycle
    assert lifecycle.healthy(sandbox.paths)
