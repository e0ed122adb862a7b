"""What a kubelet would report: the sandbox node, pod statuses, LoadBalancer ingress (no containers run)."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from hubploy_sandbox.paths import NODE_NAME

NEVER_READY_ANNOTATION = "hubploy_sandbox/never-ready"
NEVER_READY_IMAGE_MARK = "never-ready"
DROP_TAINTS = {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_body() -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node-role.kubernetes.io/sandbox": "",
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_NAME, "labels": labels}, "spec": {}}


def node_status() -> dict[str, Any]:
    t = now()
    resources = {"cpu": "16", "memory": "64Gi", "pods": "250", "ephemeral-storage": "100Gi"}
    conditions = [
        {
            "type": kind,
            "status": "False",
            "reason": f"KubeletHas{reason}",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
            "message": "hubploy sandbox",
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
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
            "message": "hubploy sandbox agent is ready",
        }
    )
    return {
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "hubploy-sandbox://1",
                "osImage": "sandbox",
                "kernelVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
    }


def kept_taints(node: Any) -> list[dict[str, Any]] | None:
    """The node's taints without the not-ready ones, or None when nothing needs to change."""
    taints = node.spec.taints or []
    kept = [t for t in taints if t.key not in DROP_TAINTS]
    if len(kept) == len(taints):
        return None
    return [{"key": t.key, "value": t.value, "effect": t.effect} for t in kept]


def never_ready(pod: Any) -> bool:
    """Tests make a rollout fail with this annotation or an image name containing "never-ready"."""
    if (pod.metadata.annotations or {}).get(NEVER_READY_ANNOTATION, "").lower() == "true":
        return True
    containers = list(pod.spec.containers or []) + list(pod.spec.init_containers or [])
    return any(NEVER_READY_IMAGE_MARK in (c.image or "") for c in containers)


def pod_ip(pod: Any) -> str:
    digest = hashlib.sha256(pod.metadata.uid.encode()).digest()
    return f"10.244.{digest[0]}.{max(digest[1], 2) % 254 + 1}"


def runs_to_completion(pod: Any) -> bool:
    """Pods of Jobs (e.g. helm hooks) complete at once, successfully."""
    return any(o.kind == "Job" for o in (pod.metadata.owner_references or []))


def pod_is_current(pod: Any) -> bool:
    """True when the pod's status already is what :func:`pod_status` would write."""
    status = pod.status
    if status is not None and runs_to_completion(pod):
        return status.phase == "Succeeded"
    if status is None or status.phase != "Running":
        return False
    want = "False" if never_ready(pod) else "True"
    ready = [c.status for c in (status.conditions or []) if c.type == "Ready"]
    statuses = status.container_statuses or []
    return ready == [want] and len(statuses) == len(pod.spec.containers or [])


def pod_status(pod: Any) -> dict[str, Any]:
    """Running; Ready unless :func:`never_ready`; every container started, init containers completed."""
    t = now()
    ready = not never_ready(pod)
    flag = "True" if ready else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": t},
        {"type": "Ready", "status": flag, "lastTransitionTime": t},
    ]
    if not ready:
        for cond in conditions[2:]:
            cond.update(reason="NeverReady", message="the sandbox agent keeps this pod unready")
    uid = pod.metadata.uid
    done = runs_to_completion(pod)
    if done:
        for cond in conditions[2:]:
            cond.update(status="False", reason="PodCompleted", message="")

    def container(c: Any, init: bool) -> dict[str, Any]:
        state = (
            {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}
            if init or done
            else {"running": {"startedAt": t}}
        )
        return {
            "name": c.name,
            "image": c.image,
            "imageID": f"sandbox://{c.image}",
            "containerID": f"sandbox://{uid}/{c.name}",
            "ready": (ready or init) and not done,
            "started": not init and not done,
            "restartCount": 0,
            "state": state,
        }

    ip = pod_ip(pod)
    status: dict[str, Any] = {
        "phase": "Succeeded" if done else "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": t,
        "conditions": conditions,
        "containerStatuses": [container(c, False) for c in pod.spec.containers or []],
    }
    if pod.spec.init_containers:
        status["initContainerStatuses"] = [container(c, True) for c in pod.spec.init_containers]
    return {"status": status}


def needs_ingress(service: Any) -> bool:
    if service.spec.type != "LoadBalancer":
        return False
    lb = service.status.load_balancer if service.status else None
    return not (lb and lb.ingress)


LB_STATUS = {"status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}}
