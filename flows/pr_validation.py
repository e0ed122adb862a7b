"""Pull requests to staging: validate, render every affected hub/env and build changed images
without pushing; the plan and the result go back to GitHub as a commit status and a PR comment
when a GitHubCredentials block is named."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Completed, Failed, State

from flows.build_images import build_images
from flows.tasks.github_status import DEFAULT_API_URL, post_pr_comment, report_status
from flows.tasks.lifecycle import checkout_commit, plan_commit, validate_hubs
from hubploy.errors import HubployError
from hubploy.layout import load_repo
from hubploy.render import render_manifest
from hubploy.runner import child_env

CONTEXT = "hubploy/pr-validation"


@task
def render_all(tree: str, hubs: list[str]) -> dict[str, str]:
    """Render each hub in each of its environments; returns failures by release."""
    repo = load_repo(tree)
    problems = {}
    for name in hubs:
        hub = repo.load_hub(name)
        for env_name in hub.environments:
            try:
                render_manifest(repo, name, env_name, base_env=child_env())
            except HubployError as exc:
                problems[hub.release(env_name)] = str(exc)
                get_run_logger().error("%s does not render: %s", hub.release(env_name), exc)
    return problems


class _GitHub:
    """Commit statuses and PR comments for one PR head, when a GitHubCredentials block is named. A
    failure to report is logged, never fatal to the validation."""

    def __init__(self, block: str | None, repo_full_name: str | None, sha: str, pr_number: int | None,
                 api_url: str) -> None:
        self.block = block if repo_full_name else None
        self.repo, self.sha, self.pr_number, self.api_url = repo_full_name or "", sha, pr_number, api_url

    def status(self, state: str, description: str) -> None:
        self._safely(report_status, self.block, self.repo, self.sha, state, CONTEXT, description,
                     api_url=self.api_url)

    def comment(self, body: str) -> None:
        if self.pr_number is not None:
            self._safely(post_pr_comment, self.block, self.repo, self.pr_number, body, api_url=self.api_url)

    @staticmethod
    def _safely(call: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        try:
            call(*args, **kwargs)
        except HubployError as exc:
            get_run_logger().warning("could not report to GitHub: %s", exc)


def _comment(sha: str, summary: str, outcome: str, details: list[str]) -> str:
    return "\n".join([f"### hubploy: {outcome} for `{sha[:12]}`", "", f"**Plan:** {summary}", "",
                      *[f"- {d}" for d in details]])


@flow(name="hubploy-pr-validation", persist_result=True, log_prints=True)
def pr_validation(sha: str, repo_url: str, base_sha: str | None = None, pr_number: int | None = None,
                  repo_full_name: str | None = None, trigger: str = "manual",
                  github_credentials_block: str | None = None,
                  github_api_url: str = DEFAULT_API_URL) -> State:
    """Validate, render and build (never push) what the PR head ``sha`` changes compared with
    ``base_sha``. ``github_api_url``: the REST base (GitHub Enterprise: https://HOST/api/v3)."""
    github = _GitHub(github_credentials_block, repo_full_name, sha, pr_number, github_api_url)
    github.status("pending", "validating")
    tree = checkout_commit(repo_url, sha)
    change = plan_commit(tree, sha, base_sha)
    details: list[str] = []
    try:
        if not change.plan.empty:
            hubs = change.plan.hub_names
            validate_hubs(tree, hubs)
            problems = render_all(tree, hubs)
            details += [f"`{release}` does not render: {msg}" for release, msg in problems.items()]
            for row in build_images(hubs=hubs, repo_path=tree, push=False, check_registry=True):
                details.append(f"image `{row['image']}:{row['tag']}`: {row['result']} ({row['reason']})")
            if problems:
                raise HubployError(f"{len(problems)} release(s) do not render")
    except HubployError as exc:
        github.status("failure", str(exc))
        github.comment(_comment(sha, change.plan.summary(), "failed", [str(exc), *details]))
        return Failed(name="ValidationFailed", message=str(exc))
    github.status("success", change.plan.summary())
    github.comment(_comment(sha, change.plan.summary(), "valid", details or ["nothing to build"]))
    return Completed(message=change.plan.summary())
