"""A container's environment as a kubelet builds it: Service variables, ``envFrom``, ``env`` with
``valueFrom`` and ``$(VAR)`` references, and the ``$(VAR)`` expansion of command and args."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from hubploy_sandbox.agent.rest import Api, ApiError, path

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}


class ConfigMissing(Exception):
    """A referenced ConfigMap, Secret or key does not exist (kubelet: CreateContainerConfigError)."""


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    cluster_ip: str
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is a literal ``$``; an undefined ``$(VAR)`` stays as it is."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    value = lookup(name)
                    out.append(value if value is not None else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def service_env(services: list[ServiceInfo]) -> dict[str, str]:
    """``<NAME>_SERVICE_HOST``, ``_SERVICE_PORT``, ``_SERVICE_PORT_<PORT>`` and the Docker-link style
    ``<NAME>_PORT*`` variables for Services with a cluster IP."""
    env: dict[str, str] = {}
    for svc in services:
        if not svc.cluster_ip or svc.cluster_ip == "None" or not svc.ports:
            continue
        prefix = svc.name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = svc.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(svc.ports[0][1])
        for port_name, port, _ in svc.ports:
            if port_name:
                env[f"{prefix}_SERVICE_PORT_{port_name.upper().replace('-', '_')}"] = str(port)
        first = svc.ports[0]
        env[f"{prefix}_PORT"] = f"{first[2].lower()}://{svc.cluster_ip}:{first[1]}"
        for _, port, protocol in svc.ports:
            key = f"{prefix}_PORT_{port}_{protocol.upper()}"
            env[key] = f"{protocol.lower()}://{svc.cluster_ip}:{port}"
            env[f"{key}_PROTO"] = protocol.lower()
            env[f"{key}_PORT"] = str(port)
            env[f"{key}_ADDR"] = svc.cluster_ip
    return env


def parse_quantity(text: str) -> Decimal:
    match = re.fullmatch(r"([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)", str(text).strip())
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIXES[match.group(2)])


class Sources:
    """Reads ConfigMaps and Secrets of one namespace (cached for one pod start)."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self._cache: dict[tuple[str, str], dict[str, bytes] | None] = {}

    def raw(self, kind: str, name: str) -> dict[str, bytes] | None:
        """The data of ConfigMap or Secret ``name`` (``kind`` "configMap" or "secret"), None if missing."""
        key = (kind, name)
        if key not in self._cache:
            try:
                if kind == "secret":
                    obj = self.api.get(path("secrets", self.namespace, name))
                    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                else:
                    obj = self.api.get(path("configmaps", self.namespace, name))
                    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
                self._cache[key] = data
            except ApiError as exc:
                if exc.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def data(self, kind: str, name: str) -> dict[str, str] | None:
        """Like :meth:`raw`, decoded as text (for environment variables)."""
        raw = self.raw(kind, name)
        return None if raw is None else {k: v.decode(errors="replace") for k, v in raw.items()}

    def key(self, kind: str, ref: Mapping[str, Any]) -> str | None:
        data = self.data(kind, ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                return None
            what = f"{kind} {self.namespace}/{ref['name']}"
            raise ConfigMissing(
                f"{what} not found" if data is None else f"key {ref['key']!r} not found in {what}"
            )
        return data[ref["key"]]


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in values:
        raise ConfigMissing(f"fieldRef {path!r} is not supported")
    return values[path]


def resource_value(
    container: Mapping[str, Any], ref: Mapping[str, Any], allocatable: Mapping[str, str]
) -> str:
    """``resourceFieldRef``: a limit or request of the container (a limit defaults to the node's
    allocatable amount), divided by the divisor and rounded up, as a kubelet does."""
    kind, _, resource = ref["resource"].partition(".")
    raw = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if raw is None:
        raw = allocatable.get(resource, "0") if kind == "limits" else "0"
    divisor = parse_quantity(str(ref.get("divisor") or "1"))
    return str((parse_quantity(raw) / divisor).to_integral_value(rounding=ROUND_CEILING))


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    sources: Sources,
    services: Mapping[str, str],
    pod_ip: str,
    host_ip: str,
    allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment variables (Service variables, then ``envFrom``, then ``env``)."""
    defined: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = (
            ("configMap", source["configMapRef"])
            if "configMapRef" in source
            else ("secret", source["secretRef"])
        )
        data = sources.data(kind, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigMissing(f"{kind} {sources.namespace}/{ref['name']} not found")
        for key, data_value in data.items():
            name = source.get("prefix", "") + key
            if ENV_NAME.match(name):
                defined[name] = data_value

    def lookup(name: str) -> str | None:
        return defined.get(name, services.get(name))

    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            defined[var["name"]] = expand(var.get("value", ""), lookup)
            continue
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"], allocatable)
        elif "configMapKeyRef" in source:
            value = sources.key("configMap", source["configMapKeyRef"])
        elif "secretKeyRef" in source:
            value = sources.key("secret", source["secretKeyRef"])
        else:
            raise ConfigMissing(f"env {var['name']}: unsupported valueFrom")
        if value is not None:
            defined[var["name"]] = value
    return {**services, **defined}
