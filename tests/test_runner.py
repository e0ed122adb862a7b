"""The one command runner: argv only, explicit env, output captured, secrets redacted, typed errors."""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

from hubploy.errors import CommandError, CommandNotFoundError, CommandTimeoutError
from hubploy.runner import REDACTED, child_env, redact, register_secret, run


def test_output_is_captured_and_env_is_explicit() -> None:
    result = run(
        [sys.executable, "-c", "import os; print(os.environ['ONLY_HERE'])"],
        env=child_env({"ONLY_HERE": "child-value"}),
    )
    assert (result.returncode, result.stdout.strip()) == (0, "child-value")
    assert "ONLY_HERE" not in os.environ


def test_shell_syntax_is_never_interpreted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    result = run(["echo", f"; touch {marker}"], env=child_env())
    assert result.stdout.strip() == f"; touch {marker}" and not marker.exists()


def test_failure_raises_typed_error_with_exit_code_and_stderr_tail() -> None:
    script = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(50)]; sys.exit(3)"
    with pytest.raises(CommandError) as info:
        run([sys.executable, "-c", script], env=child_env(), hint="try again")
    err = info.value
    assert err.returncode == 3
    assert err.stderr_tail.splitlines() == [f"line {i}" for i in range(30, 50)]
    assert "exit code 3: line 49" in str(err) and "(hint: try again)" in str(err)


def test_secrets_are_redacted_from_logged_commands_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hubploy.run")
    secret = "s3cr3t-per-call"
    with pytest.raises(CommandError) as info:
        run(
            [sys.executable, "-c", "import sys; print(sys.argv[1], file=sys.stderr); sys.exit(1)", secret],
            env=child_env(),
            secrets=[secret],
        )
    assert secret not in str(info.value) and secret not in " ".join(info.value.argv)
    assert REDACTED in info.value.stderr_tail
    assert secret not in caplog.text and REDACTED in caplog.text


def test_registered_secrets_are_redacted_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hubploy.run")
    register_secret("registered-token-123")
    lines: list[str] = []
    run(
        [sys.executable, "-c", "print('token is registered-token-123')"],
        env=child_env(),
        on_line=lines.append,
    )
    assert lines == [f"token is {REDACTED}"]
    assert redact("x registered-token-123 y") == f"x {REDACTED} y"
    register_secret("abc")  # too short to redact safely: ignored
    assert redact("abc") == "abc"


def test_a_multi_line_secret_is_redacted_as_a_cli_echoes_it_from_a_json_key_file() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + os.urandom(8).hex()
    key = f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"
    register_secret(key)
    as_json = json.dumps({"type": "service_account", "private_key": key})  # the key file gcloud is given
    assert body not in redact(f"ERROR: cannot use {as_json}")
    assert body not in redact(f"line by line: {body}")
    assert redact("-----BEGIN PRIVATE KEY-----") == "-----BEGIN PRIVATE KEY-----"  # the armour is no secret


def test_missing_program_and_timeout() -> None:
    with pytest.raises(CommandNotFoundError, match="no-such-program-xyz: command not found"):
        run(["no-such-program-xyz"], env=child_env())
    with pytest.raises(CommandTimeoutError, match="timed out after 0.5 s"):
        run([sys.executable, "-c", "import time; time.sleep(10)"], env=child_env(), timeout=0.5)
    with pytest.raises(CommandTimeoutError):
        run(
            [sys.executable, "-c", "import time; time.sleep(10)"], env=child_env(), timeout=0.5, on_line=print
        )
