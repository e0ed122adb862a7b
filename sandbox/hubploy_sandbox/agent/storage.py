"""The cluster's default StorageClass and its provisioner, as kind's local-path provisioner does it:
a claim of the class gets a PersistentVolume on a new host directory (once the scheduler has picked the
node, the class binding WaitForFirstConsumer); a released volume of the class is deleted with its
directory."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from hubploy_sandbox.agent.kube import Recorder
from hubploy_sandbox.agent.rest import Api, ApiError, path
from hubploy_sandbox.paths import NODE_NAME

log = logging.getLogger("hubploy_sandbox.agent")

STORAGE_CLASS = "standard"
PROVISIONER = "sandbox.hubploy.org/host-path"
PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


class Provisioner:
    def __init__(self, api: Api, volumes: Path, recorder: Recorder) -> None:
        self.api, self.volumes, self.recorder = api, volumes, recorder

    def ensure_class(self) -> None:
        try:
            self.api.create(path("storageclasses", group="storage.k8s.io/v1"), storage_class())
        except ApiError as exc:
            if exc.status != 409:
                raise

    def claim_changed(self, kind: str, claim: dict[str, Any]) -> None:
        meta, spec = claim["metadata"], claim["spec"]
        annotations = meta.get("annotations") or {}
        if (
            kind == "DELETED"
            or spec.get("volumeName")
            or meta.get("deletionTimestamp")
            or annotations.get(PROVISIONER_ANNOTATION) != PROVISIONER
            or annotations.get(SELECTED_NODE_ANNOTATION, NODE_NAME) != NODE_NAME
        ):
            return
        name = f"pvc-{meta['uid']}"
        directory = self.volumes / f"{meta['namespace']}_{meta['name']}_{name}"
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)  # as local-path does: any pod user may write to its claim
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}
                                ]
                            }
                        ]
                    }
                },
            },
        }
        try:
            self.api.create(path("persistentvolumes"), volume)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return
        log.info(
            "claim %s/%s: provisioned %s (%s) at %s", meta["namespace"], meta["name"], name, size, directory
        )
        self.recorder.event(
            {**claim, "kind": "PersistentVolumeClaim"},
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {name}",
        )

    def volume_changed(self, kind: str, volume: dict[str, Any]) -> None:
        meta, spec = volume["metadata"], volume["spec"]
        if (
            (meta.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER
            or kind == "DELETED"
            or (volume.get("status") or {}).get("phase") != "Released"
            or spec.get("persistentVolumeReclaimPolicy") != "Delete"
        ):
            return
        directory = Path((spec.get("hostPath") or {}).get("path", ""))
        if directory.parent == self.volumes:
            shutil.rmtree(directory, ignore_errors=True)
        try:
            self.api.delete(path("persistentvolumes", name=meta["name"]))
            log.info("volume %s released: deleted with %s", meta["name"], directory)
        except ApiError as exc:
            if exc.status != 404:
                raise
