"""The one way hubploy runs external programs (git, helm, kubectl, sops, buildah, gcloud, aws, az).

Rules: argv lists only (never a shell), an explicit ``env`` on every call, output captured, and
secret values redacted from everything logged or raised. Credentials are passed to children through
``env`` or files, never through ``os.environ`` of this process (tasks run in threads).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hubploy.errors import CommandError, CommandNotFoundError, CommandTimeoutError

log = logging.getLogger("hubploy.run")

REDACTED = "********"
_MIN_SECRET_LEN = 4
_MIN_LINE_LEN = 16  # a line of a multi-line secret long enough to be part of it (not a blank or a brace)
_known_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so that every later log line and error hides it. A value of several lines
    (a PEM key) is also hidden as JSON writes it (a key file a cloud CLI echoes) and line by line (the
    lines of its body)."""
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    forms = {value}
    if "\n" in value:
        forms.add(json.dumps(value)[1:-1])
        forms.update(
            line.strip()
            for line in value.splitlines()
            if len(line.strip()) >= _MIN_LINE_LEN and not line.startswith("-----")
        )
    with _secrets_lock:
        _known_secrets.update(forms)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """Replace every known secret (and every value in ``extra``) in ``text``."""
    with _secrets_lock:
        values = set(_known_secrets)
    values.update(v for v in extra if v and len(v) >= _MIN_SECRET_LEN)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def child_env(overrides: Mapping[str, str] | None = None, *, drop: Iterable[str] = ()) -> dict[str, str]:
    """A copy of this process's environment for a child, with ``overrides`` applied.

    This is how credentials reach a child: through its own env, never through ``os.environ``.
    """
    env = dict(os.environ)
    for key in drop:
        env.pop(key, None)
    if overrides:
        env.update(overrides)
    env.setdefault("SOPS_DISABLE_VERSION_CHECK", "1")
    return env


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None = None,
    secrets: Iterable[str] = (),
    check: bool = True,
    timeout: float | None = None,
    input: str | None = None,
    on_line: Callable[[str], None] | None = None,
    hint: str | None = None,
) -> CommandResult:
    """Run ``argv`` and return its captured output.

    ``secrets`` are redacted (as are all registered secrets) from the logged command and from a
    raised :class:`CommandError`. ``on_line`` receives each output line as it arrives (progress of
    long builds and deploys); output is still captured. Raises ``CommandError`` on a non-zero exit
    when ``check``, ``CommandNotFoundError`` when the program is missing, and
    ``CommandTimeoutError`` after ``timeout`` seconds.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    secrets = [s for s in secrets if s]
    program = args[0]
    if os.sep not in program and shutil.which(program, path=env.get("PATH")) is None:
        raise CommandNotFoundError(program)
    shown = [redact(a, secrets) for a in args]
    log.info("$ %s", " ".join(shown))
    start = time.monotonic()
    try:
        if on_line is None:
            proc = subprocess.run(
                args,
                env=dict(env),
                cwd=cwd,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        else:
            stdout, stderr, code = _run_streaming(args, env, cwd, input, timeout, on_line, secrets)
    except FileNotFoundError as exc:
        if cwd is not None and not Path(cwd).is_dir():
            raise CommandError(shown, 127, f"working directory {cwd} does not exist") from None
        raise CommandNotFoundError(program) from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandTimeoutError(
            shown, -9, redact(_tail(out) + f"\ntimed out after {timeout} s", secrets), hint=hint
        ) from None
    duration = time.monotonic() - start
    log.debug("exit %s after %.2f s: %s", code, duration, shown[0])
    if check and code != 0:
        raise CommandError(shown, code, redact(_tail(stderr or stdout), secrets), hint=hint)
    return CommandResult(shown, code, stdout, stderr, duration)


def _run_streaming(
    args: list[str],
    env: Mapping[str, str],
    cwd: str | os.PathLike[str] | None,
    input: str | None,
    timeout: float | None,
    on_line: Callable[[str], None],
    secrets: list[str],
) -> tuple[str, str, int]:
    proc = subprocess.Popen(
        args,
        env=dict(env),
        cwd=cwd,
        text=True,
        stdin=subprocess.PIPE if input else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, key: str) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            chunks[key].append(line)
            on_line(redact(line.rstrip("\n"), secrets))

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True),
    ]
    for t in threads:
        t.start()
    if input:
        assert proc.stdin is not None
        proc.stdin.write(input)
        proc.stdin.close()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise subprocess.TimeoutExpired(args, timeout or 0, stderr="".join(chunks["err"])) from None
    for t in threads:
        t.join()
    return "".join(chunks["out"]), "".join(chunks["err"]), code
