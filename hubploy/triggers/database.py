"""The database of the Prefect server `hubploy up` runs: SQLite, embedded in the server (the default), or a
PostgreSQL server of its own (`--database postgres`): Debian's server package, a cluster initdb'd once into
a data dir of the stack, listening on 127.0.0.1 only, with a password generated once and kept 0600.
Stopping it keeps its data.

initdb and postgres refuse to run as root: as root, the server runs as the ``postgres`` user (setpriv
drops to it and then execs, so the PID recorded is the server's own), and its data dir is
``/var/lib/postgresql/hubploy/<digest of the stack's home>`` (the ``postgres`` user cannot reach a home
such as /root/.hubploy), linked from the home as ``postgres``. Any other user runs it as itself, with the
data in the home.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import pwd
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from hubploy.errors import HubployError
from hubploy.processes import read_pid, spawn
from hubploy.processes import stop as stop_process
from hubploy.runner import child_env, register_secret, run

POSTGRES_BINARIES = Path("/usr/lib/postgresql")
ROOT_DATA_DIRS = Path("/var/lib/postgresql/hubploy")
SERVER_USER = "postgres"  # who runs the server when hubploy runs as root
ROLE = "prefect"
DATABASE = "prefect"
START_TIMEOUT = 60.0
Say = Callable[[str], None]


class Database(enum.StrEnum):
    """The Prefect server's database."""

    sqlite = "sqlite"
    postgres = "postgres"


@dataclass(frozen=True)
class PostgresFiles:
    """Where one PostgreSQL server of a stack keeps things. ``home`` holds the password (0600), the
    settings (port), the PID file and the log; ``data`` is the cluster's data dir."""

    home: Path

    @property
    def link(self) -> Path:
        return self.home / "postgres"

    @property
    def data(self) -> Path:
        if os.geteuid() != 0:
            return self.link / "data"
        digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
        return ROOT_DATA_DIRS / digest / "data"

    @property
    def password_file(self) -> Path:
        return self.home / "postgres-password"

    @property
    def settings_file(self) -> Path:
        return self.home / "postgres.json"

    @property
    def pid_file(self) -> Path:
        return self.home / "pids" / "postgres.pid"

    @property
    def log(self) -> Path:
        return self.home / "logs" / "postgres.log"


