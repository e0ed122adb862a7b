"""Pure routing of GitHub deliveries to deployments."""

from __future__ import annotations

import pytest

from hubploy.config.models import RepoSettings
from hubploy.triggers.routing import NULL_SHA, Ignored, PayloadError, Routes, Start, route

REPO = {"clone_url": "https://github.com/org/deploy.git", "full_name": "org/deploy"}
A, B = "a" * 40, "b" * 40


def push(branch: str, after: str = A, **extra: object) -> dict:
    return {"ref": f"refs/heads/{branch}", "before": B, "after": after, "repository": REPO, **extra}


def pull_request(action: str = "opened", base: str = "staging") -> dict:
    return {
        "action": action,
        "number": 7,
        "repository": REPO,
        "pull_request": {"number": 7, "head": {"ref": "feature", "sha": A}, "base": {"ref": base, "sha": B}},
    }


def test_push_to_staging_starts_the_lifecycle() -> None:
    assert route("push", push("staging"), "d1") == Start(
        "hubploy-lifecycle/lifecycle", {"sha": A, "before": B, "trigger": "github push d1"}
    )


def test_push_to_prod_starts_the_prod_deploy() -> None:
    decision = route("push", push("prod"), "d2")
    assert isinstance(decision, Start)
    assert decision.deployment == "hubploy-prod-deploy/prod-deploy"
    assert decision.parameters["sha"] == A and decision.parameters["before"] == B


@pytest.mark.parametrize(
    "event,payload",
    [
        ("push", push("main")),
        ("push", {**push("staging"), "ref": "refs/tags/staging"}),
        ("push", push("staging", after=NULL_SHA)),
        ("push", push("staging", deleted=True)),
        ("pull_request", pull_request("closed")),
        ("pull_request", pull_request(base="main")),
        ("issues", {"action": "opened"}),
    ],
)
def test_ignored(event: str, payload: dict) -> None:
    assert isinstance(route(event, payload, "d"), Ignored)


def test_pull_request_against_staging_starts_validation() -> None:
    for action in ("opened", "synchronize", "reopened"):
        assert route("pull_request", pull_request(action), "d3") == Start(
            "hubploy-pr-validation/pr-validation", {"sha": A, "base_sha": B, "pr_number": 7}
        )


def test_branches_and_names_come_from_settings_and_config() -> None:
    routes = Routes.from_repo_settings(
        RepoSettings(staging_branch="main", prod_branch="live"), lifecycle_deployment="x/y"
    )
    decision = route("push", push("main"), "d", routes)
    assert isinstance(decision, Start) and decision.deployment == "x/y"
    assert isinstance(route("push", push("staging"), "d", routes), Ignored)
    assert route("push", push("live"), "d", routes).deployment == "hubploy-prod-deploy/prod-deploy"


@pytest.mark.parametrize(
    "event,payload",
    [
        ("push", {"ref": "refs/heads/staging"}),
        ("push", {**push("staging"), "before": None}),
        ("pull_request", {"action": "opened"}),
        (
            "pull_request",
            {**pull_request(), "pull_request": {"number": 7, "base": {"ref": "staging", "sha": B}}},
        ),
    ],
)
def test_malformed_payloads(event: str, payload: dict) -> None:
    with pytest.raises(PayloadError):
        route(event, payload, "d")
