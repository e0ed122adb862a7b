"""Commit range auto-detection from a GitHub Actions event file, as classic hubploy's
``commitrange.py``: a pull request gives ``<base.sha>...HEAD``, a push ``<before>...HEAD`` once
``before`` is known to exist locally (it does not after a force-push or in a shallow clone).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hubploy.errors import GitError, HubployError
from hubploy.git import commit_exists

NO_MODE_HINT = "pass --check-registry (build what the registry lacks) or --commit-range RANGE"
_NULL_SHA = "0" * 40


def detect_commit_range(repo_root: Path, environ: Mapping[str, str]) -> str:
    """The range to build for in GitHub Actions; HubployError when none can be determined."""
    if not environ.get("GITHUB_ACTIONS"):
        raise HubployError(
            "cannot tell which images to build: no --check-registry or --commit-range given, "
            "and auto-detection only works in GitHub Actions (GITHUB_ACTIONS is not set)",
            hint=NO_MODE_HINT,
        )
    event_path = environ.get("GITHUB_EVENT_PATH")
    if not event_path:
        raise HubployError("GITHUB_ACTIONS is set but GITHUB_EVENT_PATH is not", hint=NO_MODE_HINT)
    return range_from_event(repo_root, _read_event(Path(event_path)))


def _read_event(path: Path) -> dict[str, Any]:
    try:
        event = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HubployError(f"cannot read the GitHub event file {path}: {exc}", hint=NO_MODE_HINT) from None
    if not isinstance(event, dict):
        raise HubployError(f"the GitHub event file {path} does not hold a JSON object", hint=NO_MODE_HINT)
    return event


def range_from_event(repo_root: Path, event: Mapping[str, Any]) -> str:
    pull_request = event.get("pull_request")
    if isinstance(pull_request, dict):
        base_sha = (pull_request.get("base") or {}).get("sha")
        if not base_sha:
            raise HubployError("the pull_request event has no base.sha", hint=NO_MODE_HINT)
        return f"{base_sha}...HEAD"
    before = event.get("before")
    if not before:
        raise HubployError(
            "the GitHub event is neither a push nor a pull_request, so no commit range "
            "can be derived from it",
            hint=NO_MODE_HINT,
        )
    if before == _NULL_SHA:
        raise HubployError(
            "this push created the branch (before is 0000000…), so there is no previous "
            "commit to compare with",
            hint=NO_MODE_HINT,
        )
    if not commit_exists(repo_root, before):
        raise GitError(
            f"the push's previous commit {before[:12]} is not in this clone: the branch was "
            "force-pushed, or the checkout is shallow",
            hint="use --check-registry, or fetch full history (actions/checkout fetch-depth: 0)",
        )
    return f"{before}...HEAD"
