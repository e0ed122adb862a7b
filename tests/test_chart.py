"""The example umbrella chart hub/: lint, render, Service protocols, values schema (helm 3 and 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hubploy.errors import CommandError
from hubploy.runner import child_env, run
from hubploy_sandbox.paths import HELM_VERSIONS, SandboxPaths

CHART = Path(__file__).resolve().parent.parent / "hub"


@pytest.fixture(params=sorted(HELM_VERSIONS), ids=lambda v: f"helm{v}")
def helm(request: pytest.FixtureRequest) -> str:
    path = SandboxPaths.from_env().helm_dir(request.param) / "helm"
    assert path.is_file(), f"{path} is missing: run `hubploy sandbox install`"
    return str(path)


def render(helm: str, *args: str) -> list[dict]:
    out = run(
        [helm, "template", "example", str(CHART), "--namespace", "example-staging", *args], env=child_env()
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_lint_passes(helm: str) -> None:
    result = run([helm, "lint", str(CHART), "--strict"], env=child_env(), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_defaults_render_z2jh_like_objects(helm: str) -> None:
    docs = render(helm)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "hub"),
        ("Deployment", "proxy"),
        ("Secret", "hub"),
        ("Service", "hub"),
        ("Service", "proxy-public"),
        ("Deployment", "continuous-image-puller"),
    } <= kinds
    hub = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
    labels = hub["spec"]["template"]["metadata"]["labels"]
    assert labels == {"app": "jupyterhub", "component": "hub", "release": "example"}
    assert "checksum/config-map" in hub["spec"]["template"]["metadata"]["annotations"]
    public = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "proxy-public")
    assert public["spec"]["type"] == "LoadBalancer"


def test_every_service_port_says_tcp(helm: str) -> None:
    services = [
        d
        for d in render(
            helm,
            "--set",
            "jupyterhub.ingress.enabled=true",
            "--set",
            "jupyterhub.ingress.hosts={hub.example.org}",
        )
        if d["kind"] == "Service"
    ]
    assert len(services) >= 3
    for svc in services:
        for port in svc["spec"]["ports"]:
            assert port.get("protocol") == "TCP", (svc["metadata"]["name"], port)


def test_config_change_rolls_the_hub_pod(helm: str) -> None:
    def checksum(*args: str) -> str:
        hub = next(
            d for d in render(helm, *args) if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub"
        )
        return hub["spec"]["template"]["metadata"]["annotations"]["checksum/config-map"]

    assert checksum() != checksum("--set", "jupyterhub.hub.config.JupyterHub.admin_access=false")


def test_images_come_from_values(helm: str) -> None:
    docs = render(
        helm,
        "--set",
        "jupyterhub.singleuser.image.name=localhost:5000/example/user",
        "--set-string",
        "jupyterhub.singleuser.image.tag=abc123",
    )
    puller = next(d for d in docs if d["metadata"]["name"] == "continuous-image-puller")
    assert (
        puller["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost:5000/example/user:abc123"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "jupyterhub.singleuser.image.tag=3"], "tag"),
        (["--set", "jupyterhub.proxy.service.type=Nope"], "type"),
        (["--set", "jupyterhub.hub.nosuchkey=1"], "nosuchkey"),
    ],
)
def test_schema_rejects_bad_values(helm: str, args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as exc:
        render(helm, *args)
    assert message in exc.value.stderr_tail
