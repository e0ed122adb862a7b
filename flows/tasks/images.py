"""Prefect tasks for images: tag, registry existence, build, push.

Registry-facing tasks retry up to 3 times with exponential backoff (2, 4, 8 s), but only on
transient failures: a RegistryError that is transient (no answer, 5xx, 429), connection resets and
timeouts, or a failed command whose output shows a network error or a 5xx. Never on 401/403.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from hubploy import git
from hubploy.build import CACHE_DEPTH, BuildBackend, BuildResult
from hubploy.build import build_image as core_build_image
from hubploy.errors import CommandError, CommandTimeoutError, RegistryError
from hubploy.images import effective_tag
from hubploy.layout import ImageSpec, load_repo
from hubploy.registry import AuthFiles, RegistryCredentials, manifest_digest

RETRIES = 3
BACKOFF = exponential_backoff(backoff_factor=2)
_NETWORK = re.compile(
    r"connection (refused|reset)|i/o timeout|timed? ?out|no such host|\bEOF\b|broken pipe|"
    r"\b(50[0234]|429)\b|service unavailable|bad gateway",
    re.IGNORECASE,
)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the registry or network may answer next time; 401/403 never will."""
    if isinstance(exc, RegistryError):
        return exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError, CommandTimeoutError)):
        return True
    if isinstance(exc, CommandError):
        return bool(_NETWORK.search(exc.stderr_tail)) and not re.search(
            r"unauthori[sz]ed|denied|\b40[13]\b", exc.stderr_tail, re.IGNORECASE
        )
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as raised:  # a result that cannot be read is itself the failure
        exc = raised
    return isinstance(exc, BaseException) and is_transient(exc)


@task(name="image-tag", cache_policy=NONE)
def image_tag(repo_path: str, hub_name: str, spec: ImageSpec) -> str:
    """The tag to build and deploy (git-derived or pinned, or a recorded rebuild tag)."""
    return effective_tag(load_repo(repo_path).load_hub(hub_name), spec)


@task(
    name="image-exists",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def image_exists(name: str, tag: str, credentials: RegistryCredentials | None) -> str | None:
    """The digest of ``name:tag`` in its registry, or None when absent."""
    return manifest_digest(name, tag, credentials)


@task(
    name="build-image",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def build_image(
    backend: BuildBackend,
    repo_path: str,
    spec: ImageSpec,
    tag: str,
    auth: AuthFiles | None,
    no_cache: bool = False,
) -> BuildResult:
    assert spec.path is not None
    older = [] if no_cache else git.candidate_tags(Path(repo_path), spec.path, n=CACHE_DEPTH + 1)
    return core_build_image(
        backend, spec.name, tag, spec.path, older_tags=older, no_cache=no_cache, auth=auth
    )


@task(
    name="push-image",
    cache_policy=NONE,
    retries=RETRIES,
    retry_delay_seconds=BACKOFF,
    retry_condition_fn=retry_transient,
)
def push_image(backend: BuildBackend, reference: str, auth: AuthFiles | None) -> str:
    """Push and return the digest."""
    return backend.push(reference, auth)
