"""Real JupyterHub processes for the hub releases whose hub pod is Ready (run by the agent)."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hubploy.errors import HubployError
from hubploy_sandbox.hub_config import write_hub_config
from hubploy_sandbox.paths import NODE_NAME
from hubploy_sandbox.procs import read_pid, spawn, stop, stop_recorded

log = logging.getLogger("hubploy_sandbox.hubs")
HUB_SECRET = "hub"
PROXY_PID_FILE = "jupyterhub-proxy.pid"  # written by JupyterHub into the hub's directory


def stop_hub(pid_file: Path, directory: Path) -> None:
    """Stop a JupyterHub and its proxy (JupyterHub starts the proxy in a session of its own)."""
    stop(pid_file)
    stop_recorded(directory / PROXY_PID_FILE, must_contain="configurable-http-proxy")


@dataclass
class HubProcess:
    namespace: str
    release: str
    pod_uid: str
    url: str
    pid_file: Path
    directory: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pod_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def hub_values(core: Any, namespace: str) -> dict[str, Any]:
    """The chart's rendered ``.Values.jupyterhub`` from the release's hub Secret ({} if missing)."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(HUB_SECRET, namespace)
    except ApiException as exc:
        if exc.status == 404:
            log.warning("namespace %s: no Secret %r; starting the hub with defaults", namespace, HUB_SECRET)
            return {}
        raise
    raw = (secret.data or {}).get("values.yaml")
    return yaml.safe_load(base64.b64decode(raw)) or {} if raw else {}


class HubManager:
    """Keeps one JupyterHub per namespace in step with that namespace's Ready hub pod; ``python`` is the
    interpreter of JupyterHub's own virtualenv."""

    def __init__(
        self,
        core: Any,
        state_dir: Path,
        urls_file: Path,
        pid_dir: Path,
        log_dir: Path,
        env: Mapping[str, str],
        python: Path,
    ) -> None:
        self.core, self.state_dir, self.urls_file = core, state_dir, urls_file
        self.pid_dir, self.log_dir, self.env, self.python = pid_dir, log_dir, dict(env), python
        self.hubs: dict[str, HubProcess] = {}
        self._written: dict[str, str] | None = None
        for stale in pid_dir.glob("*.pid"):  # hubs of an earlier agent run
            stop_hub(stale, state_dir / "hubs" / stale.stem)

    def reconcile(self) -> None:
        pods = self.core.list_pod_for_all_namespaces(
            label_selector="component=hub", field_selector=f"spec.nodeName={NODE_NAME}"
        ).items
        desired: dict[str, Any] = {}
        for pod in sorted(pods, key=lambda p: p.metadata.creation_timestamp):
            if pod_ready(pod):
                desired[pod.metadata.namespace] = pod
        for ns, hub in list(self.hubs.items()):
            pod = desired.get(ns)
            if pod is None or pod.metadata.uid != hub.pod_uid:
                log.info("namespace %s: hub pod gone or replaced; stopping its JupyterHub", ns)
                self.stop(ns)
        for ns, pod in desired.items():
            if ns not in self.hubs:
                self.start(ns, pod)
        self.write_urls()

    def start(self, namespace: str, pod: Any) -> None:
        release = (pod.metadata.labels or {}).get("release", namespace)
        values = hub_values(self.core, namespace)
        public, hub_port, api = free_port(), free_port(), free_port()
        directory = self.state_dir / "hubs" / namespace
        stop_recorded(directory / PROXY_PID_FILE, must_contain="configurable-http-proxy")
        shutil.rmtree(directory, ignore_errors=True)
        config = write_hub_config(directory, values, public=public, hub=hub_port, api=api)
        pid_file = self.pid_dir / f"{namespace}.pid"
        url = f"http://127.0.0.1:{public}"
        self.hubs[namespace] = HubProcess(namespace, release, pod.metadata.uid, url, pid_file, directory)
        log.info("namespace %s: starting JupyterHub for pod %s at %s", namespace, pod.metadata.name, url)
        try:
            spawn(
                [self.python, "-m", "jupyterhub", "-f", str(config)],
                pid_file=pid_file,
                log=self.log_dir / f"{namespace}.log",
                env=self.env,
                cwd=directory,
            )
        except HubployError as exc:  # a broken config: the URL stays in the map and does not answer
            log.warning("namespace %s: JupyterHub did not start: %s", namespace, exc)

    def stop(self, namespace: str) -> None:
        hub = self.hubs.pop(namespace, None)
        if hub is not None:
            stop_hub(hub.pid_file, hub.directory)

    def stop_all(self) -> None:
        for ns in list(self.hubs):
            self.stop(ns)
        self.write_urls()

    def urls(self) -> dict[str, str]:
        result: dict[str, str] = {}
        for ns, hub in sorted(self.hubs.items()):
            result[ns] = hub.url
            result.setdefault(hub.release, hub.url)
        return result

    def write_urls(self) -> None:
        urls = self.urls()
        if urls == self._written:
            return
        tmp = self.urls_file.with_name(self.urls_file.name + ".tmp")
        tmp.write_text(json.dumps(urls, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.urls_file)
        self._written = urls

    def running(self, namespace: str) -> bool:
        hub = self.hubs.get(namespace)
        return hub is not None and read_pid(hub.pid_file) is not None
