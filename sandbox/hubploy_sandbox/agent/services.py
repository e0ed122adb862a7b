"""Services, as kube-proxy and a cloud load balancer would serve them, and cluster names for pods.

* :class:`ServiceIndex` knows every Service (for the ``<NAME>_SERVICE_*`` variables of new containers
  and the pods' /etc/hosts, rewritten when Services change).
* LoadBalancer Services get the next free address of the cluster's load-balancer range in their status.
* :class:`ServiceProxy` is a userspace proxy (as kube-proxy's first mode was): it listens on every
  Service's cluster IP (and load-balancer address) and port that has a ready endpoint in its
  EndpointSlices, and forwards each connection to one of them, round robin. TCP only.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubploy_sandbox.agent.envvars import ServiceInfo
from hubploy_sandbox.agent.rest import Api, ApiError, path
from hubploy_sandbox.network import ClusterNetwork

log = logging.getLogger("hubploy_sandbox.agent")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service_info(svc: dict[str, Any]) -> ServiceInfo:
    spec = svc["spec"]
    ports = tuple(
        (p.get("name", ""), int(p["port"]), p.get("protocol", "TCP")) for p in spec.get("ports") or []
    )
    return ServiceInfo(svc["metadata"]["name"], spec.get("clusterIP", ""), ports)


class ServiceIndex:
    """Every Service of the cluster; ``on_change`` is called after each change."""

    def __init__(self) -> None:
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.listeners: list[Callable[[], None]] = []

    def handle(self, kind: str, svc: dict[str, Any]) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self._services.pop(key, None)
            else:
                self._services[key] = svc
        for listener in self.listeners:
            listener()

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._services.get((namespace, name))

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._services.values())

    def for_env(self, namespace: str, *, links: bool = True) -> list[ServiceInfo]:
        """The Services of a pod's variables: ``kubernetes`` of ``default``, and with ``links``
        (enableServiceLinks) those of the pod's namespace."""
        return [
            service_info(s)
            for (ns, name), s in sorted(self._snapshot().items())
            if (links and ns == namespace) or (ns, name) == ("default", "kubernetes")
        ]

    def names(self) -> list[tuple[str, str, str]]:
        return [(ns, name, s["spec"].get("clusterIP", "")) for (ns, name), s in self._snapshot().items()]

    def _snapshot(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            return dict(self._services)


class LoadBalancers:
    """Gives LoadBalancer Services an address of the cluster's load-balancer range (kept across restarts:
    the address is read back from the Services' status)."""

    def __init__(self, api: Api, network: ClusterNetwork) -> None:
        self.api, self.network = api, network
        self._taken: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def handle(self, kind: str, svc: dict[str, Any]) -> None:
        meta, spec = svc["metadata"], svc["spec"]
        key = (meta["namespace"], meta["name"])
        ingress = [
            i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ]
        with self._lock:
            if kind == "DELETED" or spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
                self._taken.pop(key, None)
                return
            if ingress and ingress[0] in self.network.load_balancer_ips():
                self._taken[key] = ingress[0]
                return
            used = set(self._taken.values())
            address = next((ip for ip in self.network.load_balancer_ips() if ip not in used), None)
            if address is None:
                log.error("service %s/%s: no free load-balancer address", *key)
                return
            self._taken[key] = address
        status = {"status": {"loadBalancer": {"ingress": [{"ip": address, "ipMode": "VIP"}]}}}
        try:
            self.api.merge_patch(path("services", key[0], key[1], subresource="status"), status)
            log.info("service %s/%s: load balancer %s", key[0], key[1], address)
        except ApiError as exc:
            if exc.status != 404:
                raise


@dataclass
class Backends:
    """Ready endpoints of one Service port name, picked round robin."""

    addresses: list[tuple[str, int]] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)

    def pick(self) -> tuple[str, int] | None:
        if not self.addresses:
            return None
        return self.addresses[next(self.counter) % len(self.addresses)]


