"""The Prefect-server tier runs on the database HUBPLOY_TEST_PREFECT_DATABASE names (sqlite or postgres):
a flow run of this test is found in that very database, read with its own client."""

from __future__ import annotations

import os
import sqlite3

import pytest
from sqlalchemy.engine import make_url

from hubploy.runner import child_env, run
from hubploy.triggers.database import Database, binaries

pytestmark = pytest.mark.prefect


def _flow_runs_named(database, name: str) -> int:  # type: ignore[no-untyped-def]
    query = f"SELECT count(*) FROM flow_run WHERE name = '{name}'"
    if database.kind is Database.sqlite:
        with sqlite3.connect(database.home / "prefect.db") as db:
            return int(db.execute(query).fetchone()[0])
    url = make_url(database.url)
    env = child_env(
        {
            "PGPASSWORD": url.password or "",
            "PGHOST": url.host or "",
            "PGPORT": str(url.port),
            "PGUSER": url.username or "",
        }
    )
    return int(run([str(binaries() / "psql"), "-d", url.database or "", "-tAc", query], env=env).stdout)


def test_the_prefect_server_keeps_its_runs_in_the_chosen_database(  # type: ignore[no-untyped-def]
    prefect_api: str, prefect_database
) -> None:
    from prefect import flow

    assert prefect_database is not None, "a reused server (HUBPLOY_TEST_PREFECT_API_URL): unknown database"
    assert prefect_database.kind == Database(os.environ.get("HUBPLOY_TEST_PREFECT_DATABASE", "sqlite"))
    name = f"database-probe-{os.getpid()}"

    @flow(name="database-probe", flow_run_name=name)
    def probe() -> int:
        return 1

    assert _flow_runs_named(prefect_database, name) == 0
    assert probe() == 1
    assert _flow_runs_named(prefect_database, name) == 1
