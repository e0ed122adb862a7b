"""Rendering the example umbrella chart hub/ and its dependency sandbox/charts/jupyterhub with helm."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import yaml

from hubploy.runner import child_env, run
from hubploy_sandbox.paths import SandboxPaths

PROJECT = Path(__file__).resolve().parents[2]
UMBRELLA = PROJECT / "hub"
SUBCHART = PROJECT / "sandbox" / "charts" / "jupyterhub"
RELEASE = "example"
NAMESPACE = "example-staging"


def helm_path(major: str) -> str:
    path = SandboxPaths.from_env().helm_dir(major) / "helm"
    assert path.is_file(), f"{path} is missing: run `hubploy sandbox install`"
    return str(path)


def vendored_umbrella(root: Path) -> Path:
    """A copy of hub/ under ``root`` whose charts/ holds the jupyterhub chart as it is in the work tree
    (helm takes an unpacked dependency there), so renders never use a stale hub/charts/*.tgz."""
    chart = root / "hub"
    shutil.copytree(UMBRELLA, chart, ignore=shutil.ignore_patterns("charts"))
    shutil.copytree(SUBCHART, chart / "charts" / "jupyterhub", ignore=shutil.ignore_patterns("__pycache__"))
    return chart


def render(
    helm: str, chart: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict]:
    """``helm template`` -> the rendered objects; a failure raises hubploy's CommandError."""
    out = run(
        [helm, "template", release, str(chart), "--namespace", namespace, *args], env=child_env()
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found in {names}"
    return matches[0]


def secret_data(secret: dict) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def hub_files(docs: list[dict], target: Path) -> Path:
    """Lay the hub ConfigMap and Secret out under ``target`` as the hub pod mounts them under
    /usr/local/etc/jupyterhub/: jupyterhub_config.py and z2jh.py beside config/ and secret/."""
    config = find(docs, "ConfigMap", "hub")["data"]
    for directory, files in (("config", config), ("secret", secret_data(find(docs, "Secret", "hub")))):
        (target / directory).mkdir(parents=True)
        for key, text in files.items():
            (target / directory / key).write_text(text)
    for name in ("jupyterhub_config.py", "z2jh.py"):
        (target / name).write_text(config[name])
    return target
