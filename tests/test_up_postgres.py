"""`hubploy up --database postgres --workers 2` as a user runs it (a subprocess with its own HUBPLOY_HOME and
free ports, no sandbox): a PostgreSQL server of its own, loopback only, its password 0600, run as the
``postgres`` user when root; the Prefect server keeps everything in it; Ctrl-C stops it and keeps the data,
which the next `hubploy up --database postgres` finds again. As on a shared server, hubploy-sandbox is not
installed (the processes import a stand-in that says so), and the deployment repository is the operator's
(--repo)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from helpers.cli import VENV_BIN
from helpers.stack import alive, free_port, interrupt, listen_addresses, pids, user_env, wait_for_output

from hubploy.runner import child_env, run
from hubploy.triggers.database import PostgresFiles, binaries, remove

pytestmark = pytest.mark.prefect

READY = "Ctrl-C stops what this `hubploy up` started"


def without_sandbox(home: Path) -> dict[str, str]:
    """A user's environment in which ``import hubploy_sandbox`` fails as it does where it is not installed
    (a package of that name first on PYTHONPATH raises ModuleNotFoundError): the checkout's venv has it."""
    shadow = home.parent / "no-hubploy-sandbox"
    (shadow / "hubploy_sandbox").mkdir(parents=True, exist_ok=True)
    (shadow / "hubploy_sandbox" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'hubploy_sandbox\'", name="hubploy_sandbox")\n'
    )
    env = user_env(home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(shadow), env.get("PYTHONPATH")) if p)
    return env


def _hubploy_without_sandbox(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A `hubploy` command that returns, run from ``home``'s parent in the environment of without_sandbox."""
    return subprocess.run(
        [str(VENV_BIN / "hubploy"), *args],
        cwd=home.parent,
        env=without_sandbox(home),
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _bare_repo(path: Path) -> str:
    run(["git", "init", "-q", "--bare", str(path)], env=child_env())
    return str(path)


def _up(home: Path, port: int, webhook_port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(VENV_BIN / "hubploy"),
            "up",
            "--repo",
            _bare_repo(home.parent / "hubs.git"),
            "--database",
            "postgres",
            "--workers",
            "2",
            "--no-sandbox",
            "--port",
            str(port),
            "--webhook-port",
            str(webhook_port),
        ],
        cwd=home.parent,
        env=without_sandbox(home),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def _query(files: PostgresFiles, port: int, sql: str) -> list[str]:
    env = child_env(
        {
            "PGPASSWORD": files.password_file.read_text().strip(),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(port),
            "PGUSER": "prefect",
        }
    )
    return run([str(binaries() / "psql"), "-d", "prefect", "-tAc", sql], env=env).stdout.split()


def _stop(proc: subprocess.Popen, log: Path) -> None:
    assert interrupt(proc, timeout=120) == 0, log.read_text()[-3000:]  # Ctrl-C


def test_up_on_postgres_with_two_workers_keeps_its_data_across_down(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = PostgresFiles(home)
    port, webhook_port = free_port(), free_port()
    first_log, second_log = tmp_path / "up-1.log", tmp_path / "up-2.log"
    proc = _up(home, port, webhook_port, first_log)
    try:
        out = wait_for_output(READY, first_log, proc, timeout=300)
        started = pids(home)
        assert set(started) == {"postgres", "prefect-server", "worker", "worker-2", "webhook"}, out
        db_port = int(re.search(r"postgres: started on 127\.0\.0\.1:(\d+)", out).group(1))
        assert f"database         PostgreSQL on 127.0.0.1:{db_port} (data {files.data})" in out
        assert listen_addresses(db_port) == {"0100007F"}  # loopback only
        assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
        owner = Path(f"/proc/{started['postgres']}").stat().st_uid
        postgres_uid = int(run(["id", "-u", "postgres"], env=child_env()).stdout)
        assert owner == (os.getuid() if os.getuid() else postgres_uid)
        # the Prefect server keeps its state there: the deployments, both workers, the automations
        deployments = set(_query(files, db_port, "SELECT name FROM deployment"))
        assert {"lifecycle", "prod-deploy", "deploy-hubs", "drift-check"} <= deployments
        workers = {"hubploy-process-worker", "hubploy-process-worker-2"}
        deadline = time.monotonic() + 120  # each worker registers with its first poll
        while set(_query(files, db_port, "SELECT name FROM worker")) != workers:
            assert time.monotonic() < deadline, _query(files, db_port, "SELECT name FROM worker")
            time.sleep(1)
        automations = " ".join(_query(files, db_port, "SELECT name FROM automation"))
        assert "crash runs without heartbeats" in automations and "retry runs crashed" in automations
        secret = re.search(r"webhook secret +(\S+)", out).group(1)
        _stop(proc, first_log)
        assert not [name for name, pid in started.items() if alive(pid)]
        assert (files.data / "PG_VERSION").is_file()  # stopped, data kept

        proc = _up(home, port, webhook_port, second_log)
        again = wait_for_output(READY, second_log, proc, timeout=300)
        assert f"postgres: started on 127.0.0.1:{db_port}" in again  # the same server, the same data:
        assert re.search(r"webhook secret +(\S+)", again).group(1) == secret  # the secret block was kept
        down = _hubploy_without_sandbox(home, "down")
        assert down.returncode == 0 and "postgres: stopped (its data is kept in" in down.stderr, down.stderr
        assert listen_addresses(db_port) == set()
        _stop(proc, second_log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids(home).values() if (home / "pids").is_dir() else ():
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        remove(files)


def test_up_with_the_sandbox_where_it_is_not_installed_starts_nothing_and_says_what_to_do(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    up = _hubploy_without_sandbox(home, "up", "--port", str(free_port()), "--webhook-port", str(free_port()))
    assert up.returncode != 0
    assert "hubploy-sandbox is not installed" in up.stderr and "hubploy up --no-sandbox" in up.stderr, (
        up.stderr
    )
    assert "Traceback" not in up.stderr
    assert not (home / "pids").is_dir() or not pids(home)
