"""Units of the scale-out pieces: the PostgreSQL server of `hubploy up --database postgres`
(hubploy/triggers/database.py), the stack's database and workers (hubploy/triggers/stack.py), the lock lease
(flows/tasks/locks.py) and the recovery automations (hubploy/triggers/recovery.py)."""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from hubploy.errors import HubployError
from hubploy.triggers import database, stack
from hubploy.triggers.database import Database, PostgresFiles


def test_the_data_dir_is_in_the_home_or_as_root_where_the_postgres_user_can_reach_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = PostgresFiles(tmp_path / "home")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert files.data == tmp_path / "home" / "postgres" / "data"
    assert database._as_server_user(["initdb"]) == ["initdb"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    as_root = files.data
    assert as_root.parent.parent == database.ROOT_DATA_DIRS and as_root.name == "data"
    assert PostgresFiles(tmp_path / "other").data != as_root  # one cluster per stack home
    assert database._as_server_user(["initdb", "-D", "x"]) == [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
        "initdb",
        "-D",
        "x",
    ]


def test_password_and_port_are_chosen_once(tmp_path: Path) -> None:
    files = PostgresFiles(tmp_path)
    password, port = database._password(files), database._port(files)
    assert len(password) >= 24 and stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert (database._password(files), database._port(files)) == (password, port)
    assert json.loads(files.settings_file.read_text()) == {"port": port}
    server = database.PostgresServer(port, password)
    assert server.url == f"postgresql+asyncpg://prefect:{password}@127.0.0.1:{port}/prefect"


def test_a_machine_without_postgresql_gets_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "POSTGRES_BINARIES", tmp_path)
    with pytest.raises(HubployError) as raised:
        database.binaries()
    assert "PostgreSQL is not installed" in str(raised.value) and "--database sqlite" in str(raised.value)
    (tmp_path / "13" / "bin").mkdir(parents=True)
    (tmp_path / "13" / "bin" / "postgres").touch()
    (tmp_path / "15" / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "postgres").touch()
    assert database.binaries() == tmp_path / "15" / "bin"


def test_stop_of_a_server_that_does_not_run_does_nothing(tmp_path: Path) -> None:
    assert database.stop(PostgresFiles(tmp_path)) is False


def test_worker_names() -> None:
    assert stack.worker_names(1) == ["worker"]
    assert stack.worker_names(3) == ["worker", "worker-2", "worker-3"]
    with pytest.raises(HubployError, match="at least 1"):
        stack.worker_names(0)


def test_a_running_server_is_not_moved_to_another_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBPLOY_HOME", str(tmp_path))
    monkeypatch.setattr(stack, "read_pid", lambda pid_file: 4242)  # the server runs
    paths = stack.StackPaths.from_env()
    with pytest.raises(HubployError) as raised:
        stack._start_server(paths, {}, {"database": "sqlite"}, Database.postgres, print, [])
    assert "already runs on sqlite" in str(raised.value) and "hubploy down" in str(raised.value)


@pytest.mark.parametrize(("value", "expected"), [("", 120.0), ("60", 60.0), ("300.5", 300.5)])
def test_lock_lease(value: str, expected: float, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.tasks.locks import lease_seconds

    monkeypatch.setenv("HUBPLOY_LOCK_LEASE_SECONDS", value)
    assert lease_seconds() == expected


@pytest.mark.parametrize("value", ["soon", "30"])
def test_a_bad_lock_lease_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.tasks.locks import lease_seconds

    monkeypatch.setenv("HUBPLOY_LOCK_LEASE_SECONDS", value)
    with pytest.raises(HubployError, match="HUBPLOY_LOCK_LEASE_SECONDS"):
        lease_seconds()


def test_recovery_crashes_silent_tagged_runs_and_retries_only_those() -> None:
    from hubploy.triggers import recovery

    crash, retry = recovery.automations()
    tag = {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{recovery.RECOVERY_TAG}"}
    for automation in (crash, retry):
        related = automation.trigger.match_related
        assert related.model_dump() == tag, related
    assert crash.trigger.posture == "Proactive" and crash.trigger.after == {"prefect.flow-run.heartbeat"}
    assert crash.trigger.within == timedelta(seconds=3 * recovery.HEARTBEAT_SECONDS)
    assert "prefect.flow-run.Completed" in crash.trigger.expect
    (crashed,) = crash.actions
    assert (crashed.state.value, crashed.name) == ("CRASHED", recovery.CRASHED_NAME)
    assert retry.trigger.expect == {f"prefect.flow-run.{recovery.CRASHED_NAME}"}
    (scheduled,) = retry.actions
    assert (scheduled.state.value, scheduled.name) == ("SCHEDULED", "AwaitingRetry")
    env = recovery.DEPLOYMENT_SETTINGS["job_variables"]["env"]
    assert env == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(recovery.HEARTBEAT_SECONDS)}