class ServiceProxy:
    """Listeners on Service addresses, forwarding to endpoints; runs an asyncio loop in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._servers: dict[tuple[str, int], tuple[asyncio.AbstractServer, tuple[str, str, str]]] = {}
        self._slices: dict[tuple[str, str], dict[str, Any]] = {}  # (ns, slice name) -> slice
        self._backends: dict[tuple[str, str, str], Backends] = {}  # (ns, service, port name)
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self.thread = threading.Thread(target=self.loop.run_forever, name="service-proxy", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    # --- informer callbacks (from watch threads) --------------------------------------------------------
    def service_changed(self, kind: str, svc: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(self._service_changed(kind, svc), self.loop).result(timeout=30)

    def slice_changed(self, kind: str, eps: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(self._slice_changed(kind, eps), self.loop).result(timeout=30)

    # --- inside the loop ------------------------------------------------------------------------------
    def _wanted(self, svc: dict[str, Any]) -> dict[tuple[str, int], tuple[str, str, str]]:
        """(address, port) -> (namespace, service, port name) this Service should be served on."""
        meta, spec = svc["metadata"], svc["spec"]
        addresses = [spec.get("clusterIP")] if spec.get("clusterIP") not in (None, "", "None") else []
        if spec.get("type") == "LoadBalancer":
            ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            addresses += [i["ip"] for i in ingress if i.get("ip")]
        wanted = {}
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                continue
            for address in addresses:
                wanted[(address, int(port["port"]))] = (meta["namespace"], meta["name"], port.get("name", ""))
        return wanted

    async def _service_changed(self, kind: str, svc: dict[str, Any]) -> None:
        key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
        if kind == "DELETED":
            self._services.pop(key, None)
        else:
            self._services[key] = svc
        await self._sync_listeners()

    async def _sync_listeners(self) -> None:
        """Listen exactly on the addresses of Service ports that have a ready endpoint: with none, nothing
        listens and a connection is refused, as kube-proxy's REJECT rule makes it."""
        wanted: dict[tuple[str, int], tuple[str, str, str]] = {}
        for service in self._services.values():
            wanted.update(
                {
                    addr: target
                    for addr, target in self._wanted(service).items()
                    if self._backends.get(target, Backends()).addresses
                }
            )
        for addr in [a for a in self._servers if self._servers[a][1] != wanted.get(a)]:
            server, _ = self._servers.pop(addr)
            server.close()
        for addr, target in wanted.items():
            if addr in self._servers:
                continue
            try:
                server = await asyncio.start_server(
                    functools.partial(self._forward, target=target),
                    host=addr[0],
                    port=addr[1],
                    reuse_address=True,
                )
            except OSError as exc:
                log.error(
                    "service %s/%s: cannot listen on %s:%s: %s", target[0], target[1], addr[0], addr[1], exc
                )
                continue
            self._servers[addr] = (server, target)

    async def _slice_changed(self, kind: str, eps: dict[str, Any]) -> None:
        meta = eps["metadata"]
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return
        if kind == "DELETED":
            self._slices.pop((meta["namespace"], meta["name"]), None)
        else:
            self._slices[(meta["namespace"], meta["name"])] = eps
        self._rebuild(meta["namespace"], service)
        await self._sync_listeners()

    def _rebuild(self, namespace: str, service: str) -> None:
        by_port: dict[str, list[tuple[str, int]]] = {}
        for (ns, _), eps in self._slices.items():
            if ns != namespace or (eps["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
                continue
            ready = [
                a
                for e in eps.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True)
                for a in e.get("addresses") or []
            ]
            for port in eps.get("ports") or []:
                if port.get("port") is not None:
                    by_port.setdefault(port.get("name", ""), []).extend((a, int(port["port"])) for a in ready)
        for key in [k for k in self._backends if k[:2] == (namespace, service)]:
            self._backends[key].addresses = []
        for name, addresses in by_port.items():
            self._backends.setdefault((namespace, service, name), Backends()).addresses = sorted(
                set(addresses)
            )

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: tuple[str, str, str]
    ) -> None:
        backend = self._backends.get(target, Backends()).pick()
        if backend is None:  # the last endpoint went away after the connection was accepted
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*backend), timeout=10)
        except (TimeoutError, OSError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; at its end, half-close the other side (the reverse direction may go on)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.IncompleteReadError):
        writer.close()
