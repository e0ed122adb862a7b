"""Reporting back to GitHub: the exact requests, checked against a local HTTP stand-in for the API."""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterator

import pytest
from helpers.github_api import FakeGitHub, Recorded, fake_github
from prefect import flow
from prefect_github import GitHubCredentials

from flows.tasks.github_status import Comment, CommentAction, report_status, upsert_pr_comment
from hubploy.errors import CredentialsError, HubployError

pytestmark = pytest.mark.prefect

TOKEN = "ghp_" + secrets.token_hex(18)
BLOCK = "hubploy-test-github"
SHA = "a" * 40


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with fake_github() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def credentials(prefect_api: str) -> str:
    GitHubCredentials(token=TOKEN).save(BLOCK, overwrite=True)
    return BLOCK


def assert_api_headers(request: Recorded) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["content-type"] == "application/json"


def test_commit_status(github: FakeGitHub, credentials: str) -> None:
    report_status(
        credentials,
        "org/deploy",
        SHA,
        "pending",
        "hubploy/lifecycle",
        "deploying to staging",
        "http://127.0.0.1:4200/flow-runs/flow-run/1",
        api_url=github.url,
    )
    [request] = github.requests
    assert (request.method, request.path) == ("POST", f"/repos/org/deploy/statuses/{SHA}")
    assert_api_headers(request)
    assert request.body == {
        "state": "pending",
        "context": "hubploy/lifecycle",
        "description": "deploying to staging",
        "target_url": "http://127.0.0.1:4200/flow-runs/flow-run/1",
    }


def test_long_description_is_cut_to_140(github: FakeGitHub, credentials: str) -> None:
    report_status(
        credentials,
        "org/deploy",
        SHA,
        "failure",
        "hubploy/pr-validation",
        "x" * 500,
        "http://ui/run",
        api_url=github.url + "/",
    )
    description = github.requests[0].body["description"]
    assert len(description) == 140 and description.endswith("…")


def test_target_url_defaults_to_the_current_flow_run(
    github: FakeGitHub, credentials: str, prefect_api: str
) -> None:
    @flow
    def reporting() -> str:
        from prefect.runtime import flow_run

        report_status(
            credentials, "org/deploy", SHA, "success", "hubploy/lifecycle", "done", api_url=github.url
        )
        return flow_run.id

    run_id = reporting()
    assert github.requests[0].body["target_url"].endswith(f"/flow-runs/flow-run/{run_id}")
    assert github.requests[0].body["target_url"].startswith(prefect_api.removesuffix("/api"))


def test_pr_comment_with_the_token_of_a_block(github: FakeGitHub, credentials: str) -> None:
    body = "<!-- m -->\n### hubploy plan\n\n| hub | env |\n|---|---|\n| physics | staging |"
    posted = upsert_pr_comment(credentials, "org/deploy", 12, body, marker="<!-- m -->", api_url=github.url)
    edited = upsert_pr_comment(
        credentials, "org/deploy", 12, body + "\nagain", marker="<!-- m -->", api_url=github.url
    )
    assert posted is not None and edited == Comment(posted.id, CommentAction.updated)
    assert github.calls() == [
        ("GET", "/repos/org/deploy/issues/12/comments"),
        ("POST", "/repos/org/deploy/issues/12/comments"),
        ("GET", "/repos/org/deploy/issues/12/comments"),
        ("PATCH", f"/repos/org/deploy/issues/comments/{posted.id}"),
    ]
    assert_api_headers(github.requests[1])
    assert github.requests[1].body == {"body": body}
    assert github.pr_comments(12) == [body + "\nagain"]


def test_no_credentials_block_means_no_requests(github: FakeGitHub) -> None:
    report_status(
        None, "org/deploy", SHA, "success", "hubploy/lifecycle", "done", "http://ui", api_url=github.url
    )
    assert upsert_pr_comment(None, "org/deploy", 1, "hi", marker="m", api_url=github.url) is None
    assert github.requests == []


@pytest.mark.parametrize(
    "status,error",
    [(401, CredentialsError), (403, CredentialsError), (422, HubployError), (502, HubployError)],
)
def test_errors_are_clear_and_never_show_the_token(
    github: FakeGitHub,
    credentials: str,
    status: int,
    error: type[HubployError],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    github.answers[f"/repos/org/deploy/statuses/{SHA}"] = (status, {"message": "Bad credentials"})
    with pytest.raises(error) as info:
        report_status(
            credentials, "org/deploy", SHA, "error", "hubploy/lifecycle", "x", "http://ui", api_url=github.url
        )
    assert str(info.value).startswith(
        f"GitHub answered {status} to POST /repos/org/deploy/statuses/{SHA}: Bad credentials"
    )
    shown = str(info.value) + "".join(traceback.format_exception(info.value)) + caplog.text
    assert TOKEN not in shown


def test_unreachable_api_and_missing_block(credentials: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubployError, match="cannot reach GitHub") as info:
        upsert_pr_comment(credentials, "org/deploy", 1, "hi", marker="m", api_url="http://127.0.0.1:1")
    assert TOKEN not in "".join(traceback.format_exception(info.value)) + caplog.text
    with pytest.raises(CredentialsError, match="no GitHubCredentials block named 'nope'"):
        upsert_pr_comment("nope", "org/deploy", 1, "hi", marker="m", api_url="http://127.0.0.1:1")


def test_invalid_state_is_refused(credentials: str) -> None:
    with pytest.raises(ValueError, match="invalid commit status state"):
        report_status(
            credentials,
            "org/deploy",
            SHA,
            "done",  # type: ignore[arg-type]
            "hubploy/x",
            "x",
            "http://ui",
        )
