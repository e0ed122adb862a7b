"""PR validation and GitHub reporting end to end: the pr-validation deployment runs on the real
worker against a fresh hub on the sandbox, reports through a GitHubCredentials block on the test
server to a local stand-in for the GitHub API, builds images without ever pushing them, and keeps one
comment per pull request with the diff against the running release."""

from __future__ import annotations

import base64
import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_lifecycle as lc
import yaml
from fixtures.prefect_worker import Worker, wait_for_state
from helpers.cli import run_cli
from helpers.github_api import FakeGitHub, fake_github
from prefect.deployments import run_deployment
from prefect_github import GitHubCredentials

from hubploy.pr_comment import MARKER
from hubploy.runner import child_env
from hubploy.secrets import decrypted, with_age_key

pytestmark = [pytest.mark.sandbox, pytest.mark.prefect]

deploy_repo = lc.deploy_repo
PR_VALIDATION = "hubploy-pr-validation/pr-validation"
BLOCK = "hubploy-test-pr-github"
TOKEN = "ghp_" + secrets.token_hex(18)
FULL_NAME = "org/deploy"
PR = 42


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with fake_github() as stand_in:
        yield stand_in


@pytest.fixture
def credentials(prefect_api: str) -> str:
    GitHubCredentials(token=TOKEN).save(BLOCK, overwrite=True)
    return BLOCK


def _pr_branch(repo: lc.DeployRepo, files: dict[str, str], message: str) -> tuple[str, str]:
    """A pull request branch off staging, pushed to origin; returns (base sha, head sha)."""
    base = repo.work.git("rev-parse", "staging")
    branch = f"pr-{secrets.token_hex(3)}"
    repo.work.git("checkout", "--quiet", "-b", branch)
    head = repo.work.commit(files, message)
    repo.work.git("push", "--quiet", repo.url, branch)
    repo.work.git("checkout", "--quiet", "staging")
    return base, head


def _validate(  # type: ignore[no-untyped-def]
    repo: lc.DeployRepo, worker: Worker, github: FakeGitHub, base: str, head: str, pr_head: str | None = None
):
    """Validate ``head`` while GitHub says the pull request's head is ``pr_head`` (default ``head``)."""
    github.heads[PR] = pr_head or head
    run = run_deployment(
        PR_VALIDATION,
        timeout=0,
        parameters={
            "sha": head,
            "base_sha": base,
            "pr_number": PR,
            "repo_url": repo.url,
            "repo_full_name": FULL_NAME,
            "github_credentials_block": BLOCK,
            "github_api_url": github.url,
        },
    )
    return wait_for_state(run.id, lambda r: r.state is not None and r.state.is_final(), worker=worker)


def _statuses(github: FakeGitHub, sha: str) -> list[dict]:
    found = [r for r in github.requests if r.path == f"/repos/{FULL_NAME}/statuses/{sha}"]
    for request in found:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
    return [r.body for r in found]


def _comments(github: FakeGitHub) -> list[str]:
    return github.pr_comments(PR)


def _registry_tags(sandbox, image: str) -> list[str]:  # type: ignore[no-untyped-def]
    repository = image.split("/", 1)[1]
    request = urllib.request.Request(f"http://{sandbox.registry}/v2/{repository}/tags/list")
    auth = base64.b64encode(":".join(sandbox.registry_auth).encode()).decode()
    request.add_header("Authorization", "Basic " + auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read()).get("tags") or []
    except urllib.error.HTTPError as exc:
        assert exc.code == 404, exc
        return []


