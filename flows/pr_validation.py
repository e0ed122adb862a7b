"""Pull requests to staging: validate, diff every affected hub/env against the release running there now
and build changed images without pushing. The result goes back to GitHub, when a GitHubCredentials
block is named, as a commit status and as one comment per pull request, edited in place on every push
(hubploy.pr_comment says what it holds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Completed, Failed, State

from flows.build_images import build_images
from flows.tasks.github_status import DEFAULT_API_URL, report_status, upsert_pr_comment
from flows.tasks.lifecycle import checkout_commit, plan_commit, validate_hubs
from flows.tasks.render import review_releases
from hubploy.errors import ConfigError, HubployError
from hubploy.layout import load_repo
from hubploy.planner import Plan
from hubploy.pr_comment import MARKER, BuildResult, ImageBuild, PrReview, ReleaseState, comment_body

CONTEXT = "hubploy/pr-validation"


class _GitHub:
    """Commit statuses and the PR comment for one PR head, when a GitHubCredentials block is named. A
    failure to report is logged, never fatal to the validation."""

    def __init__(
        self, block: str | None, repo_full_name: str | None, sha: str, pr_number: int | None, api_url: str
    ) -> None:
        self.block = block if repo_full_name else None
        self.repo, self.sha, self.pr_number, self.api_url = repo_full_name or "", sha, pr_number, api_url

    def status(self, state: str, description: str) -> None:
        self._safely(
            report_status, self.block, self.repo, self.sha, state, CONTEXT, description, api_url=self.api_url
        )

    def comment(self, body: str) -> None:
        if self.pr_number is not None:
            self._safely(
                upsert_pr_comment,
                self.block,
                self.repo,
                self.pr_number,
                body,
                marker=MARKER,
                head_sha=self.sha,
                api_url=self.api_url,
            )

    @staticmethod
    def _safely(call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except HubployError as exc:
            get_run_logger().warning("could not report to GitHub: %s", exc)


def _builds(rows: list[dict[str, Any]]) -> tuple[ImageBuild, ...]:
    return tuple(
        ImageBuild(r["hub"], r["image"], r["tag"], BuildResult(r["result"]), r["reason"]) for r in rows
    )


def _review(sha: str, tree: str, plan: Plan) -> PrReview:
    """Validate, diff and build what ``plan`` selects; ``failure`` says why the pull request is not valid."""
    review = PrReview(sha, plan, rollout=load_repo(tree).settings.rollout)
    if plan.empty:
        return review
    hubs = plan.hub_names
    try:
        validate_hubs(tree, hubs)
    except ConfigError as exc:
        return replace(review, problems=_problems(exc, tree), failure=str(exc))
    releases = tuple(review_releases(tree, hubs))
    failures = []
    unrendered = sum(r.state is ReleaseState.not_rendered for r in releases)
    if unrendered:
        failures.append(f"{unrendered} release(s) do not render")
    try:
        builds = _builds(
            build_images(hubs=hubs, repo_path=tree, push=False, check_registry=True, raise_on_failure=False)
        )
    except HubployError as exc:  # e.g. no registry credentials: no image was tried
        return replace(review, releases=releases, failure="; ".join([*failures, f"images not built: {exc}"]))
    failed = sum(b.result is BuildResult.failed for b in builds)
    if failed:
        failures.append(f"{failed} image(s) failed to build")
    return replace(review, releases=releases, builds=builds, failure="; ".join(failures))


def _problems(error: ConfigError, tree: str) -> tuple[str, ...]:
    return tuple(issue.format(Path(tree)) for issue in error.issues)


@flow(name="hubploy-pr-validation", persist_result=True, log_prints=True)
def pr_validation(
    sha: str,
    repo_url: str,
    base_sha: str | None = None,
    pr_number: int | None = None,
    repo_full_name: str | None = None,
    trigger: str = "manual",
    github_credentials_block: str | None = None,
    github_api_url: str = DEFAULT_API_URL,
) -> State:
    """Validate, diff and build (never push) what the PR head ``sha`` changes compared with
    ``base_sha``. ``github_api_url``: the REST base (GitHub Enterprise: https://HOST/api/v3)."""
    github = _GitHub(github_credentials_block, repo_full_name, sha, pr_number, github_api_url)
    github.status("pending", "validating")
    tree = checkout_commit(repo_url, sha)
    try:
        review = _review(sha, tree, plan_commit(tree, sha, base_sha).plan)
    except ConfigError as exc:  # the repository's own settings do not load: nothing could be planned
        review = PrReview(sha, None, problems=_problems(exc, tree), failure=str(exc))
    except HubployError as exc:
        review = PrReview(sha, None, failure=str(exc))
    github.comment(comment_body(review))
    if review.failure:
        github.status("failure", review.failure)
        return Failed(name="ValidationFailed", message=review.failure)
    summary = review.plan.summary() if review.plan else ""
    github.status("success", summary)
    return Completed(message=summary)
