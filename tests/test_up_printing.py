"""What `hubploy up` and `hubploy demo` print about logging in (issue 15): the log-in URL (for the demo, one
that leads on to the run) and the file that holds the auth string, never the auth string; the webhook
secret only outside CI. The real commands are driven in tests/test_up.py and
tests/test_approval_browser.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubploy.cli.up_commands import _print_stack, _print_summary
from hubploy.triggers.demo import DemoResult
from hubploy.triggers.stack import Stack, StackPaths

AUTH = "hubploy:Sup3rSecretPassw0rdOfTheServer"
WEBHOOK_SECRET = "f" * 64
RUN_ID = "0f0e0d0c-0b0a-0908-0706-050403020100"


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    paths = StackPaths(tmp_path / "home")
    paths.home.mkdir()
    paths.auth_file.write_text(AUTH + "\n")
    return Stack(
        paths,
        "http://127.0.0.1:4200/api",
        "http://127.0.0.1:4200",
        "http://127.0.0.1:8787/webhook",
        WEBHOOK_SECRET,
        "/repo.git",
        {"PREFECT_API_AUTH_STRING": AUTH},
        ("prefect-server",),
    )


def test_up_says_where_to_log_in_and_shows_no_auth_string(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    _print_stack(stack)
    out = capsys.readouterr().err
    assert (
        f"log in           http://127.0.0.1:4200/login with the auth string (user:password) in "
        f"{stack.paths.auth_file}"
    ) in out
    assert f"webhook secret   {WEBHOOK_SECRET}" in out  # for the person setting up GitHub, at a terminal
    assert AUTH.partition(":")[2] not in out


def test_in_ci_up_prints_no_webhook_secret_either(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    _print_stack(stack)
    out = capsys.readouterr().err
    assert (
        "webhook secret   in the Prefect Secret block hubploy-webhook-secret (not printed: CI is set)" in out
    )
    assert WEBHOOK_SECRET not in out and AUTH.partition(":")[2] not in out


def test_the_demo_summary_logs_in_to_the_run(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    run_page = f"http://127.0.0.1:4200/runs/flow-run/{RUN_ID}"
    result = DemoResult(RUN_ID, "brave-fox", "a" * 40, "Suspended", "", run_page)
    _print_summary(stack, result)
    out = capsys.readouterr().err
    login = out.index(
        f"log in     http://127.0.0.1:4200/login?redirect=/runs/flow-run/{RUN_ID} with the "
        f"auth string (user:password) in {stack.paths.auth_file}"
    )
    assert login < out.index(f"run page   {run_page}")  # log in first, then the link
    assert AUTH.partition(":")[2] not in out
