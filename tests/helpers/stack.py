"""`hubploy up` and `hubploy demo` as a user runs them, for tests: subprocesses with their own
HUBPLOY_HOME and free ports, on the shared sandbox (already running, so neither may stop it)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from helpers.cli import VENV_BIN

UP_READY = "Ctrl-C stops what this `hubploy up` started"
DEMO_WAITING = "Everything keeps running until Ctrl-C."
DEMO_HUB_LOCK = Path("/tmp/hubploy-test-demo-hub.lock")
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_env(home: Path) -> dict[str, str]:
    """A user's environment: nothing of Prefect configured, hubploy on PATH, HUBPLOY_HOME at ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HUBPLOY_HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    env.pop("COLUMNS", None)  # not a terminal: rich assumes 80 columns; URLs and secrets must not wrap
    env.pop("CI", None)  # a person at a terminal, to whom `up` prints the webhook secret (not so in CI)
    return env


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for_output(text: str, log: Path, proc: subprocess.Popen, timeout: float) -> str:
    """The output so far, once it contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = log.read_text(errors="replace")
        if text in out:
            return out
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} before {text!r}:\n{out[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} after {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def listen_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp{,6}), as hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def pids(home: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text().split()[0]) for p in (home / "pids").glob("*.pid")}


def interrupt(proc: subprocess.Popen, timeout: float = 60) -> int:
    """Ctrl-C in the terminal (the foreground process group); SIGKILL if it does not end."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def demo_hub_lock() -> Iterator[None]:
    """Held while a test drives `hubploy demo`: every stack's demo deploys the example hub `minimal` to the
    shared sandbox's releases minimal-staging and minimal-prod, so two test sessions must take turns."""
    with open(DEMO_HUB_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@dataclass
class Demo:
    """The output of a `hubploy demo` waiting at the approval form."""

    output: str
    run_id: str
    run_url: str
    login_url: str


@dataclass
class UpStack:
    """A running `hubploy up`: what it printed, and how to reach its server (with basic auth)."""

    home: Path
    port: int
    webhook_port: int
    proc: subprocess.Popen
    log: Path
    output: str = ""
    started: dict[str, int] = field(default_factory=dict)

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.ui}/api"

    @property
    def auth_file(self) -> Path:
        return self.home / "prefect-auth"

    @property
    def auth_string(self) -> str:
        return self.auth_file.read_text().strip()

    @property
    def demo_origin(self) -> Path:
        return self.home / "demo" / "origin.git"

    def printed(self, label: str) -> str:
        """The value `hubploy up` printed after ``label`` (e.g. "webhook URL")."""
        found = re.search(rf"^  {re.escape(label)} +(.+)$", self.output, re.MULTILINE)
        assert found, f"`hubploy up` printed no {label!r}:\n{self.output}"
        return found.group(1).strip()

    def client(self) -> httpx.Client:
        user, _, password = self.auth_string.partition(":")
        return httpx.Client(base_url=self.api, auth=(user, password), timeout=30)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        with self.client() as client:
            response = client.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_for_final(self, run_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (state := self.flow_run(run_id)["state"])["type"] not in FINAL:
            assert time.monotonic() < deadline, state
            time.sleep(2)
        return state

    def prefect_settings(self) -> Any:
        """Settings for Prefect clients in this process to talk to this stack's server."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        return temporary_settings(
            updates={PREFECT_API_URL: self.api, PREFECT_API_AUTH_STRING: self.auth_string}
        )

    @contextmanager
    def demo(self, tmp_path: Path) -> Iterator[Demo]:
        """`hubploy demo` against this stack, stopped at the approval form; Ctrl-C when done. Hold
        demo_hub_lock() around it."""
        log = tmp_path / f"demo-{time.monotonic_ns()}.log"
        argv = [
            str(VENV_BIN / "hubploy"),
            "demo",
            "--port",
            str(self.port),
            "--webhook-port",
            str(self.webhook_port),
        ]
        proc = subprocess.Popen(
            argv,
            cwd=tmp_path,
            env=user_env(self.home),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out = wait_for_output(DEMO_WAITING, log, proc, timeout=900)
            found = [
                re.search(pattern, out)
                for pattern in (
                    r"hubploy approve ([0-9a-f-]{36})",
                    r"press Resume on the run page (\S+)",
                    r"Approve in the UI: log in at (\S+) ",
                )
            ]
            assert all(found), out
            yield Demo(out, *(m.group(1) for m in found if m))
            assert interrupt(proc) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> int:
        """Ctrl-C; returns the exit code of `hubploy up`. Kills what is left of the stack, if anything."""
        code = interrupt(self.proc)
        for pid in pids(self.home).values() if (self.home / "pids").is_dir() else ():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        return code


def start_up(
    home: Path,
    log: Path,
    *,
    hubploy: Sequence[str] = (str(VENV_BIN / "hubploy"),),
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> UpStack:
    """`hubploy up` on free ports, once it says it is up; ``hubploy`` is the command (default the installed
    one), ``options`` more options of `up`, ``env`` the environment (default a user's, user_env)."""
    port, webhook_port = free_port(), free_port()
    argv = [*hubploy, "up", "--port", str(port), "--webhook-port", str(webhook_port), *options]
    env = user_env(home) if env is None else env
    proc = subprocess.Popen(
        argv,
        cwd=log.parent,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    stack = UpStack(home, port, webhook_port, proc, log)
    try:
        stack.output = wait_for_output(UP_READY, log, proc, timeout=300)
    except BaseException:
        stack.stop()
        raise
    stack.started = pids(home)
    return stack
