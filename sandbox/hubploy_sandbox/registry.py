"""The local OCI registry (apt docker-registry) on loopback, with htpasswd auth (platform.md §4)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping

import yaml

from hubploy.runner import register_secret, run
from hubploy_sandbox.health import http_status
from hubploy_sandbox.paths import REGISTRY_USER, SandboxPaths


def password(paths: SandboxPaths) -> str:
    """The registry password, generated once per runtime dir and kept there with mode 0600."""
    file = paths.registry_password
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(secrets.token_urlsafe(18))
        tmp.replace(file)
    value = file.read_text().strip()
    register_secret(value)
    return value


def configure(paths: SandboxPaths, env: Mapping[str, str]) -> None:
    """Write htpasswd and config.yml (idempotent)."""
    reg = paths.registry_dir
    (reg / "data").mkdir(parents=True, exist_ok=True)
    pw = password(paths)
    htpasswd = reg / "htpasswd"
    if not htpasswd.exists():
        out = run(["htpasswd", "-Bbn", REGISTRY_USER, pw], env=env, secrets=[pw]).stdout
        htpasswd.write_text(out.strip() + "\n")
        htpasswd.chmod(0o600)
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(reg / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{paths.ports.registry}"},
        "auth": {"htpasswd": {"realm": "hubploy-sandbox", "path": str(htpasswd)}},
    }
    (reg / "config.yml").write_text(yaml.safe_dump(config))


def argv(paths: SandboxPaths) -> list[str]:
    return ["docker-registry", "serve", str(paths.registry_dir / "config.yml")]


def ready(paths: SandboxPaths) -> bool:
    """/v2/ answers 401 without and 200 with the credentials."""
    url = f"http://127.0.0.1:{paths.ports.registry}/v2/"
    return http_status(url, basic=(REGISTRY_USER, password(paths))) == 200


def manifest_status(paths: SandboxPaths, repository: str, tag: str) -> int | None:
    """HTTP status of a manifest HEAD for ``repository:tag`` (200 present, 404 missing)."""
    url = f"http://127.0.0.1:{paths.ports.registry}/v2/{repository}/manifests/{tag}"
    accept = (
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, "
        "application/vnd.oci.image.index.v1+json"
    )
    return http_status(url, method="HEAD", basic=(REGISTRY_USER, password(paths)), headers={"Accept": accept})


def auth_json(paths: SandboxPaths) -> str:
    """A containers-auth.json (buildah, skopeo, podman) holding the registry credentials."""
    token = base64.b64encode(f"{REGISTRY_USER}:{password(paths)}".encode()).decode()
    hosts = [paths.registry_host, f"127.0.0.1:{paths.ports.registry}"]
    return json.dumps({"auths": {h: {"auth": token} for h in hosts}}, indent=2)
