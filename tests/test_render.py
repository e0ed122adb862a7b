"""`hubploy render`: exactly what a deploy would apply, with every secret redacted, no cluster needed."""

from __future__ import annotations

import subprocess

import yaml

from conftest import PROJECT_ROOT
from helpers.cli import run_cli


def _token(hub: str, env: str, sandbox) -> str:  # type: ignore[no-untyped-def]
    out = subprocess.run([sandbox.env["PATH"].split(":")[0] + "/sops", "--decrypt",
                          f"deployments/{hub}/secrets/{env}.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         env={**sandbox.env, "SOPS_AGE_KEY_FILE": str(PROJECT_ROOT / "example-age.key")}, check=True)
    return yaml.safe_load(out.stdout)["jupyterhub"]["proxy"]["secretToken"]


def test_render_shows_layered_values_and_injected_images_without_secrets(sandbox) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("render", "physics", "prod", cwd=PROJECT_ROOT, env=sandbox.env)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Secret", "ConfigMap"} <= kinds
    hub = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "hub")
    assert hub["spec"]["template"]["spec"]["containers"][0]["image"].startswith("localhost:5000/hubploy/physics-hub:")
    assert hub["metadata"]["labels"]["release"] == "physics-prod"
    assert _token("physics", "prod", sandbox) not in result.stdout
    assert all(v == "********" for d in docs if d["kind"] == "Secret" for v in d.get("data", {}).values())


def test_render_errors_are_one_line(sandbox) -> None:  # type: ignore[no-untyped-def]
    missing = run_cli("render", "nosuch", "staging", cwd=PROJECT_ROOT, env=sandbox.env)
    assert missing.returncode == 1 and "no hub named 'nosuch'" in missing.stderr
    assert "Traceback" not in missing.stderr
