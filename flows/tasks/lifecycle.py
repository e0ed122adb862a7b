"""Tasks of the change lifecycle that are not builds or deploys: checkout, plan, validate, who may
approve, and promotion. Each is cached per flow run (Prefect's default policy with
persisted results), so a suspended lifecycle re-enters without redoing them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from prefect import get_run_logger, task

from hubploy.config.repo_settings import Approvers
from hubploy.errors import ConfigError
from hubploy.git import changed_files, commit_messages, run_git
from hubploy.layout import load_repo, try_load_repo
from hubploy.planner import Plan, plan_repo
from hubploy.promote import Promotion, promote
from hubploy.runner import child_env
from hubploy.validate import validate_repo
from hubploy.workspace import branch_head, checkout, default_cache_dir, fetch_mirror


class Retries(TypedDict):
    retries: int
    retry_delay_seconds: list[float]


GIT_RETRIES: Retries = {"retries": 2, "retry_delay_seconds": [2, 10]}


def git_env() -> dict[str, str]:
    return child_env({"GIT_TERMINAL_PROMPT": "0"})


def repo_key(repo_url: str) -> str:
    """A short stable name for a repository, for concurrency limits."""
    return hashlib.sha256(repo_url.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ChangeSet:
    base: str | None  # what the change is compared with (prod head, or the push's before)
    commits: list[tuple[str, str]]  # (sha, subject), newest first
    plan: Plan


@task(**GIT_RETRIES)
def checkout_commit(repo_url: str, sha: str) -> str:
    """A worktree of the deployment repo at exactly ``sha``."""
    tree = checkout(repo_url, sha, cache_dir=default_cache_dir(), env=git_env())
    get_run_logger().info("checked out %s at %s", repo_url, sha[:12])
    return str(tree)


@task(**GIT_RETRIES)
def head_of(repo_url: str, branch: str) -> str | None:
    """The SHA at the head of ``branch`` now, or None when the branch does not exist."""
    env = git_env()
    return branch_head(fetch_mirror(repo_url, default_cache_dir(), env), branch, env)


@task(**GIT_RETRIES)
def plan_commit(tree: str, sha: str, base: str | None) -> ChangeSet:
    """Which hubs ``sha`` changes compared with ``base`` (all hubs when there is no base).

    Reads the hubploy.yaml of only the hubs with changed files in their dir (for their image dirs,
    ``plan_repo``); validate_hubs reports a hub whose hubploy.yaml does not load."""
    env = git_env()
    repo = load_repo(tree)
    if base is not None and set(base) == {"0"}:
        base = None  # a push that created the branch
    if base is None:
        files = run_git(Path(tree), ["ls-files"], env).splitlines()
        commits = commit_messages(Path(tree), sha, env=env)[:50]
    else:
        files = changed_files(Path(tree), f"{base}...{sha}", env=env)
        commits = commit_messages(Path(tree), f"{base}..{sha}", env=env)
    plan = plan_repo(repo, files)
    get_run_logger().info("plan for %s: %s", sha[:12], plan.summary())
    return ChangeSet(base, commits, plan)


@task
def validate_hubs(tree: str, hubs: list[str]) -> None:
    issues = validate_repo(Path(tree), hubs)
    if issues:
        for issue in issues:
            get_run_logger().error("%s", issue.format(Path(tree)))
        raise ConfigError(issues)


@task(**GIT_RETRIES)
def approvers_in_force(repo_url: str, prod_head: str | None, tree: str) -> Approvers:
    """The ``approvers:`` a decision is checked against: those of prod's head, the branch the approval
    guards, so that a change cannot list its own approvers (a change to the list takes effect once it is
    promoted); those of the commit under approval (``tree``) when prod has none or its file does not load."""
    logger = get_run_logger()
    if prod_head is not None:
        prod_tree = checkout(repo_url, prod_head, cache_dir=default_cache_dir(), env=git_env())
        prod, issues = try_load_repo(prod_tree)
        if prod is not None:
            return prod.settings.approvers
        logger.warning(
            "hubploy-repo.yaml on prod (%s) does not load (%s); approvers are those of the commit "
            "under approval",
            prod_head[:12],
            issues[0].format() if issues else "unknown error",
        )
    return load_repo(tree).settings.approvers


@task(**GIT_RETRIES)
def promote_commit(
    repo_url: str,
    sha: str,
    message: str,
    staging_branch: str,
    prod_branch: str,
    git_overrides: dict[str, str] | None = None,
) -> Promotion:
    result = promote(
        repo_url,
        sha,
        message=message,
        cache_dir=default_cache_dir(),
        env=child_env({"GIT_TERMINAL_PROMPT": "0", **(git_overrides or {})}),
        staging_branch=staging_branch,
        prod_branch=prod_branch,
    )
    get_run_logger().info(
        "promoted %s to %s: %s -> %s",
        sha[:12],
        prod_branch,
        (result.prod_before or "none")[:12],
        result.prod_after[:12],
    )
    return result
