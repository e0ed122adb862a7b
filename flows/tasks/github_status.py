"""Reporting back to GitHub: commit statuses and PR comments, with a prefect-github ``GitHubCredentials``
block.

prefect-github 0.4.4's ``GitHubCredentials.get_client()`` is a GraphQL endpoint with a fixed URL
(``https://api.github.com/graphql``), and commit statuses and issue comments are REST calls; so this
module takes the token from the block (``GitHubCredentials.token``) and calls the REST API with httpx.
``api_url`` is the REST base: ``https://api.github.com``, ``https://HOST/api/v3`` for GitHub
Enterprise, or a local stand-in in tests. :func:`report_status` and :func:`upsert_pr_comment` do
nothing when ``credentials_block`` is None, and raise :class:`~hubploy.errors.HubployError` on failure
(reporting is the caller's side business: flows should log it and carry on).

A pull request has one hubploy comment, edited on every push: it is found again among the pull
request's comments (all pages) by the marker its body starts with.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import httpx

from hubploy.errors import CredentialsError, HubployError
from hubploy.runner import register_secret

log = logging.getLogger("hubploy.github")

DEFAULT_API_URL = "https://api.github.com"
StatusState = Literal["pending", "success", "failure", "error"]
MAX_DESCRIPTION = 140
MAX_COMMENT = 65536
TIMEOUT = 30
PAGE_SIZE = 100  # comments per page, GitHub's most
MAX_PAGES = 50


@dataclass(frozen=True)
class GitHubApi:
    """GitHub's REST API at ``url`` (the REST base) with ``token``."""

    url: str
    token: str = field(repr=False)
    source: str = "the token"  # where the token comes from, for the hint of a 401/403

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> httpx.Response:
        """``path`` under the API (or a full URL on the API's own host, as GitHub's ``Link`` gives); a
        404 is answered as it is when ``missing_ok``, any other failure raises HubployError
        (CredentialsError for 401/403)."""
        url = path if "://" in path else self.url.rstrip("/") + path
        if httpx.URL(url).netloc != httpx.URL(self.url).netloc:
            raise HubployError(
                f"GitHub sent hubploy to another host ({httpx.URL(url).host}); not following "
                "it with the token"
            )
        shown = httpx.URL(url).raw_path.decode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "hubploy",
        }
        try:
            response = httpx.request(method, url, json=body, headers=headers, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            raise HubployError(f"cannot reach GitHub at {self.url}: {type(exc).__name__}: {exc}") from None
        if response.is_success:
            return response
        if missing_ok and response.status_code == 404:
            return response
        try:
            message = str(response.json().get("message", ""))
        except (ValueError, AttributeError):
            message = ""
        text = f"GitHub answered {response.status_code} to {method} {shown}"
        text += f": {message}" if message else ""
        if response.status_code in (401, 403):
            raise CredentialsError(
                text,
                hint=f"check {self.source}; it needs repo:status (statuses) and "
                "pull request write access (comments)",
            )
        raise HubployError(text)


def report_status(
    credentials_block: str | None,
    repo_full_name: str,
    sha: str,
    state: StatusState,
    context: str,
    description: str,
    target_url: str | None = None,
    *,
    api_url: str = DEFAULT_API_URL,
) -> None:
    """Set a commit status (``context`` like ``hubploy/lifecycle``); ``target_url`` defaults to the current
    flow run's page in the Prefect UI."""
    if credentials_block is None:
        return
    if state not in get_args(StatusState):
        raise ValueError(f"invalid commit status state {state!r}")
    if target_url is None:
        from prefect.runtime import flow_run

        target_url = flow_run.ui_url
    body: dict[str, Any] = {
        "state": state,
        "context": context,
        "description": _truncate(description, MAX_DESCRIPTION),
    }
    if target_url:
        body["target_url"] = target_url
    _api(credentials_block, api_url).request("POST", f"/repos/{repo_full_name}/statuses/{sha}", body)
    log.info("GitHub status %s %s on %s@%s", context, state, repo_full_name, sha[:12])


class CommentAction(enum.StrEnum):
    created = "created"
    updated = "updated"


@dataclass(frozen=True)
class Comment:
    id: int
    action: CommentAction


def upsert_pr_comment(
    credentials_block: str | None,
    repo_full_name: str,
    pr_number: int,
    body: str,
    *,
    marker: str,
    head_sha: str | None = None,
    api_url: str = DEFAULT_API_URL,
) -> Comment | None:
    """Keep one comment per pull request: edit the one whose body starts with ``marker`` (markdown
    ``body``, cut to GitHub's limit), or post it when there is none. With ``head_sha`` (the commit ``body``
    is about), only while that commit is still the pull request's head. None without a block, or when the
    pull request has moved on."""
    if credentials_block is None:
        return None
    api = _api(credentials_block, api_url)
    return upsert_comment(api, repo_full_name, pr_number, body, marker=marker, head_sha=head_sha)


def upsert_comment(
    api: GitHubApi,
    repo_full_name: str,
    pr_number: int,
    body: str,
    *,
    marker: str,
    head_sha: str | None = None,
) -> Comment | None:
    """:func:`upsert_pr_comment` with the API at hand. A comment deleted since it was found is posted anew.
    A validation that ends after the one of a newer push leaves that one's comment alone."""
    if head_sha is not None:
        head = pull_request_head(api, repo_full_name, pr_number)
        if head != head_sha:
            log.info(
                "%s#%d is at %s now, not %s: its comment is left to that commit's validation",
                repo_full_name,
                pr_number,
                head[:12],
                head_sha[:12],
            )
            return None
    body = _truncate(body, MAX_COMMENT)
    found = find_comment(api, repo_full_name, pr_number, marker)
    if found is not None:
        edited = api.request(
            "PATCH", f"/repos/{repo_full_name}/issues/comments/{found}", {"body": body}, missing_ok=True
        )
        if edited.status_code != 404:
            log.info("GitHub comment %d on %s#%d edited", found, repo_full_name, pr_number)
            return Comment(found, CommentAction.updated)
        log.info(
            "GitHub comment %d on %s#%d was deleted meanwhile: posting a new one",
            found,
            repo_full_name,
            pr_number,
        )
    posted = api.request("POST", f"/repos/{repo_full_name}/issues/{pr_number}/comments", {"body": body})
    comment = Comment(_comment_id(posted), CommentAction.created)
    log.info("GitHub comment %d on %s#%d posted", comment.id, repo_full_name, pr_number)
    return comment


def pull_request_head(api: GitHubApi, repo_full_name: str, pr_number: int) -> str:
    """The commit at the head of the pull request now."""
    path = f"/repos/{repo_full_name}/pulls/{pr_number}"
    answer = api.request("GET", path).json()
    head = answer.get("head") if isinstance(answer, dict) else None
    sha = head.get("sha") if isinstance(head, dict) else None
    if not isinstance(sha, str) or not sha:
        raise HubployError(f"GitHub answered GET {path} without the pull request's head commit")
    return sha


def find_comment(api: GitHubApi, repo_full_name: str, pr_number: int, marker: str) -> int | None:
    """The id of the pull request's first comment whose body starts with ``marker``, following GitHub's
    pages (``Link: <...>; rel="next"``)."""
    url: str | None = f"/repos/{repo_full_name}/issues/{pr_number}/comments?per_page={PAGE_SIZE}"
    for _ in range(MAX_PAGES):
        if url is None:
            return None
        response = api.request("GET", url)
        page = response.json()
        if not isinstance(page, list):
            raise HubployError(
                f"GitHub answered GET {url} with {type(page).__name__}, not a list of comments"
            )
        for comment in page:
            if isinstance(comment, dict) and str(comment.get("body") or "").startswith(marker):
                return _comment_id(comment)
        url = response.links.get("next", {}).get("url")
    raise HubployError(
        f"{repo_full_name}#{pr_number} has more than {MAX_PAGES * PAGE_SIZE} comments; "
        "not looking further for hubploy's"
    )


def _comment_id(answer: httpx.Response | dict[str, Any]) -> int:
    data = answer.json() if isinstance(answer, httpx.Response) else answer
    comment_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(comment_id, int):
        raise HubployError("GitHub answered with a comment without an id")
    return comment_id


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _api(credentials_block: str, api_url: str) -> GitHubApi:
    return GitHubApi(
        api_url,
        _token(credentials_block),
        source=f"the token of GitHubCredentials block {credentials_block!r}",
    )


def _token(credentials_block: str) -> str:
    from prefect_github import GitHubCredentials

    try:
        credentials = GitHubCredentials.load(credentials_block)
    except ValueError as exc:
        raise CredentialsError(
            f"no GitHubCredentials block named {credentials_block!r}",
            hint="create one in the Prefect UI or with GitHubCredentials(token=...).save(name)",
        ) from exc
    if credentials.token is None or not credentials.token.get_secret_value():
        raise CredentialsError(f"GitHubCredentials block {credentials_block!r} has no token")
    token = credentials.token.get_secret_value()
    register_secret(token)
    return token