def test_valid_pr_builds_without_push_and_reports_success(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker, github: FakeGitHub, credentials: str
) -> None:
    repo = deploy_repo
    hello = f"deployments/{repo.hub}/image/hello.txt"
    base, head = _pr_branch(
        repo, {hello: f"changed in a PR {secrets.token_hex(4)}\n"}, "change the user image"
    )
    run = _validate(repo, hubploy_worker, github, base, head)
    assert run.state.is_completed(), run.state.message
    statuses = _statuses(github, head)
    assert [s["state"] for s in statuses] == ["pending", "success"]
    assert {s["context"] for s in statuses} == {"hubploy/pr-validation"}
    assert all(s["target_url"].endswith(f"/flow-runs/flow-run/{run.id}") for s in statuses)
    assert repo.hub in statuses[-1]["description"]
    [comment] = _comments(github)
    assert f"### hubploy: valid for `{head[:12]}`" in comment
    assert "**Plan:**" in comment and repo.hub in comment
    built = re.search(
        rf"\| {repo.hub} \| `([^`]+):([^`:]+)` \| built \| "
        r"not in the registry \(not pushed\) \|",
        comment,
    )
    assert built, comment
    image, tag = built.groups()
    assert tag not in _registry_tags(repo.sandbox, image)  # built, never pushed
    assert TOKEN not in json.dumps([r.body for r in github.requests])


def test_invalid_pr_fails_validation_and_reports_failure(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker, github: FakeGitHub, credentials: str
) -> None:
    repo = deploy_repo
    base, head = _pr_branch(
        repo, {f"deployments/{repo.hub}/hubploy.yaml": "images:\n  no_such_key: 1\n"}, "break hubploy.yaml"
    )
    run = _validate(repo, hubploy_worker, github, base, head)
    assert (run.state.type.value, run.state.name) == ("FAILED", "ValidationFailed"), run.state.message
    assert "hubploy.yaml" in run.state.message
    assert [s["state"] for s in _statuses(github, head)] == ["pending", "failure"]
    [comment] = _comments(github)
    assert f"### hubploy: failed for `{head[:12]}`" in comment and "hubploy.yaml" in comment


def test_unreachable_github_does_not_fail_the_validation(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker, credentials: str
) -> None:
    repo = deploy_repo
    base, head = _pr_branch(repo, {"README.md": "docs\n"}, "docs only")
    run = run_deployment(
        PR_VALIDATION,
        timeout=0,
        parameters={
            "sha": head,
            "base_sha": base,
            "pr_number": PR,
            "repo_url": repo.url,
            "repo_full_name": FULL_NAME,
            "github_credentials_block": BLOCK,
            "github_api_url": "http://127.0.0.1:1",
        },
    )
    run = wait_for_state(run.id, lambda r: r.state is not None and r.state.is_final(), worker=hubploy_worker)
    assert run.state.is_completed(), run.state.message


def test_rejected_lifecycle_reports_pending_then_failure(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker, github: FakeGitHub, credentials: str
) -> None:
    repo = deploy_repo
    sha = lc.change_values(repo, "# reported to GitHub\n")
    run_id = repo.start(
        sha, repo_full_name=FULL_NAME, github_credentials_block=BLOCK, github_api_url=github.url
    )
    wait_for_state(run_id, lc.paused, worker=hubploy_worker)
    states = [s["state"] for s in _statuses(github, sha)]
    assert states and set(states) == {"pending"}
    lc.resume_flow_run(
        run_id, run_input={"decision": "reject", "sha": sha, "reason": "not today", "approver": "t"}
    )
    run = wait_for_state(run_id, lc.final, worker=hubploy_worker)
    assert run.state.name == "Rejected"
    statuses = _statuses(github, sha)
    assert [s["state"] for s in statuses][-1] == "failure"
    assert {s["context"] for s in statuses} == {"hubploy/lifecycle"}
    assert "Rejected" in statuses[-1]["description"] and "not today" in statuses[-1]["description"]


def _secret_strings(path: Path) -> list[str]:
    """Every string of a sops-encrypted values file, decrypted."""

    def leaves(node: object) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in leaves(value)]
        return [node] if isinstance(node, str) else []

    env = with_age_key(child_env(), path.parents[3] / "example-age.key")
    with decrypted([path], env=env, allow_plaintext=False) as files:
        return leaves(yaml.safe_load(files[path].read_text()))


