"""The pod-readiness agent: stands in for a kubelet on the sandbox's one node, and runs a real
JupyterHub for every hub release whose hub pod is Ready.

Run as ``python -m hubploy_sandbox.agent --kubeconfig K --state-dir S --hub-python PY [--hub-urls F]
[--pid-dir P] [--log-dir L]``, where PY is the python of JupyterHub's own virtualenv.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from hubploy.runner import child_env
from hubploy_sandbox import kubelet
from hubploy_sandbox.hubs import HubManager
from hubploy_sandbox.paths import NODE_NAME

log = logging.getLogger("hubploy_sandbox.agent")
stopping = threading.Event()
hub_pods_changed = threading.Event()  # wakes the JupyterHub reconciler at once


def api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def ensure_node(core: client.CoreV1Api) -> None:
    """Register the node (once), report it Ready, and drop the not-ready taint."""
    try:
        core.create_node(kubelet.node_body())
        log.info("registered node %s", NODE_NAME)
    except ApiException as exc:
        if exc.status != 409:
            raise
    core.patch_node_status(NODE_NAME, kubelet.node_status())
    taints = kubelet.kept_taints(core.read_node(NODE_NAME))
    if taints is not None:
        core.patch_node(NODE_NAME, {"spec": {"taints": taints or None}})
        log.info("removed the not-ready taint of %s", NODE_NAME)


def handle_pod(core: client.CoreV1Api, pod: Any) -> None:
    name, ns = pod.metadata.name, pod.metadata.namespace
    if (pod.metadata.labels or {}).get("component") == "hub":
        hub_pods_changed.set()
    try:
        if pod.metadata.deletion_timestamp is not None:
            core.delete_namespaced_pod(
                name, ns, grace_period_seconds=0, body=client.V1DeleteOptions(grace_period_seconds=0)
            )
            log.info("finalized pod %s/%s", ns, name)
        elif not kubelet.pod_is_current(pod):
            core.patch_namespaced_pod_status(name, ns, kubelet.pod_status(pod))
            state = (
                "succeeded"
                if kubelet.runs_to_completion(pod)
                else "running, never ready"
                if kubelet.never_ready(pod)
                else "running and ready"
            )
            log.info("pod %s/%s %s", ns, name, state)
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise


def handle_service(core: client.CoreV1Api, svc: Any) -> None:
    if kubelet.needs_ingress(svc):
        try:
            core.patch_namespaced_service_status(svc.metadata.name, svc.metadata.namespace, kubelet.LB_STATUS)
            log.info(
                "service %s/%s: load balancer ingress 127.0.0.1", svc.metadata.namespace, svc.metadata.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def watch_forever(
    name: str,
    kubeconfig: Path,
    list_func: Callable[[client.CoreV1Api], Callable[..., Any]],
    handle: Callable[[client.CoreV1Api, Any], None],
    **selectors: str,
) -> None:
    """List, handle everything, then watch from that point; relist after any error or expiry."""
    while not stopping.is_set():
        try:
            core = api(kubeconfig)
            lister = list_func(core)
            items = lister(**selectors)
            for item in items.items:
                handle(core, item)
            rv = items.metadata.resource_version
            for event in watch.Watch().stream(lister, resource_version=rv, timeout_seconds=120, **selectors):
                if stopping.is_set():
                    return
                if event["type"] == "ERROR":
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    handle(core, event["object"])
        except Exception:
            log.exception("%s watch failed; restarting", name)
            stopping.wait(1.0)


def loop_forever(
    name: str, every: float, func: Callable[[], None], wake: threading.Event | None = None
) -> None:
    """Run ``func`` every ``every`` seconds, or as soon as ``wake`` is set."""
    while not stopping.is_set():
        if wake is not None:
            wake.clear()
        try:
            func()
        except Exception:
            log.exception("%s failed", name)
        (wake or stopping).wait(every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubploy_sandbox.agent", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--hub-python", required=True, type=Path)
    parser.add_argument("--hub-urls", type=Path)
    parser.add_argument("--pid-dir", type=Path)
    parser.add_argument("--log-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    state = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    while not stopping.is_set():
        try:
            ensure_node(api(args.kubeconfig))
            break
        except Exception:
            log.exception("cannot register the node yet")
            stopping.wait(1.0)
    hubs = HubManager(
        api(args.kubeconfig),
        state,
        args.hub_urls or state / "hub-urls.json",
        args.pid_dir or state / "pids",
        args.log_dir or state / "logs",
        child_env({"TRAITLETS_APPLICATION_RAISE_CONFIG_FILE_ERROR": "1"}),
        args.hub_python,
    )
    hubs.pid_dir.mkdir(parents=True, exist_ok=True)
    hubs.write_urls()
    pod_selector = {"field_selector": f"spec.nodeName={NODE_NAME}"}
    threads = [
        threading.Thread(
            target=watch_forever,
            daemon=True,
            args=("pods", args.kubeconfig, lambda c: c.list_pod_for_all_namespaces, handle_pod),
            kwargs=pod_selector,
        ),
        threading.Thread(
            target=watch_forever,
            daemon=True,
            args=("services", args.kubeconfig, lambda c: c.list_service_for_all_namespaces, handle_service),
        ),
        threading.Thread(
            target=loop_forever,
            daemon=True,
            args=("node heartbeat", 20.0, lambda: ensure_node(api(args.kubeconfig))),
        ),
        threading.Thread(
            target=loop_forever, daemon=True, args=("hubs", 1.0, hubs.reconcile, hub_pods_changed)
        ),
    ]
    for thread in threads:
        thread.start()
    (state / "ready").write_text(f"{os.getpid()}\n")
    log.info("agent ready (node %s)", NODE_NAME)
    while not stopping.is_set():
        stopping.wait(1.0)
    log.info("stopping: JupyterHubs first")
    threads[-1].join(timeout=10)
    hubs.stop_all()
    (state / "ready").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
