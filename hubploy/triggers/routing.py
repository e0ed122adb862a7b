"""Which Prefect deployment a GitHub webhook delivery starts, and with which parameters (pure).

- ``push`` to the staging branch → the lifecycle;
- ``push`` to the prod branch (a merge made outside the lifecycle) → the prod deploy;
- ``pull_request`` opened/synchronize/reopened against the staging branch → PR validation;
- anything else (other events, branches, tags, deleted branches, PR actions) → :class:`Ignored`.

Parameters carry only what the delivery says about this event (SHAs, PR number, delivery id). Which
repository to clone (``repo_url``) and where to report are deployment configuration (prefect.yaml
defaults): GitHub's ``clone_url`` is HTTPS and would override the remote the worker has credentials for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hubploy.config.models import RepoSettings
from hubploy.errors import HubployError

# Receiver defaults, here rather than in triggers.webhook so that the CLI can show them without
# importing Prefect.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_SECRET_BLOCK = "hubploy-webhook-secret"

NULL_SHA = "0" * 40
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
PR_ACTIONS = frozenset({"opened", "synchronize", "reopened"})


@dataclass(frozen=True)
class Routes:
    """Branch names and the ``flow-name/deployment-name`` each kind of delivery starts."""

    staging_branch: str = "staging"
    prod_branch: str = "prod"
    lifecycle_deployment: str = "hubploy-lifecycle/lifecycle"
    prod_deployment: str = "hubploy-prod-deploy/prod-deploy"
    pr_validation_deployment: str = "hubploy-pr-validation/pr-validation"

    @classmethod
    def from_repo_settings(cls, settings: RepoSettings, **overrides: str) -> Routes:
        return cls(staging_branch=settings.staging_branch, prod_branch=settings.prod_branch, **overrides)


@dataclass(frozen=True)
class Start:
    """Start ``deployment`` with ``parameters``."""

    deployment: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Ignored:
    """Nothing to start; ``reason`` says why (returned to GitHub and logged)."""

    reason: str


class PayloadError(HubployError):
    """The payload lacks a field its event always carries."""


def route(
    event: str, payload: Mapping[str, Any], delivery: str, routes: Routes = Routes()
) -> Start | Ignored:
    if event == "push":
        return _route_push(payload, delivery, routes)
    if event == "pull_request":
        return _route_pull_request(payload, delivery, routes)
    return Ignored(f"event {event!r} is not handled")


def _route_push(payload: Mapping[str, Any], delivery: str, routes: Routes) -> Start | Ignored:
    ref = _field(payload, "ref")
    if not ref.startswith("refs/heads/"):
        return Ignored(f"{ref} is not a branch")
    branch = ref.removeprefix("refs/heads/")
    deployment = {
        routes.staging_branch: routes.lifecycle_deployment,
        routes.prod_branch: routes.prod_deployment,
    }.get(branch)
    if deployment is None:
        return Ignored(f"branch {branch!r} is not configured")
    after = _sha_field(payload, "after")
    if payload.get("deleted") or after == NULL_SHA:
        return Ignored(f"branch {branch!r} was deleted")
    return Start(
        deployment,
        {"sha": after, "before": _sha_field(payload, "before"), "trigger": f"github push {delivery}"},
    )


def _route_pull_request(payload: Mapping[str, Any], delivery: str, routes: Routes) -> Start | Ignored:
    action = _field(payload, "action")
    if action not in PR_ACTIONS:
        return Ignored(f"pull_request action {action!r} is not handled")
    pr = payload.get("pull_request")
    if not isinstance(pr, Mapping):
        raise PayloadError("pull_request event without a pull_request object")
    base, head = pr.get("base"), pr.get("head")
    if not isinstance(base, Mapping) or not isinstance(head, Mapping):
        raise PayloadError("pull_request without base/head")
    if _field(base, "ref") != routes.staging_branch:
        return Ignored(f"pull request targets {base['ref']!r}, not {routes.staging_branch!r}")
    number = pr.get("number", payload.get("number"))
    if not isinstance(number, int):
        raise PayloadError("pull_request without a number")
    return Start(
        routes.pr_validation_deployment,
        {"sha": _sha_field(head, "sha"), "base_sha": _sha_field(base, "sha"), "pr_number": number},
    )


def _sha_field(obj: Mapping[str, Any], key: str) -> str:
    """A commit SHA (40 hex digits, or 64 for SHA-256 repos): it becomes a git argument in the flows."""
    value = _field(obj, key)
    if not _SHA.fullmatch(value):
        raise PayloadError(f"field {key!r} is not a commit SHA")
    return value


def _field(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"missing or non-string field {key!r}")
    return value
