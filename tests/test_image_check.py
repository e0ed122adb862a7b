"""The image check fit for public images (issue 20, point 5): registry v2 anonymous token auth against a real
token service of our own on loopback in front of the sandbox registry (tests/helpers/token_registry.py),
errors that name the image, its registry and how to scope the check, and hubploy.yaml's `image_check`."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from helpers.cli import run_cli
from helpers.token_registry import SERVICE, TokenRegistry, serving

from hubploy.config.models import HubConfig, ImageCheck
from hubploy.deploy import check_images, registry_image_digest
from hubploy.errors import DeployError, RegistryError
from hubploy.registry import RegistryCredentials, manifest_digest
from hubploy.runner import REDACTED, redact
from hubploy.validate import validate_repo

ROBOT = ("robot", "robot-password-4821")


@pytest.fixture
def token_registry(sandbox) -> Iterator[TokenRegistry]:  # type: ignore[no-untyped-def]
    """quay.io's way of serving images: jupyterhub/* public, the rest for the robot account only."""
    registry = TokenRegistry(
        upstream=f"http://{sandbox.registry}",
        upstream_auth=sandbox.registry_auth,
        public=("jupyterhub/*",),
        users=dict([ROBOT]),
    )
    with serving(registry):
        yield registry


def _sandbox_digest(sandbox, repository: str, tag: str) -> str | None:  # type: ignore[no-untyped-def]
    return manifest_digest(
        f"{sandbox.registry}/{repository}", tag, RegistryCredentials(sandbox.registry, *sandbox.registry_auth)
    )


@pytest.mark.sandbox
def test_public_images_are_found_with_anonymous_token_auth(token_registry: TokenRegistry, sandbox) -> None:  # type: ignore[no-untyped-def]
    name = f"{token_registry.host}/jupyterhub/k8s-hub"
    digest = manifest_digest(name, "4.4.0")
    assert digest is not None and digest == _sandbox_digest(sandbox, "jupyterhub/k8s-hub", "4.4.0")
    assert manifest_digest(name, "no-such-tag") is None  # absent, not an error
    # the token service was asked as the challenge said, anonymously, and the token is never logged
    assert token_registry.token_requests[0] == {
        "service": SERVICE,
        "scope": "repository:jupyterhub/k8s-hub:pull",
        "basic": "False",
    }
    assert all(redact(token) == REDACTED for token in token_registry._tokens)


@pytest.mark.sandbox
def test_a_private_image_needs_a_login_and_is_not_called_absent(
    token_registry: TokenRegistry, sandbox
) -> None:  # type: ignore[no-untyped-def]
    name = f"{token_registry.host}/base/busybox"
    with pytest.raises(RegistryError) as refused:
        manifest_digest(name, "latest")
    assert refused.value.status == 401 and token_registry.host in refused.value.message
    robot = RegistryCredentials(token_registry.host, *ROBOT)
    assert manifest_digest(name, "latest", robot) == _sandbox_digest(sandbox, "base/busybox", "latest")
    assert token_registry.token_requests[-1]["basic"] == "True"


@pytest.mark.sandbox
def test_the_deploy_check_logs_in_only_where_refused(token_registry: TokenRegistry) -> None:
    host = token_registry.host
    merged = {
        "jupyterhub": {
            "hub": {"image": {"name": f"{host}/jupyterhub/k8s-hub", "tag": "4.4.0"}},
            "singleuser": {"image": {"name": f"{host}/base/busybox", "tag": "latest"}},
        }
    }
    asked: list[str] = []

    def login(wanted: str) -> RegistryCredentials:
        asked.append(wanted)
        return RegistryCredentials(wanted, *ROBOT)

    refs = check_images(merged, registry_image_digest({}, login))
    assert [r.reference for r in refs if r.digest and r.checked] == [
        f"{host}/jupyterhub/k8s-hub:4.4.0",
        f"{host}/base/busybox:latest",
    ]
    assert asked == [host]  # once, for the private image; the public one needed no login
    merged["jupyterhub"]["hub"]["image"]["tag"] = "4.9.9"
    with pytest.raises(DeployError, match=rf"{host}/jupyterhub/k8s-hub:4.9.9 \(at jupyterhub.hub.image\)"):
        check_images(merged, registry_image_digest({}, login))


