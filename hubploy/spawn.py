"""Start one long-running program detached from the caller and record its PID.

Run as ``python -m hubploy.spawn --pid-file P --log L [--cwd D] -- ARGV...`` through
:func:`hubploy.runner.run`: it starts ARGV in a new session (so it outlives the CLI), with output
appended to L, writes ``<pid> <starttime>`` to P and exits. The child inherits this process's env.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from hubploy.processes import proc_start_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubploy.spawn")
    parser.add_argument("--pid-file", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--cwd", type=Path)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        parser.error("no command given")
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            command,
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=args.cwd,
            start_new_session=True,
            close_fds=True,
        )
    tmp = args.pid_file.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid} {proc_start_time(proc.pid) or 0}\n")
    os.replace(tmp, args.pid_file)
    print(proc.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
