"""Detached processes tracked by PID files: start (through the runner), check, stop."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hubploy.errors import HubployError
from hubploy.runner import run


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (guards against PID reuse), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: not running
        return None
    return int(fields[19])


def command_line(pid: int) -> list[str] | None:
    """The argv that ``pid`` runs, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1]


def runs(pid: int, argv: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether ``pid`` runs ``argv``: the same arguments, and the same program once symlinks are
    resolved (a virtualenv's python and python3 are one program)."""
    running, wanted = command_line(pid), [os.fspath(a) for a in argv]
    if not running:
        return False
    return running[1:] == wanted[1:] and os.path.realpath(running[0]) == os.path.realpath(wanted[0])


def read_pid(pid_file: Path) -> int | None:
    """The PID recorded in ``pid_file`` if that very process still runs, else None."""
    try:
        parts = pid_file.read_text().split()
        pid, started = int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return None
    now = proc_start_time(pid)
    if now is None or (started and now != started):
        return None
    return pid


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    pid_file: Path,
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached (new session, output to ``log``); return its PID."""
    launcher = [sys.executable, "-m", "hubploy.spawn", "--pid-file", str(pid_file), "--log", str(log)]
    if cwd is not None:
        launcher += ["--cwd", str(cwd)]
    run(launcher + ["--", *(os.fspath(a) for a in argv)], env=env, timeout=60)
    pid = read_pid(pid_file)
    if pid is None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise HubployError(
            f"{os.fspath(argv[0])} exited at once: {tail.strip().splitlines()[-1:] or 'no output'}",
            hint=f"see {log}",
        )
    return pid


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def stop(pid_file: Path, *, timeout: float = 10.0, children: bool = False) -> bool:
    """Stop the process group recorded in ``pid_file`` (TERM, then KILL); True if one was running.
    With ``children``, also the sessions its children lead (a Prefect process worker starts each flow-run
    process in a session of its own, which the worker's group signal would miss)."""
    pid = read_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    groups = [pid, *(child_pids(pid) if children else [])]
    for group in groups:
        _signal(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(proc_start_time(group) is None for group in groups):
            return True
        time.sleep(0.1)
    for group in groups:
        _signal(group, signal.SIGKILL)
    return True


def stop_recorded(pid_file: Path, *, must_contain: str) -> bool:
    """Stop a process whose plain PID file another program wrote (e.g. JupyterHub's proxy), if its
    command line still contains ``must_contain`` (so a reused PID is never hit)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if must_contain not in " ".join(command_line(pid) or []) or proc_start_time(pid) is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # spawn() makes each program a session (and group) leader
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
