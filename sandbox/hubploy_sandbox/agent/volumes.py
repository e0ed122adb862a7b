"""A pod's volumes as host directories, and each container's mounts of them.

ConfigMap, Secret, downwardAPI and projected volumes (with the service-account token from the
TokenRequest API, refreshed at 80% of its lifetime) become files under the pod's directory; emptyDir a
directory; a PersistentVolumeClaim the directory of its bound volume (the agent's provisioner gives
host directories); hostPath the host path. Contents are written when the pod starts (a kubelet also
updates ConfigMap and Secret volumes later; this agent does not).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hubploy_sandbox.agent.envvars import ConfigMissing, Sources, expand, field_value, resource_value
from hubploy_sandbox.agent.rest import Api, ApiError, path


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (an unbound claim, a missing source); the pod waits and retries."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    readonly: bool = False


@dataclass
class Token:
    path: Path
    service_account: str
    audience: str | None
    expiration_seconds: int
    refresh_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def _safe_join(root: Path, relative: str) -> Path:
    """``root / relative`` for a volume item path (no absolute paths, no ``..``, as the API validates)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise VolumeNotReady(f"invalid path {relative!r} in a volume")
    return root.joinpath(*parts)


class PodVolumes:
    """Sets up the volumes of one pod under ``directory`` (``<directory>/<volume name>``)."""

    def __init__(
        self,
        api: Api,
        pod: dict[str, Any],
        directory: Path,
        *,
        pod_ip: str,
        host_ip: str,
        allocatable: dict[str, str],
    ) -> None:
        self.api, self.pod, self.directory = api, pod, directory
        self.namespace = pod["metadata"]["namespace"]
        self.pod_ip, self.host_ip, self.allocatable = pod_ip, host_ip, allocatable
        self.sources = Sources(api, self.namespace)
        self.paths: dict[str, Path] = {}
        self.tokens: list[Token] = []
        self.fs_group: int | None = (pod["spec"].get("securityContext") or {}).get("fsGroup")

    # --- whole volumes --------------------------------------------------------------------------------
    def setup(self) -> None:
        """Set up every volume; raises VolumeNotReady (or ConfigMissing) to be retried later."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tokens = []
        for volume in self.pod["spec"].get("volumes") or []:
            self.paths[volume["name"]] = self._setup(volume)

    def _setup(self, volume: dict[str, Any]) -> Path:
        name = volume["name"]
        target = self.directory / name
        if "emptyDir" in volume:
            target.mkdir(exist_ok=True)
            self._shared_dir(target)
            return target
        if "persistentVolumeClaim" in volume:
            return self._claim(volume["persistentVolumeClaim"]["claimName"])
        if "ephemeral" in volume:
            return self._claim(f"{self.pod['metadata']['name']}-{name}")
        if "hostPath" in volume:
            return self._host_path(volume["hostPath"])
        files: dict[str, tuple[bytes, int]]
        if "configMap" in volume:
            files = self._keyed("configMap", volume["configMap"], volume["configMap"].get("defaultMode"))
        elif "secret" in volume:
            ref = {**volume["secret"], "name": volume["secret"].get("secretName", "")}
            files = self._keyed("secret", ref, ref.get("defaultMode"))
        elif "downwardAPI" in volume:
            files = self._downward(
                volume["downwardAPI"].get("items"), volume["downwardAPI"].get("defaultMode")
            )
        elif "projected" in volume:
            files = self._projected(volume["projected"], target)
        else:
            kinds = ", ".join(k for k in volume if k != "name")
            raise VolumeNotReady(f"volume {name}: type {kinds} is not supported by the sandbox")
        self._write(target, files)
        return target

    def _claim(self, name: str) -> Path:
        try:
            claim = self.api.get(path("persistentvolumeclaims", self.namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                raise VolumeNotReady(f"persistentvolumeclaim {name!r} not found") from None
            raise
        volume_name = claim["spec"].get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise VolumeNotReady(f"persistentvolumeclaim {name!r} is not bound")
        volume = self.api.get(path("persistentvolumes", name=volume_name))
        source = volume["spec"].get("hostPath") or volume["spec"].get("local")
        if source is None:
            raise VolumeNotReady(
                f"persistentvolume {volume_name}: only hostPath and local volumes exist on the sandbox"
            )
        directory = Path(source["path"])
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @staticmethod
    def _host_path(host_path: dict[str, Any]) -> Path:
        target = Path(host_path["path"])
        kind = host_path.get("type") or ""
        if kind == "DirectoryOrCreate":
            target.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        elif not target.exists() and kind:
            raise VolumeNotReady(f"hostPath {target} does not exist (type {kind})")
        return target

    # --- file contents -------------------------------------------------------------------------------
    def _keyed(
        self, kind: str, ref: dict[str, Any], default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        """The files of a ConfigMap or Secret ``ref`` ({name, items, optional})."""
        data = self.sources.raw(kind, ref["name"])
        optional = bool(ref.get("optional"))
        if data is None:
            if optional:
                return {}
            raise ConfigMissing(f"{kind} {self.namespace}/{ref['name']} not found")
        mode = 0o644 if default_mode is None else default_mode
        items = ref.get("items")
        if not items:
            return {key: (value, mode) for key, value in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise ConfigMissing(f"key {item['key']!r} not found in {kind} {self.namespace}/{ref['name']}")
            files[item["path"]] = (data[item["key"]], item.get("mode", mode))
        return files

    def _downward(
        self, items: list[dict[str, Any]] | None, default_mode: int | None
    ) -> dict[str, tuple[bytes, int]]:
        mode = 0o644 if default_mode is None else default_mode
        containers = self.pod["spec"]["containers"]
        files = {}
        for item in items or []:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.pod_ip, self.host_ip)
            else:
                ref = item["resourceFieldRef"]
                wanted = ref.get("containerName") or containers[0]["name"]
                value = resource_value(
                    next(c for c in containers if c["name"] == wanted), ref, self.allocatable
                )
            files[item["path"]] = (value.encode(), item.get("mode", mode))
        return files

    def _projected(self, projected: dict[str, Any], target: Path) -> dict[str, tuple[bytes, int]]:
        mode = projected.get("defaultMode", 0o644)
        files: dict[str, tuple[bytes, int]] = {}
        for source in projected.get("sources") or []:
            if "configMap" in source:
                files.update(self._keyed("configMap", source["configMap"], mode))
            elif "secret" in source:
                files.update(self._keyed("secret", source["secret"], mode))
            elif "downwardAPI" in source:
                files.update(self._downward(source["downwardAPI"].get("items"), mode))
            elif "serviceAccountToken" in source:
                sat = source["serviceAccountToken"]
                token = Token(
                    _safe_join(target, sat["path"]),
                    self.pod["spec"].get("serviceAccountName", "default"),
                    sat.get("audience"),
                    int(sat.get("expirationSeconds", 3600)),
                )
                files[sat["path"]] = (self._request_token(token).encode(), mode)
                self.tokens.append(token)
        return files

    def _request_token(self, token: Token) -> str:
        meta = self.pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [token.audience] if token.audience else [],
                "expirationSeconds": token.expiration_seconds,
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        result = self.api.create(
            path("serviceaccounts", self.namespace, token.service_account, subresource="token"), body
        )
        expires = dt.datetime.fromisoformat(result["status"]["expirationTimestamp"].replace("Z", "+00:00"))
        token.refresh_at = dt.datetime.now(dt.UTC) + (expires - dt.datetime.now(dt.UTC)) * 0.8
        return str(result["status"]["token"])

    def refresh_tokens(self) -> None:
        """Replace every service-account token past 80% of its lifetime (as a kubelet does)."""
        for token in self.tokens:
            if dt.datetime.now(dt.UTC) >= token.refresh_at:
                value = self._request_token(token)
                tmp = token.path.with_name(token.path.name + ".new")
                tmp.write_text(value)
                tmp.chmod(token.path.stat().st_mode & 0o7777)
                os.replace(tmp, token.path)

    def _write(self, target: Path, files: dict[str, tuple[bytes, int]]) -> None:
        tmp = target.with_name(target.name + ".new")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for relative, (content, mode) in files.items():
            path = _safe_join(tmp, relative)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            if self.fs_group is not None:
                os.chown(path, -1, self.fs_group)
                mode |= 0o040
            path.chmod(mode)
        for directory in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
            directory.chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)

    def _shared_dir(self, path: Path) -> None:
        """A writable directory (emptyDir): group fsGroup with the setgid bit, else open to all."""
        if self.fs_group is not None:
            os.chown(path, -1, self.fs_group)
            path.chmod(0o2775)
        else:
            path.chmod(0o777)

    # --- one container's view ------------------------------------------------------------------------
    def mounts(self, container: dict[str, Any], env: dict[str, str]) -> list[Mount]:
        result = []
        for mount in container.get("volumeMounts") or []:
            base = self.paths.get(mount["name"])
            if base is None:
                raise VolumeNotReady(f"volumeMount {mount['name']!r} names no volume of the pod")
            sub = mount.get("subPath") or expand(mount.get("subPathExpr", ""), env.get)
            source = _safe_join(base, sub) if sub else base
            if sub and not source.exists():
                source.mkdir(parents=True)  # a kubelet creates a missing subPath as a directory
                if base.stat().st_mode & 0o002 or self.fs_group is not None:
                    self._shared_dir(source)
            result.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        return result
