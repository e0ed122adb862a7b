"""Reporting back to GitHub: commit statuses and PR comments, with a prefect-github ``GitHubCredentials``
block.

prefect-github 0.4.4's ``GitHubCredentials.get_client()`` is a GraphQL endpoint with a fixed URL
(``https://api.github.com/graphql``), and commit statuses and issue comments are REST calls; so this
module takes the token from the block (``GitHubCredentials.token``) and calls the REST API with httpx.
``api_url`` is the REST base: ``https://api.github.com``, ``https://HOST/api/v3`` for GitHub
Enterprise, or a local stand-in in tests. Both functions do nothing when ``credentials_block`` is
None, and raise :class:`~hubploy.errors.HubployError` on failure (reporting is the caller's side
business: flows should log it and carry on).
"""

from __future__ import annotations

import logging
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


def report_status(credentials_block: str | None, repo_full_name: str, sha: str, state: StatusState,
                  context: str, description: str, target_url: str | None = None, *,
                  api_url: str = DEFAULT_API_URL) -> None:
    """Set a commit status (``context`` like ``hubploy/lifecycle``); ``target_url`` defaults to the current
    flow run's page in the Prefect UI."""
    if credentials_block is None:
        return
    if state not in get_args(StatusState):
        raise ValueError(f"invalid commit status state {state!r}")
    if target_url is None:
        from prefect.runtime import flow_run

        target_url = flow_run.ui_url
    body: dict[str, Any] = {"state": state, "context": context,
                            "description": _truncate(description, MAX_DESCRIPTION)}
    if target_url:
        body["target_url"] = target_url
    _post(credentials_block, api_url, f"/repos/{repo_full_name}/statuses/{sha}", body)
    log.info("GitHub status %s %s on %s@%s", context, state, repo_full_name, sha[:12])


def post_pr_comment(credentials_block: str | None, repo_full_name: str, pr_number: int, body: str, *,
                    api_url: str = DEFAULT_API_URL) -> None:
    """Comment on a pull request (markdown ``body``, cut to GitHub's limit)."""
    if credentials_block is None:
        return
    _post(credentials_block, api_url, f"/repos/{repo_full_name}/issues/{pr_number}/comments",
          {"body": _truncate(body, MAX_COMMENT)})
    log.info("GitHub comment on %s#%d", repo_full_name, pr_number)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _token(credentials_block: str) -> str:
    from prefect_github import GitHubCredentials

    try:
        credentials = GitHubCredentials.load(credentials_block)
    except ValueError as exc:
        raise CredentialsError(f"no GitHubCredentials block named {credentials_block!r}",
                               hint="create one in the Prefect UI or with GitHubCredentials(token=...)"
                                    ".save(name)") from exc
    if credentials.token is None or not credentials.token.get_secret_value():
        raise CredentialsError(f"GitHubCredentials block {credentials_block!r} has no token")
    token = credentials.token.get_secret_value()
    register_secret(token)
    return token


def _post(credentials_block: str, api_url: str, path: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {_token(credentials_block)}",
               "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "hubploy"}
    url = api_url.rstrip("/") + path
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise HubployError(f"cannot reach GitHub at {api_url}: {type(exc).__name__}: {exc}") from None
    if response.is_success:
        return
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = ""
    text = f"GitHub answered {response.status_code} to POST {path}" + (f": {message}" if message else "")
    if response.status_code in (401, 403):
        raise CredentialsError(text, hint=f"check the token of GitHubCredentials block {credentials_block!r}"
                                          "; it needs repo:status (statuses) and pull request write access "
                                          "(comments)")
    raise HubployError(text)
