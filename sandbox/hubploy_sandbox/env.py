"""The environment that points hubploy, helm, kubectl, sops and buildah at the sandbox."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping

from hubploy_sandbox import registry, tools
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.lifecycle import external_kubeconfig
from hubploy_sandbox.paths import REGISTRY_USER, SandboxPaths

ENV_NAMES = (
    "KUBECONFIG",
    "HELM_EXECUTABLE",
    "HUBPLOY_REGISTRY",
    "HUBPLOY_REGISTRY_USERNAME",
    "HUBPLOY_REGISTRY_PASSWORD",
    "SOPS_AGE_KEY_FILE",
    "PATH",
)


def sandbox_env(
    paths: SandboxPaths | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Exactly the variables of ENV_NAMES for a running sandbox (raises SandboxError if it is not up).

    HELM_EXECUTABLE follows HUBPLOY_HELM_VERSION (3 or 4, default 3) at call time.
    """
    base = os.environ if environ is None else environ
    paths = paths or SandboxPaths.from_env(base)
    if not paths.registry_password.exists() or not paths.bin.is_dir():
        raise SandboxError(f"no sandbox is running in {paths.runtime}", hint="run `hubploy sandbox up`")
    kubeconfig = external_kubeconfig(paths) or paths.kubeconfig
    sandbox_bin = str(paths.bin)
    rest = [p for p in base.get("PATH", os.defpath).split(os.pathsep) if p and p != sandbox_bin]
    return {
        "KUBECONFIG": str(kubeconfig),
        "HELM_EXECUTABLE": str(paths.bin / f"helm{tools.helm_major(base)}"),
        "HUBPLOY_REGISTRY": paths.registry_host,
        "HUBPLOY_REGISTRY_USERNAME": REGISTRY_USER,
        "HUBPLOY_REGISTRY_PASSWORD": registry.password(paths),
        "SOPS_AGE_KEY_FILE": str(paths.age_key),
        "PATH": os.pathsep.join([sandbox_bin, *rest]),
    }


def shell_exports(env: Mapping[str, str]) -> str:
    """``export NAME=value`` lines, shell-quoted, in ENV_NAMES order."""
    return "".join(f"export {name}={shlex.quote(env[name])}\n" for name in ENV_NAMES if name in env)
