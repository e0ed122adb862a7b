"""The approval as a person does it (issue 15), in headless Chromium against the real `hubploy up` stack
with basic auth: `hubploy demo` prints where to log in and the run's link; the run page alone answers
"Authentication failed"; the printed log-in link, with the auth string from the printed file, leads to
the suspended run; its form shows the hub table, the commits and the prod diff, with reject as the
default. One test approves (the run reaches prod), one rejects with a reason (prod untouched).
Screenshots of the form are kept under test-artifacts/<test>/ at the repository root."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import CHROMIUM_ARGS, submit_resume_form
from helpers.stack import Demo, UpStack, demo_hub_lock

pytestmark = [pytest.mark.browser, pytest.mark.sandbox, pytest.mark.prefect]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    path = PROJECT_ROOT / "test-artifacts" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots in {path}")
    return path


def prod_revisions(sandbox) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    argv = [sandbox.env["HELM_EXECUTABLE"], "history", "minimal-prod", "-n", "minimal-prod", "-o", "json"]
    out = subprocess.run(argv, env=sandbox.env, capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else []


def git_origin(stack: UpStack, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(stack.demo_origin), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def open_the_form(page, stack: UpStack, demo: Demo, shots: Path):  # type: ignore[no-untyped-def]
    """The printed links, as a person follows them: the run page first (not logged in), then the log-in
    link with the auth string from the printed file; returns the Resume dialog of the suspended run."""
    page.goto(demo.run_url)
    page.get_by_text("Authentication failed.").first.wait_for(timeout=30_000)
    assert page.get_by_role("button", name="Resume").count() == 0
    auth_file = re.search(r"with the auth string \(user:password\) in (\S+?),?\n", demo.output).group(1)
    assert Path(auth_file) == stack.auth_file
    page.goto(demo.login_url)
    page.get_by_placeholder("admin:pass").fill(Path(auth_file).read_text().strip())
    page.get_by_role("button", name="Login").click()
    resume = page.get_by_role("button", name="Resume")
    resume.wait_for(timeout=60_000)  # the log-in page sent the browser on to the run
    assert page.get_by_text("Suspended").first.is_visible()
    page.wait_for_url(f"**{demo.run_url.removeprefix(stack.ui)}", timeout=30_000)
    resume.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("What prod will change").wait_for(timeout=30_000)
    return dialog


def check_the_form(dialog, demo: Demo, sha: str) -> None:  # type: ignore[no-untyped-def]
    text = dialog.inner_text()
    assert f"Promote {sha[:12]} to prod?" in text
    assert re.search(r"hub\s+staging\s+revision\s+JupyterHub\s+images", text), text[:2000]  # the hub table
    assert re.search(r"minimal\s+deployed\s+\d+\s+5\.5\.0\s+localhost:5000/", text), text[:2000]
    assert re.search(rf"Commits [0-9a-f]{{12}}\.\.{sha[:12]}", text) and "demo: announcement of" in text
    assert "+++ this commit" in text  # the rendered diff of what prod will change
    decision = dialog.locator(".p-select-button__control")
    assert decision.inner_text().strip() == "reject", "the form's default decision is reject"
    assert dialog.locator("textarea").nth(0).input_value() == sha  # the commit the form is for


def choose(page, dialog, value: str) -> None:  # type: ignore[no-untyped-def]
    decision = dialog.locator(".p-select-button__control")
    decision.click()
    for _ in range(4):  # the select is keyboard driven: step until it shows the value
        if decision.inner_text().strip() == value:
            break
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
    assert decision.inner_text().strip() == value


def submit(
    page,
    dialog,
    stack: UpStack,
    demo: Demo,  # type: ignore[no-untyped-def]
    reason: str,
    approver: str,
    shots: Path,
) -> None:
    dialog.locator("textarea").nth(1).fill(reason)
    dialog.locator("textarea").nth(2).fill(approver)
    dialog.get_by_text("What prod will change").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "approval-form-diff.png"))
    dialog.get_by_role("button", name="Submit").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "approval-form.png"))
    submit_resume_form(page, dialog)  # returns once the server has accepted the input and resumed the run
    state = stack.flow_run(demo.run_id)["state"]
    assert state["type"] != "PAUSED", f"the run still waits after Submit was accepted: {state}"


def decide_in_the_browser(
    stack: UpStack, demo: Demo, decision: str, reason: str, approver: str, shots: Path
) -> None:
    from playwright.sync_api import sync_playwright

    sha = git_origin(stack, "rev-parse", "staging")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)  # a busy 2-core machine renders the run page slowly
            dialog = open_the_form(page, stack, demo, shots)
            check_the_form(dialog, demo, sha)
            if decision != "reject":
                choose(page, dialog, decision)
            submit(page, dialog, stack, demo, reason, approver, shots)
        finally:
            browser.close()


def test_approve_in_the_browser_after_logging_in_then_prod_is_deployed(  # type: ignore[no-untyped-def]
    up_stack: UpStack, sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = artifacts_dir(request)
    with demo_hub_lock(), up_stack.demo(tmp_path) as demo:
        sha = git_origin(up_stack, "rev-parse", "staging")
        decide_in_the_browser(
            up_stack, demo, "approve", "checked staging in the browser", "erin@example.org", shots
        )
        state = up_stack.wait_for_final(demo.run_id)
        assert state["type"] == "COMPLETED", state
        assert state["message"].startswith(f"prod runs {sha[:12]}")
        assert git_origin(up_stack, "rev-list", "--parents", "-n", "1", "prod").split()[2] == sha
        message = git_origin(up_stack, "log", "-1", "--format=%B", "prod")
        assert "Approved by erin@example.org: checked staging in the browser" in message
        assert prod_revisions(sandbox)[-1]["status"] == "deployed"
    assert (shots / "approval-form.png").stat().st_size > 10_000


def test_reject_in_the_browser_with_a_reason_leaves_prod_untouched(  # type: ignore[no-untyped-def]
    up_stack: UpStack, sandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = artifacts_dir(request)
    with demo_hub_lock(), up_stack.demo(tmp_path) as demo:
        prod_before, revisions_before = git_origin(up_stack, "rev-parse", "prod"), prod_revisions(sandbox)
        decide_in_the_browser(up_stack, demo, "reject", "not during the exam week", "frank", shots)
        state = up_stack.wait_for_final(demo.run_id)
        assert (state["type"], state["name"]) == ("CANCELLED", "Rejected"), state
        assert state["message"] == "rejected by frank: not during the exam week; prod untouched"
        assert git_origin(up_stack, "rev-parse", "prod") == prod_before
        assert prod_revisions(sandbox) == revisions_before
    assert (shots / "approval-form.png").stat().st_size > 10_000
