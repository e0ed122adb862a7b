"""`hubploy render`: exactly what a deploy would apply, with every secret redacted, no cluster needed."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from conftest import PROJECT_ROOT
from helpers.cli import run_cli

from hubploy.layout import load_repo
from hubploy.render import prepared_values, template
from hubploy.runner import run


def _token(hub: str, env: str, sandbox) -> str:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [sandbox.env["PATH"].split(":")[0] + "/sops", "--decrypt", f"deployments/{hub}/secrets/{env}.yaml"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**sandbox.env, "SOPS_AGE_KEY_FILE": str(PROJECT_ROOT / "example-age.key")},
        check=True,
    )
    return yaml.safe_load(out.stdout)["jupyterhub"]["proxy"]["secretToken"]


def test_render_shows_layered_values_and_injected_images_without_secrets(sandbox) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("render", "physics", "prod", cwd=PROJECT_ROOT, env=sandbox.env)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Secret", "ConfigMap"} <= kinds
    hub = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
    assert hub["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "localhost:5000/hubploy/physics-hub:"
    )
    assert hub["metadata"]["labels"]["release"] == "physics-prod"
    assert _token("physics", "prod", sandbox) not in result.stdout
    assert all(v == "********" for d in docs if d["kind"] == "Secret" for v in d.get("data", {}).values())


def test_render_errors_are_one_line(sandbox) -> None:  # type: ignore[no-untyped-def]
    missing = run_cli("render", "nosuch", "staging", cwd=PROJECT_ROOT, env=sandbox.env)
    assert missing.returncode == 1 and "no hub named 'nosuch'" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("helm_version", ["3", "4"])
@pytest.mark.parametrize(
    "hub,env_name", [("minimal", "staging"), ("minimal", "prod"), ("physics", "staging"), ("physics", "prod")]
)
def test_every_example_hub_lints_and_renders_with_its_layered_values(
    sandbox,
    hub: str,
    env_name: str,  # type: ignore[no-untyped-def]
    helm_version: str,
) -> None:
    env = sandbox.env_for(helm_version)
    repo = load_repo(PROJECT_ROOT)
    with prepared_values(repo, repo.load_hub(hub), env_name, base_env=env) as prepared:
        lint = run(
            [env["HELM_EXECUTABLE"], "lint", str(prepared.chart), "--strict", *prepared.values_args],
            env=env,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        docs = [d for d in yaml.safe_load_all(template(prepared, env=env)) if d]
    # the images the release's pods run: the hub's and proxy's, and the user image in the pullers' init
    # containers
    images = {
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")
        for c in d["spec"]["template"]["spec"]["containers"]
        + d["spec"]["template"]["spec"].get("initContainers", [])
    }
    for spec in repo.load_hub(hub).images:  # every image of the hub is injected at its substitution path
        assert any(i.startswith(f"{spec.name}:") for i in images), (spec.name, images)
