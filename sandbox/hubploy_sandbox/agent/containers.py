"""What a container runtime decides before it starts a container: the command (image ENTRYPOINT and CMD
against the container's command and args, with ``$(VAR)`` expanded), the user and groups, the working
directory, the environment, whether the program exists, and the stand-in files of its image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubploy_sandbox.agent.envvars import expand
from hubploy_sandbox.agent.volumes import Mount
from hubploy_sandbox.image_envs import ImageEnv


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]


def command(container: dict[str, Any], image: ImageEnv, env: dict[str, str]) -> list[str]:
    """The argv a runtime starts: ``command`` replaces the image's ENTRYPOINT (and drops its CMD); ``args``
    replace its CMD."""
    if container.get("command"):
        argv = list(container["command"]) + list(container.get("args") or [])
    else:
        argv = list(image.entrypoint) + list(container.get("args") or image.cmd)
    return [expand(a, env.get) for a in argv]


def identity(pod: dict[str, Any], container: dict[str, Any], image: ImageEnv) -> Identity:
    """runAsUser / runAsGroup of the container, else of the pod, else the image's user; groups add the
    pod's fsGroup and supplementalGroups."""
    pod_sc = pod["spec"].get("securityContext") or {}
    ctr_sc = container.get("securityContext") or {}
    uid = ctr_sc.get("runAsUser", pod_sc.get("runAsUser", image.user.uid))
    default_gid = image.user.gid if uid == image.user.uid else 0
    gid = ctr_sc.get("runAsGroup", pod_sc.get("runAsGroup", default_gid))
    extra = [pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []
    groups = tuple(dict.fromkeys([gid, *extra, *pod_sc.get("supplementalGroups", [])]))
    return Identity(int(uid), int(gid), tuple(int(g) for g in groups))


def image_file_mounts(image: ImageEnv, cache: Path) -> list[Mount]:
    """The image's programs (stand-ins, the sandbox's kube-scheduler), placed at their paths (read-only)."""
    return [Mount(str(source), target, readonly=True) for target, source in image.file_sources(cache).items()]


def host_path_of(container_path: str, mounts: list[Mount]) -> str:
    """Where ``container_path`` is on the host, given the container's mounts (the last mount covering it
    wins, as later mounts hide earlier ones); the host path itself when no mount covers it."""
    for mount in reversed(mounts):
        target = mount.target.rstrip("/") or "/"
        if container_path == target:
            return mount.source
        if container_path.startswith(target + "/"):
            return os.path.join(mount.source, container_path[len(target) + 1 :])
    return container_path


def find_program(program: str, path: str, mounts: list[Mount]) -> str | None:
    """The container path of ``program`` as execvp would find it in the container, or None."""
    candidates = [program] if "/" in program else [os.path.join(d, program) for d in path.split(":") if d]
    for candidate in candidates:
        if not candidate.startswith("/"):
            continue  # a relative program is resolved against the working dir: not checked here
        host = Path(host_path_of(candidate, mounts))
        if host.is_file() and os.access(host, os.X_OK):
            return candidate
    return None if candidates and all(c.startswith("/") for c in candidates) else program
