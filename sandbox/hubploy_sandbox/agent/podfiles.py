"""The files a kubelet and a container runtime give a container besides its volumes: /etc/hosts (here
it also resolves Services, standing in for cluster DNS), /etc/resolv.conf, and /etc/passwd and
/etc/group entries for the container's user."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hubploy_sandbox.image_envs import User
from hubploy_sandbox.paths import CLUSTER_DOMAIN


def hosts(*, pod_ip: str, hostname: str, namespace: str, services: Iterable[tuple[str, str, str]]) -> str:
    """``services`` are (namespace, name, cluster IP). A Service of the pod's own namespace also resolves
    by its short name, as the DNS search path makes it."""
    lines = [
        "# Kubernetes-managed hosts file (hubploy sandbox agent): the pod and the cluster's Services.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{pod_ip}\t{hostname}",
    ]
    for ns, name, ip in sorted(services):
        if not ip or ip == "None":
            continue
        names = [f"{name}.{ns}.svc.{CLUSTER_DOMAIN}", f"{name}.{ns}.svc", f"{name}.{ns}"]
        if ns == namespace:
            names.append(name)
        lines.append(f"{ip}\t{' '.join(names)}")
    return "\n".join(lines) + "\n"


def resolv_conf(namespace: str, nameserver: str) -> str:
    """Search paths as cluster DNS has them; the nameserver is the node address, where nothing answers on
    port 53, so a name that is not in /etc/hosts fails at once instead of timing out."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"nameserver {nameserver}\nsearch {search}\noptions ndots:5 timeout:1 attempts:1\n"


def write_in_place(path: Path, text: str) -> None:
    """Replace the content of ``path`` keeping its inode (a bind mount of it shows the new content)."""
    with open(path, "r+" if path.exists() else "w") as handle:
        handle.seek(0)
        handle.write(text)
        handle.truncate()


def passwd_and_group(user: User, uid: int, gid: int) -> tuple[str, str]:
    """The host's passwd and group, plus entries for ``uid``/``gid`` when the host has none (named after
    the image's user when the uid is the image's)."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    uids = {line.split(":")[2] for line in passwd.splitlines() if line.count(":") >= 6}
    gids = {line.split(":")[2] for line in group.splitlines() if line.count(":") >= 3}
    name = user.name if uid == user.uid else f"user{uid}"
    home = user.home if uid == user.uid else "/"
    if str(uid) not in uids:
        passwd += f"{name}:x:{uid}:{gid}::{home}:/bin/sh\n"
    if str(gid) not in gids:
        group += f"{name}:x:{gid}:\n"
    return passwd, group


def home_of(passwd: str, uid: int) -> str:
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2] == str(uid):
            return fields[5] or "/"
    return "/"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o644)
    return path