@dataclass(frozen=True)
class PostgresServer:
    port: int
    password: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the Prefect database (PREFECT_SERVER_DATABASE_CONNECTION_URL)."""
        return f"postgresql+asyncpg://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


def binaries() -> Path:
    """The bin dir of the newest PostgreSQL server installed from Debian's packages."""
    found = sorted(
        (p for p in POSTGRES_BINARIES.glob("*/bin") if (p / "postgres").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise HubployError(
            f"PostgreSQL is not installed (no {POSTGRES_BINARIES}/<version>/bin/postgres)",
            hint="run `hubploy sandbox install` (or `apt-get install postgresql`), or use "
            "`--database sqlite`",
        )
    return found[-1]


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the server's user: as itself, or (as root) as ``postgres`` through setpriv, which
    execs the program (no process in between)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups", "--", *argv]


def _owner() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise HubployError(
            f"there is no {SERVER_USER!r} user to run PostgreSQL as",
            hint="install Debian's postgresql package (`hubploy sandbox install`)",
        ) from None
    return entry.pw_uid, entry.pw_gid


def _password(files: PostgresFiles) -> str:
    """The server's password, generated once and kept 0600."""
    if files.password_file.is_file():
        value = files.password_file.read_text().strip()
    else:
        files.home.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(24)
        fd = os.open(files.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
    register_secret(value)
    return value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port(files: PostgresFiles) -> int:
    """The server's port on 127.0.0.1: chosen once (a free one), then kept."""
    try:
        return int(json.loads(files.settings_file.read_text())["port"])
    except (OSError, ValueError, KeyError):
        port = _free_port()
        files.settings_file.write_text(json.dumps({"port": port}) + "\n")
        return port


def _initdb(files: PostgresFiles, password: str, env: Mapping[str, str]) -> None:
    """Create the cluster unless its data dir has one: superuser ``prefect`` with the password (from a
    0600 file that exists only while initdb runs, never on a command line), scram-sha-256 for TCP clients."""
    if (files.data / "PG_VERSION").is_file():
        return
    uid, gid = _owner()
    if os.geteuid() == 0:
        ROOT_DATA_DIRS.mkdir(parents=True, exist_ok=True)
        os.chown(ROOT_DATA_DIRS, uid, gid)
        ROOT_DATA_DIRS.chmod(0o700)
        if not files.link.is_symlink():
            files.link.symlink_to(files.data.parent)
    shutil.rmtree(files.data, ignore_errors=True)  # an interrupted initdb's leftovers
    files.data.mkdir(parents=True)
    for path in (files.data.parent, files.data):
        os.chown(path, uid, gid)
        path.chmod(0o700)
    pwfile = files.data.parent / "initdb-password"  # in the server user's 0700 dir, for initdb only
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    os.chown(pwfile, uid, gid)
    try:
        run(
            _as_server_user(
                [
                    str(binaries() / "initdb"),
                    "-D",
                    str(files.data),
                    "-U",
                    ROLE,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            env=env,
            cwd=files.data,
            timeout=300,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _argv(files: PostgresFiles, port: int, settings: Mapping[str, str]) -> list[str]:
    options = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": "", **settings}
    flags = [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]
    return _as_server_user([str(binaries() / "postgres"), "-D", str(files.data), *flags])


def _client_env(server: PostgresServer) -> dict[str, str]:
    return child_env(
        {
            "PGPASSWORD": server.password,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(server.port),
            "PGUSER": ROLE,
            "PGCONNECT_TIMEOUT": "3",
        }
    )


def _accepts(server: PostgresServer) -> bool:
    return (
        run(
            [str(binaries() / "pg_isready"), "-q", "-d", "postgres"],
            env=_client_env(server),
            check=False,
            timeout=10,
        ).returncode
        == 0
    )


def _ensure_database(server: PostgresServer) -> None:
    env = _client_env(server)
    found = run(
        [
            str(binaries() / "psql"),
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
        ],
        env=env,
        timeout=30,
    ).stdout
    if found.strip() != "1":
        run([str(binaries() / "createdb"), DATABASE], env=env, timeout=60)


def start(
    files: PostgresFiles, *, say: Say = print, settings: Mapping[str, str] | None = None
) -> tuple[PostgresServer, bool]:
    """Initialise the cluster once, start the server unless it runs, wait until it accepts connections
    and has the Prefect database. Returns the server and whether this call started it. ``settings`` are
    extra server settings (``-c key=value``)."""
    password = _password(files)
    server = PostgresServer(_port(files), password)
    env = child_env()
    _initdb(files, password, env)
    started = read_pid(files.pid_file) is None
    if started:
        spawn(
            _argv(files, server.port, settings or {}),
            pid_file=files.pid_file,
            log=files.log,
            env=env,
            cwd=files.data,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not _accepts(server):
        if read_pid(files.pid_file) is None:
            log = files.log.read_text(errors="replace").strip() if files.log.is_file() else ""
            last = log.splitlines()[-1] if log else "no output"
            raise HubployError(f"PostgreSQL exited: {last}", hint=f"see {files.log}")
        if time.monotonic() > deadline:
            raise HubployError(
                f"PostgreSQL did not accept connections in {START_TIMEOUT:.0f} s", hint=f"see {files.log}"
            )
        time.sleep(0.2)
    _ensure_database(server)
    say(
        f"postgres: {'started' if started else 'already running'} on 127.0.0.1:{server.port} "
        f"(pid {read_pid(files.pid_file)}, data {files.data})"
    )
    return server, started


def stop(files: PostgresFiles) -> bool:
    """Stop the server (a fast shutdown: clients are disconnected, the data is checkpointed and kept);
    True if it was running."""
    if read_pid(files.pid_file) is None:
        return False
    argv = [str(binaries() / "pg_ctl"), "stop", "-D", str(files.data), "-m", "fast", "-w", "-t", "60"]
    result = run(_as_server_user(argv), env=child_env(), cwd=files.data, check=False, timeout=90)
    if result.returncode != 0:
        stop_process(files.pid_file, timeout=30)
    files.pid_file.unlink(missing_ok=True)
    return True


def remove(files: PostgresFiles) -> None:
    """Stop the server and delete its data, password and settings (throw-away servers: tests, benchmarks)."""
    stop(files)
    shutil.rmtree(files.data.parent if os.geteuid() == 0 else files.data, ignore_errors=True)
    for path in (files.link, files.password_file, files.settings_file):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
