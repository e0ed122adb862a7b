"""One hubploy comment per pull request, edited in place: the exact GitHub API calls, against a real HTTP
stand-in on loopback that keeps comments as GitHub does (no Prefect server: the token is given)."""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterator

import pytest
from helpers.github_api import FakeGitHub, fake_github

from flows.tasks.github_status import CommentAction, GitHubApi, upsert_comment
from hubploy.errors import CredentialsError, HubployError

TOKEN = "ghp_" + secrets.token_hex(18)
MARKER = "<!-- hubploy:test -->"
REPO, PR = "org/deploy", 7
LIST = f"/repos/{REPO}/issues/{PR}/comments"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with fake_github() as stand_in:
        yield stand_in


def _upsert(github: FakeGitHub, text: str):  # type: ignore[no-untyped-def]
    return upsert_comment(GitHubApi(github.url, TOKEN), REPO, PR, f"{MARKER}\n{text}", marker=MARKER)


def test_first_run_posts_and_the_next_edits_the_same_comment(github: FakeGitHub) -> None:
    other = github.add_comment(PR, "LGTM")
    github.add_comment(PR + 1, f"{MARKER}\nanother pull request's")
    first = _upsert(github, "first push")
    assert first.action is CommentAction.created
    assert github.calls() == [("GET", LIST), ("POST", LIST)]
    github.requests.clear()
    second = _upsert(github, "second push")
    assert (second.action, second.id) == (CommentAction.updated, first.id)
    assert github.calls() == [("GET", LIST), ("PATCH", f"/repos/{REPO}/issues/comments/{first.id}")]
    assert github.pr_comments(PR) == ["LGTM", f"{MARKER}\nsecond push"]
    assert github.comments[other]["body"] == "LGTM"
    for request in github.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Accept"] == "application/vnd.github+json"
        assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert github.requests[1].body == {"body": f"{MARKER}\nsecond push"}


def test_a_quoted_marker_is_not_hubploys_comment(github: FakeGitHub) -> None:
    github.add_comment(PR, f"> {MARKER}\n> quoted by a reviewer")
    assert _upsert(github, "mine").action is CommentAction.created
    assert len(github.pr_comments(PR)) == 2


def test_a_comment_deleted_after_it_was_found_is_posted_again(github: FakeGitHub) -> None:
    first = _upsert(github, "first")
    github.answers[f"/repos/{REPO}/issues/comments/{first.id}"] = (404, {"message": "Not Found"})
    github.requests.clear()
    again = _upsert(github, "after the deletion")
    assert again.action is CommentAction.created and again.id != first.id
    assert github.calls() == [
        ("GET", LIST),
        ("PATCH", f"/repos/{REPO}/issues/comments/{first.id}"),
        ("POST", LIST),
    ]


def test_pages_are_followed_to_find_the_comment(github: FakeGitHub) -> None:
    for n in range(250):
        github.add_comment(PR, f"chatter {n}")
    ours = github.add_comment(PR, f"{MARKER}\nold")
    github.requests.clear()
    result = _upsert(github, "new")
    assert (result.action, result.id) == (CommentAction.updated, ours)
    gets = [r.path for r in github.requests if r.method == "GET"]
    assert gets == [f"{LIST}?per_page=100", f"{LIST}?per_page=100&page=2", f"{LIST}?per_page=100&page=3"]
    assert github.comments[ours]["body"] == f"{MARKER}\nnew"


def test_a_next_page_on_another_host_is_not_followed_with_the_token(github: FakeGitHub) -> None:
    github.answers[LIST] = (200, [])
    original = github.answer

    def elsewhere(method, raw_path, body, host):  # type: ignore[no-untyped-def]
        status, answer, _ = original(method, raw_path, body, host)
        return status, answer, {"Link": '<http://198.51.100.7/steal?page=2>; rel="next"'}

    github.answer = elsewhere  # type: ignore[method-assign]
    with pytest.raises(HubployError, match=r"another host \(198\.51\.100\.7\)"):
        _upsert(github, "x")
    assert github.calls() == [("GET", LIST)]


def test_the_body_is_cut_to_githubs_limit(github: FakeGitHub) -> None:
    _upsert(github, "x" * 70_000)
    [body] = github.pr_comments(PR)
    assert len(body) == 65536 and body.startswith(MARKER) and body.endswith("…")


@pytest.mark.parametrize(
    "status,error", [(401, CredentialsError), (403, CredentialsError), (500, HubployError)]
)
def test_errors_say_which_call_failed_and_never_show_the_token(
    github: FakeGitHub, status: int, error: type[HubployError], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    github.answers[LIST] = (status, {"message": "Resource not accessible by integration"})
    with pytest.raises(error) as info:
        _upsert(github, "x")
    assert str(info.value).startswith(
        f"GitHub answered {status} to GET {LIST}?per_page=100: Resource not accessible by integration"
    )
    assert TOKEN not in str(info.value) + "".join(traceback.format_exception(info.value)) + caplog.text
    assert github.calls("POST", "PATCH") == []


def test_an_answer_that_is_not_a_list_of_comments_is_an_error(github: FakeGitHub) -> None:
    github.answers[LIST] = (200, {"message": "odd"})
    with pytest.raises(HubployError, match="not a list of comments"):
        _upsert(github, "x")


def test_a_validation_that_ends_after_a_newer_pushs_leaves_that_comment_alone(github: FakeGitHub) -> None:
    api, older, newer = GitHubApi(github.url, TOKEN), "a" * 40, "b" * 40
    github.heads[PR] = newer
    posted = upsert_comment(api, REPO, PR, f"{MARKER}\nfor b", marker=MARKER, head_sha=newer)
    assert posted is not None and posted.action is CommentAction.created
    github.requests.clear()
    assert upsert_comment(api, REPO, PR, f"{MARKER}\nfor a", marker=MARKER, head_sha=older) is None
    assert github.calls() == [("GET", f"/repos/{REPO}/pulls/{PR}")]
    assert github.pr_comments(PR) == [f"{MARKER}\nfor b"]


def test_a_pull_request_without_its_head_commit_is_an_error(github: FakeGitHub) -> None:
    github.answers[f"/repos/{REPO}/pulls/{PR}"] = (200, {"number": PR})
    with pytest.raises(HubployError, match="without the pull request's head commit"):
        upsert_comment(GitHubApi(github.url, TOKEN), REPO, PR, "x", marker=MARKER, head_sha="a" * 40)
    assert github.pr_comments(PR) == []