def test_one_comment_per_pr_edited_in_place_with_the_diff_against_the_running_release(
    deploy_repo: lc.DeployRepo, hubploy_worker: Worker, github: FakeGitHub, credentials: str
) -> None:
    repo = deploy_repo
    built = run_cli("build", repo.hub, "--check-registry", "--push", cwd=repo.work.root, env=repo.sandbox.env)
    assert built.returncode == 0, built.stderr
    deployed = run_cli("deploy", repo.hub, "hub", "staging", cwd=repo.work.root, env=repo.sandbox.env)
    assert deployed.returncode == 0, deployed.stderr
    reviewer = github.add_comment(PR, "a reviewer's comment")
    staging = repo.config("staging.yaml")
    text = (repo.work.root / staging).read_text()
    course = f"physics-{secrets.token_hex(3)}"
    base = repo.work.git("rev-parse", "staging")
    repo.work.git("checkout", "--quiet", "-b", f"pr-{secrets.token_hex(3)}")
    # the deploy's dependency update wrote hub/charts/: not part of the pull request
    first = repo.work.commit(
        {staging: text + "# a comment changes no manifest\n", ".gitignore": "hub/charts/\n"}, "a comment"
    )
    extra_env = f"  hub:\n    extraEnv: {{COURSE: {course}}}\n"
    second = repo.work.commit({staging: text.replace("  hub:\n", extra_env, 1)}, "set COURSE")
    repo.work.git("push", "--quiet", repo.url, "HEAD")
    repo.work.git("checkout", "--quiet", "staging")

    for head in (first, second):
        run = _validate(repo, hubploy_worker, github, base, head)
        assert run.state.is_completed(), run.state.message

    comments = f"/repos/{FULL_NAME}/issues/{PR}/comments"
    [ours] = [i for i, c in github.comments.items() if c["body"].startswith(MARKER)]
    writes = github.calls("POST", "PATCH")
    assert [call for call in writes if "/statuses/" not in call[1]] == [
        ("POST", comments),
        ("PATCH", f"/repos/{FULL_NAME}/issues/comments/{ours}"),
    ]
    assert github.comments[reviewer]["body"] == "a reviewer's comment"
    posted = next(r.body["body"] for r in github.requests if (r.method, r.path) == ("POST", comments))
    assert posted.startswith(MARKER) and f"valid for `{first[:12]}`" in posted
    assert f"**Plan:** 1 hub(s): {repo.hub}" in posted and f"| {repo.hub} | {staging} | – |" in posted
    assert f"- staging (`{repo.hub}-staging`): no change" in posted
    assert f"- prod (`{repo.hub}-prod`): not deployed yet: a first deploy creates" in posted
    body = github.comments[ours]["body"]
    assert body.startswith(MARKER) and f"valid for `{second[:12]}`" in body
    assert re.search(rf"^\+ +value: {course}$", body, re.MULTILINE), body
    assert re.search(rf"- staging \(`{repo.hub}-staging`\): changed, \+\d+ −\d+ lines", body), body
    assert f"- prod (`{repo.hub}-prod`): not deployed yet" in body
    assert "| skipped | already in the registry |" in body
    shown = posted + body
    planted = _secret_strings(repo.work.root / f"deployments/{repo.hub}/secrets/staging.yaml")
    assert planted  # the proxy's secretToken at least
    for secret in planted:
        assert secret not in shown and base64.b64encode(secret.encode()).decode() not in shown
    assert TOKEN not in json.dumps([r.body for r in github.requests])
    # a validation of the first push that ends after the second's leaves the second's comment
    late = _validate(repo, hubploy_worker, github, base, first, pr_head=second)
    assert late.state.is_completed(), late.state.message
    assert github.comments[ours]["body"] == body
