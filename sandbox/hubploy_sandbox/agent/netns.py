"""Pod network namespaces, as a CNI bridge plugin makes them: one namespace per pod with ``lo`` and an
``eth0`` veth on the cluster's bridge, the pod's address, and a default route via the node address.
Addresses are handed out by :class:`Addresses`."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from hubploy.runner import run
from hubploy_sandbox.network import ClusterNetwork, ip_env

NETNS_DIR = Path("/run/netns")


class Addresses:
    """Pod addresses of one cluster: each pod keeps its address until released."""

    def __init__(self, network: ClusterNetwork) -> None:
        self._free = network.pod_ips()
        self._taken: dict[str, str] = {}
        self._lock = threading.Lock()

    def take(self, uid: str, wanted: str | None = None) -> str:
        """The address of pod ``uid`` (``wanted`` if it is still free, e.g. after an agent restart)."""
        with self._lock:
            if uid in self._taken:
                return self._taken[uid]
            if wanted in self._free:
                self._free.remove(wanted)
                address = wanted
            else:
                if not self._free:
                    raise RuntimeError("no free pod address")
                address = self._free.pop(0)
            self._taken[uid] = address
            return address

    def release(self, uid: str) -> None:
        with self._lock:
            address = self._taken.pop(uid, None)
            if address is not None:
                self._free.insert(0, address)


def namespace_name(network: ClusterNetwork, uid: str) -> str:
    return f"{network.bridge}-{uid}"


def _veth(uid: str) -> str:
    return "v" + hashlib.sha1(uid.encode()).hexdigest()[:12]  # interface names have at most 15 characters


def create(network: ClusterNetwork, uid: str, address: str) -> Path:
    """Create (or recreate) the namespace of pod ``uid``; returns its path for setns."""
    env = ip_env()
    name = namespace_name(network, uid)
    delete(network, uid)
    run(["ip", "netns", "add", name], env=env)
    host_side = _veth(uid)
    run(["ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", name], env=env)
    run(["ip", "link", "set", host_side, "master", network.bridge, "up"], env=env)
    inside = (
        f"addr add {address}/{network.pod_cidr.prefixlen} dev eth0\nlink set lo up\nlink set eth0 up\n"
        f"route add default via {network.node_ip}\n"
    )
    run(["ip", "-n", name, "-batch", "-"], env=env, input=inside)
    return NETNS_DIR / name


def delete(network: ClusterNetwork, uid: str) -> None:
    """Remove the pod's namespace (its veth goes with it); nothing if there is none."""
    name = namespace_name(network, uid)
    if (NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name], env=ip_env(), check=False)
