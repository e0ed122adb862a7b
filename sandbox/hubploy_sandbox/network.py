"""Each cluster's network: a block of addresses, a Linux bridge, and a local route, on this host.

Addresses come from 198.18.0.0/15, the range set aside for network benchmark tests (RFC 2544): a
host does not use it. Each cluster takes one /20 block of it::

    <block>.0.0/21    pods: a bridge ``hsb<N>`` with the node address <block>.0.1 (the API server,
                      etcd and the agent's kubelet port listen there); each pod gets a network
                      namespace with a veth on the bridge and the next free address
    <block>.8.0/22    Service cluster IPs (the API server's --service-cluster-ip-range)
    <block>.12.0/24   LoadBalancer ingress addresses the agent gives Services
    <block>.8.0/21    routed ``local`` on lo, so the agent's service proxy can listen on any of those
                      addresses and pods reach them through their default route (the node address)

Pod addresses are not loopback addresses (127/8): the API server refuses those in EndpointSlices.
Nothing is routed off the host.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass

from hubploy.runner import child_env, run
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.paths import ClusterPaths

RANGE = ipaddress.IPv4Network("198.18.0.0/15")
BLOCK_PREFIX = 20
BLOCKS = 2 ** (BLOCK_PREFIX - RANGE.prefixlen)  # 32


@dataclass(frozen=True)
class ClusterNetwork:
    block: int

    @property
    def base(self) -> ipaddress.IPv4Address:
        return RANGE.network_address + self.block * 2 ** (32 - BLOCK_PREFIX)

    def _net(self, offset: int, prefix: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{self.base + offset * 256}/{prefix}")

    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        return self._net(0, 21)

    @property
    def service_cidr(self) -> ipaddress.IPv4Network:
        return self._net(8, 22)

    @property
    def load_balancer_cidr(self) -> ipaddress.IPv4Network:
        return self._net(12, 24)

    @property
    def local_cidr(self) -> ipaddress.IPv4Network:
        """Routed local on this host: Service and load-balancer addresses."""
        return self._net(8, 21)

    @property
    def node_ip(self) -> str:
        return str(self.base + 1)

    @property
    def bridge(self) -> str:
        return f"hsb{self.block}"

    def pod_ips(self) -> list[str]:
        """Every address a pod can get, in allocation order."""
        return [str(ip) for ip in self.pod_cidr.hosts() if str(ip) != self.node_ip]

    def load_balancer_ips(self) -> list[str]:
        return [str(ip) for ip in self.load_balancer_cidr.hosts()]


def ip_env() -> dict[str, str]:
    return child_env({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def _existing_bridges(env: Mapping[str, str]) -> set[str]:
    out = run(["ip", "-j", "link", "show", "type", "bridge"], env=env).stdout or "[]"
    return {link["ifname"] for link in json.loads(out)}


def load(cluster: ClusterPaths) -> ClusterNetwork | None:
    """The network recorded for ``cluster`` by :func:`ensure`, or None."""
    try:
        return ClusterNetwork(int(json.loads(cluster.network_file.read_text())["block"]))
    except (OSError, ValueError, KeyError):
        return None


def ensure(cluster: ClusterPaths) -> ClusterNetwork:
    """The cluster's network, set up on this host: its recorded block, or the first block no bridge uses
    (another sandbox's). Idempotent."""
    env = ip_env()
    bridges = _existing_bridges(env)
    net = load(cluster)
    if net is None:
        free = [b for b in range(BLOCKS) if ClusterNetwork(b).bridge not in bridges]
        if not free:
            raise SandboxError(
                f"all {BLOCKS} network blocks of {RANGE} are in use by other sandboxes",
                hint="stop one with `hubploy sandbox down`",
            )
        net = ClusterNetwork(free[0])
        cluster.root.mkdir(parents=True, exist_ok=True)
        cluster.network_file.write_text(json.dumps({"block": net.block}) + "\n")
    if net.bridge not in bridges:
        run(["ip", "link", "add", net.bridge, "type", "bridge"], env=env)
        run(["ip", "addr", "add", f"{net.node_ip}/{net.pod_cidr.prefixlen}", "dev", net.bridge], env=env)
        run(["ip", "link", "set", net.bridge, "up"], env=env)
    routes = run(["ip", "route", "show", "table", "local", str(net.local_cidr)], env=env).stdout
    if not routes.strip():
        run(["ip", "route", "add", "local", str(net.local_cidr), "dev", "lo", "table", "local"], env=env)
    return net


def remove(net: ClusterNetwork) -> None:
    """Delete the cluster's pod namespaces, bridge and local route (what is already gone is fine)."""
    env = ip_env()
    prefix = f"{net.bridge}-"
    for name in run(["ip", "netns", "list"], env=env).stdout.split():
        if name.startswith(prefix):
            run(["ip", "netns", "delete", name], env=env, check=False)
    run(["ip", "link", "delete", net.bridge], env=env, check=False)
    run(
        ["ip", "route", "delete", "local", str(net.local_cidr), "dev", "lo", "table", "local"],
        env=env,
        check=False,
    )
