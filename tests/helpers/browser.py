"""Driving the Prefect UI in headless Chromium: the browser's flags, and the approval form's Submit as a
person uses it."""

from __future__ import annotations

from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SUBMIT_ATTEMPTS = 5


def is_resume_request(response: Any) -> bool:
    """The UI's POST that resumes a paused flow run with the form's input."""
    return response.request.method == "POST" and response.url.endswith("/resume")


def submit_resume_form(page: Any, dialog: Any) -> int:
    """Click the Resume form's Submit and wait for the server's answer (closing the browser earlier can
    cancel the request). A 503 is the server saying "busy, try again" (SQLite under load); the UI shows an
    error and keeps the form open, and a person clicks Submit again: so does this, up to SUBMIT_ATTEMPTS
    times. Returns how many clicks it took; raises on any other failure, and when the form stays open."""
    submit = dialog.get_by_role("button", name="Submit")
    for attempt in range(1, SUBMIT_ATTEMPTS + 1):
        with page.expect_response(is_resume_request, timeout=120_000) as answer:
            submit.click()
        response = answer.value
        if response.ok:
            result = response.json()
            if result.get("status") != "ACCEPT":
                raise AssertionError(f"the server did not accept the form's input: {result}")
            dialog.wait_for(state="hidden", timeout=60_000)  # the UI closes the form once accepted
            return attempt
        if response.status != 503:
            raise AssertionError(f"the UI's resume request failed: {response.status} {response.text()}")
    raise AssertionError(f"the server answered 503 to {SUBMIT_ATTEMPTS} submits of the form")
