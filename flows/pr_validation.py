"""Pull requests to staging: validate, render every affected hub/env and build changed images
without pushing; the plan and the result go back to GitHub as a commit status and a PR comment
when a GitHubCredentials block is named."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.states import Completed, Failed, State

from flows.build_images import build_images
from flows.tasks.github_status import post_pr_comment, report_status
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


def _comment(sha: str, summary: str, outcome: str, details: list[str]) -> str:
    return "\n".join([f"### hubploy: {outcome} for `{sha[:12]}`", "", f"**Plan:** {summary}", "",
                      *[f"- {d}" for d in details]])


@flow(name="hubploy-pr-validation", persist_result=True, log_prints=True)
def pr_validation(sha: str, repo_url: str, base_sha: str | None = None, pr_number: int | None = None,
                  repo_full_name: str | None = None, trigger: str = "manual",
                  github_credentials_block: str | None = None) -> State:
    github = github_credentials_block if repo_full_name else None
    report_status(github, repo_full_name or "", sha, "pending", CONTEXT, "validating")
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
        report_status(github, repo_full_name or "", sha, "failure", CONTEXT, str(exc))
        if pr_number is not None:
            post_pr_comment(github, repo_full_name or "", pr_number, _comment(sha, change.plan.summary(), "failed",
                                                                              [str(exc), *details]))
        return Failed(name="ValidationFailed", message=str(exc))
    report_status(github, repo_full_name or "", sha, "success", CONTEXT, change.plan.summary())
    if pr_number is not None:
        post_pr_comment(github, repo_full_name or "", pr_number,
                        _comment(sha, change.plan.summary(), "valid", details or ["nothing to build"]))
    return Completed(message=change.plan.summary())
