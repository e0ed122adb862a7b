"""The node, as a kubelet keeps it: registered with its capacity and addresses, its status reported,
and its Lease in ``kube-node-lease`` renewed every 10 s, so the node lifecycle controller keeps it Ready
and never taints or evicts it."""

from __future__ import annotations

import logging
from typing import Any

from hubploy_sandbox.agent.kube import timestamp
from hubploy_sandbox.agent.rest import Api, ApiError, path
from hubploy_sandbox.paths import KUBELET_PORT, NODE_NAME
from hubploy_sandbox.versions import KUBERNETES_VERSION

log = logging.getLogger("hubploy_sandbox.agent")

# What the node offers the scheduler: generous, as the hubs' processes share this host.
CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "200Gi"}
LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0


def node_body() -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node-role.kubernetes.io/sandbox": "",
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": labels}, "spec": {}}


def node_status(node_ip: str) -> dict[str, Any]:
    t = timestamp()
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": f"KubeletHas{reason}",
            "message": "hubploy sandbox",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }
        for kind, reason in (
            ("MemoryPressure", "SufficientMemory"),
            ("DiskPressure", "NoDiskPressure"),
            ("PIDPressure", "SufficientPID"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "hubploy sandbox agent is posting ready status",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        }
    )
    return {
        "status": {
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": node_ip},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": KUBERNETES_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "hubploy-sandbox://2",
                "osImage": "hubploy sandbox",
                "kernelVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
    }


class NodeKeeper:
    def __init__(self, api: Api, node_ip: str) -> None:
        self.api, self.node_ip = api, node_ip
        self.uid = ""

    def register(self) -> None:
        """Create the node (or take over the one an earlier agent made) and report it Ready."""
        try:
            node = self.api.create(path("nodes"), node_body())
            log.info("registered node %s", NODE_NAME)
        except ApiError as exc:
            if exc.status != 409:
                raise
            node = self.api.get(path("nodes", name=NODE_NAME))
        self.uid = node["metadata"]["uid"]
        self.report_status()
        self.renew_lease()

    def report_status(self) -> None:
        self.api.merge_patch(path("nodes", name=NODE_NAME, subresource="status"), node_status(self.node_ip))

    def renew_lease(self) -> None:
        url = path("leases", "kube-node-lease", NODE_NAME, group="coordination.k8s.io/v1")
        spec = {
            "holderIdentity": NODE_NAME,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": timestamp(micro=True),
        }
        try:
            self.api.merge_patch(url, {"spec": spec})
        except ApiError as exc:
            if exc.status != 404:
                raise
            owner = {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME, "uid": self.uid}
            self.api.create(
                path("leases", "kube-node-lease", group="coordination.k8s.io/v1"),
                {"metadata": {"name": NODE_NAME, "ownerReferences": [owner]}, "spec": spec},
            )