def test_an_unreachable_registry_names_the_image_the_registry_and_the_scoping() -> None:
    merged = {"jupyterhub": {"hub": {"image": {"name": "127.0.0.1:9/jupyterhub/k8s-hub", "tag": "4.4.0"}}}}
    with pytest.raises(RegistryError) as unreachable:
        check_images(merged, registry_image_digest({}, None))
    text = str(unreachable.value)
    assert "cannot check image 127.0.0.1:9/jupyterhub/k8s-hub:4.4.0 (at jupyterhub.hub.image)" in text
    assert "in registry 127.0.0.1:9" in text and "image_check: {skip: [127.0.0.1:9]}" in text
    assert "image_check: {only: built}" in text
    assert unreachable.value.transient  # no answer at all: worth retrying


def _lookups(merged: dict, check: ImageCheck, built: set[str]) -> list[str]:
    asked: list[str] = []

    def digest(name: str, tag: str) -> str:
        asked.append(f"{name}:{tag}")
        return "sha256:1"

    check_images(merged, digest, scope=check, built=built)
    return asked


MERGED = {
    "jupyterhub": {
        "hub": {"image": {"name": "quay.io/jupyterhub/k8s-hub", "tag": "4.4.0"}},
        "proxy": {"chp": {"image": {"name": "quay.io/jupyterhub/configurable-http-proxy", "tag": "5.2.0"}}},
        "singleuser": {"image": {"name": "us-docker.pkg.dev/org/hubs/user", "tag": "abc1234"}},
        "prePuller": {"pause": {"image": {"name": "pause", "tag": "3.10"}}},
    }
}


@pytest.mark.parametrize(
    "check,looked_up",
    [
        (
            {},
            [
                "quay.io/jupyterhub/k8s-hub:4.4.0",
                "quay.io/jupyterhub/configurable-http-proxy:5.2.0",
                "us-docker.pkg.dev/org/hubs/user:abc1234",
                "pause:3.10",
            ],
        ),
        ({"only": "built"}, ["us-docker.pkg.dev/org/hubs/user:abc1234"]),
        ({"skip": ["quay.io"]}, ["us-docker.pkg.dev/org/hubs/user:abc1234", "pause:3.10"]),
        (
            {"skip": ["docker.io", "quay.io/jupyterhub/configurable-*"]},
            ["quay.io/jupyterhub/k8s-hub:4.4.0", "us-docker.pkg.dev/org/hubs/user:abc1234"],
        ),
        (
            {"only": ["us-docker.pkg.dev/org/*", "docker.io/library/*"]},
            ["us-docker.pkg.dev/org/hubs/user:abc1234", "pause:3.10"],
        ),
    ],
)
def test_image_check_scopes_what_is_looked_up(check: dict, looked_up: list[str], caplog) -> None:  # type: ignore[no-untyped-def]
    scope = HubConfig.model_validate({"image_check": check}).image_check
    with caplog.at_level(logging.INFO, logger="hubploy.deploy"):
        assert sorted(_lookups(MERGED, scope, {"us-docker.pkg.dev/org/hubs/user"})) == sorted(looked_up)
    if len(looked_up) < 4:
        assert "images not looked up (image_check in hubploy.yaml)" in caplog.text


def test_image_check_is_in_the_schema_and_validated(deployment_repo) -> None:  # type: ignore[no-untyped-def]
    schema = json.loads(run_cli("schema", cwd=PROJECT_ROOT).stdout)
    assert "image_check" in schema["properties"]
    assert {"only", "skip"} <= set(schema["$defs"]["ImageCheck"]["properties"])
    root = deployment_repo({"deployments/h/hubploy.yaml": "image_check: {only: some, skip: ['']}\n"})
    found = [i.format(root) for i in validate_repo(Path(root))]
    assert any(line.startswith("deployments/h/hubploy.yaml:1: image_check.only:") for line in found), found
    assert any(line.startswith("deployments/h/hubploy.yaml:1: image_check.skip:") for line in found), found
