"""Prefect tasks for images: tag, registry existence, build, push.

Registry-facing tasks retry up to 3 times with exponential backoff (2, 4, 8 s), but only on
transient failures: a RegistryError that is transient (no answer, 5xx, 429), connection resets and
timeouts, or a failed command whose output shows a network error or a 5xx. Never on 401/403.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff

from hubploy import git
from hubploy.build import CACHE_DEPTH, BuildBackend, BuildResult
from hubploy.build import build_image as core_build_image
from hubploy.config.models import AwsRegistry, AzureRegistry, GcloudRegistry
from hubploy.errors import CommandError, CommandTimeoutError, CredentialsError, RegistryError
from hubploy.images import effective_tag
from hubploy.layout import Hub, ImageSpec, load_repo
from hubploy.registry import AuthFiles, RegistryCredentials, manifest_digest
from hubploy.registry_login import (
    aws_login,
    azure_login,
    credentials_from_env,
    credentials_from_key_files,
    fetch_credentials,
    gcloud_login,
)

RETRIES = 3
BACKOFF = exponential_backoff(backoff_factor=2)
_NETWORK = re.compile(r"connection (refused|reset)|i/o timeout|timed? ?out|no such host|\bEOF\b|broken pipe|"
                      r"\b(50[0234]|429)\b|service unavailable|bad gateway", re.IGNORECASE)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the registry or network may answer next time; 401/403 never will."""
    if isinstance(exc, RegistryError):
        return exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError, CommandTimeoutError)):
        return True
    if isinstance(exc, CommandError):
        return bool(_NETWORK.search(exc.stderr_tail)) and not re.search(r"unauthori[sz]ed|denied|\b40[13]\b",
                                                                        exc.stderr_tail, re.IGNORECASE)
    return False


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as raised:  # a result that cannot be read is itself the failure
        exc = raised
    return isinstance(exc, BaseException) and is_transient(exc)


def credentials_from_block(block_name: str, host: str) -> RegistryCredentials:
    """Username/password from a prefect-docker DockerRegistryCredentials block."""
    from prefect_docker.credentials import DockerRegistryCredentials

    try:
        block = DockerRegistryCredentials.load(block_name)
    except ValueError as exc:
        raise CredentialsError(f"cannot load the DockerRegistryCredentials block {block_name!r}: {exc}",
                               hint="create it in the Prefect UI or with DockerRegistryCredentials(...).save()") from None
    block_host = re.sub(r"^https?://", "", block.registry_url).rstrip("/")
    if block_host != host:
        raise CredentialsError(f"block {block_name!r} holds credentials for {block_host}, not for {host}")
    return RegistryCredentials(host, block.username, block.password.get_secret_value())


@task(name="image-tag", cache_policy=NONE)
def image_tag(repo_path: str, hub_name: str, spec: ImageSpec) -> str:
    """The tag to build and deploy (git-derived or pinned, or a recorded rebuild tag)."""
    return effective_tag(load_repo(repo_path).load_hub(hub_name), spec)


@task(name="image-exists", cache_policy=NONE, retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def image_exists(name: str, tag: str, credentials: RegistryCredentials | None) -> str | None:
    """The digest of ``name:tag`` in its registry, or None when absent."""
    return manifest_digest(name, tag, credentials)


@task(name="build-image", cache_policy=NONE, retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def build_image(backend: BuildBackend, repo_path: str, spec: ImageSpec, tag: str, auth: AuthFiles | None,
                no_cache: bool = False) -> BuildResult:
    assert spec.path is not None
    older = [] if no_cache else git.candidate_tags(Path(repo_path), spec.path, n=CACHE_DEPTH + 1)
    return core_build_image(backend, spec.name, tag, spec.path, older_tags=older, no_cache=no_cache, auth=auth)


@task(name="push-image", cache_policy=NONE, retries=RETRIES, retry_delay_seconds=BACKOFF, retry_condition_fn=retry_transient)
def push_image(backend: BuildBackend, reference: str, auth: AuthFiles | None) -> str:
    """Push and return the digest."""
    return backend.push(reference, auth)


def credentials_from_cloud_block(hub: Hub, host: str, base_env: Mapping[str, str]) -> RegistryCredentials:
    """A registry login with the identity of the per-cloud credentials block named by the hub's
    ``images.registry.<provider>.credentials_block``, in private config dirs (hubploy.cloud)."""
    from blocks.aws import AwsClusterCredentials
    from blocks.azure import AzureClusterCredentials
    from blocks.gcp import GcpClusterCredentials
    from blocks.resolve import load_block
    from hubploy.cloud import aws, azure, gcloud

    registry = hub.config.images.registry  # type: ignore[union-attr]
    settings = registry.settings
    assert settings is not None and settings.credentials_block is not None
    block = load_block(registry.provider, settings.credentials_block)
    match settings, block:
        case GcloudRegistry(), GcpClusterCredentials():
            info = block.service_account_info.get_secret_value() if block.service_account_info else None
            with gcloud.gcloud_env(info, base_env=base_env) as env:
                return fetch_credentials(gcloud_login(Path(env["CLOUDSDK_CONFIG"])), host, base_env=env)
        case AwsRegistry(account_id=account_id, region=region), AwsClusterCredentials():
            secret = block.aws_secret_access_key.get_secret_value() if block.aws_secret_access_key else None
            with aws.aws_env(region=region, access_key_id=block.aws_access_key_id, secret_access_key=secret,
                             role_arn=block.role_arn, session_name="hubploy-registry-auth",
                             base_env=base_env) as env:
                command = aws_login(Path(env["AWS_SHARED_CREDENTIALS_FILE"]).parent, account_id, region)
                return fetch_credentials(command, base_env=env)
        case AzureRegistry(registry=name), AzureClusterCredentials():
            with azure.az_env(client_id=block.client_id, tenant_id=block.tenant_id,
                              client_secret=block.client_secret.get_secret_value(),
                              subscription_id=block.subscription_id, base_env=base_env) as env:
                return fetch_credentials(azure_login(name, env), base_env=env)
    raise CredentialsError(f"a {type(block).__name__} block gives no {registry.provider} registry login")


def hub_registry_credentials(hub: Hub, host: str, base_env: Mapping[str, str]) -> RegistryCredentials | None:
    """Credentials for pushing ``hub``'s images to ``host``: the hub's credentials block
    (DockerRegistryCredentials for dockerconfig, a cloud block otherwise), else its key files, else
    HUBPLOY_REGISTRY_USERNAME/PASSWORD; None for a hub with no registry config and no such env."""
    registry = hub.config.images.registry if hub.config.images else None
    if registry is None:
        return credentials_from_env(host, base_env)
    block_name = registry.settings.credentials_block if registry.settings else None
    if block_name and registry.provider == "dockerconfig":
        return credentials_from_block(block_name, host)
    if block_name:
        return credentials_from_cloud_block(hub, host, base_env)
    return credentials_from_key_files(hub, host, base_env)
