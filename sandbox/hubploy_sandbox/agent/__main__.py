"""The sandbox agent: what runs on a cluster's one node in place of a kubelet, kube-proxy, cluster DNS, a
cloud load balancer and a storage provisioner.

Run as ``python -m hubploy_sandbox.agent --cache-dir C --cluster-dir D --cluster-index N`` (root: it
creates network and mount namespaces). SIGTERM stops every pod's processes, then the agent.
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

from hubploy.processes import stop
from hubploy_sandbox import k8s, network
from hubploy_sandbox.agent import logserver, netns
from hubploy_sandbox.agent.kube import Recorder, watch_forever
from hubploy_sandbox.agent.node import RENEW_EVERY, STATUS_EVERY, NodeKeeper
from hubploy_sandbox.agent.pods import Context, PodManager
from hubploy_sandbox.agent.rest import Api, path
from hubploy_sandbox.agent.services import LoadBalancers, ServiceIndex, ServiceProxy
from hubploy_sandbox.agent.storage import Provisioner
from hubploy_sandbox.paths import APISERVER_PORT, KUBELET_PORT, NODE_NAME, ClusterPaths

log = logging.getLogger("hubploy_sandbox.agent")


def every(stopping: threading.Event, seconds: float, func: Callable[[], None], name: str) -> None:
    while not stopping.wait(seconds):
        try:
            func()
        except Exception:
            log.exception("%s failed", name)


def clean_leftovers(ctx: Context, net: network.ClusterNetwork) -> None:
    """Processes and network namespaces of pods an earlier agent of this cluster left (it was killed)."""
    for pid_file in ctx.pid_dir.glob("*.pid"):
        stop(pid_file, timeout=5)
    names = [p.name for p in netns.NETNS_DIR.glob(f"{net.bridge}-*")]
    for name in names:
        netns.delete(net, name.removeprefix(f"{net.bridge}-"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hubploy_sandbox.agent", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cache-dir", required=True, type=Path)
    parser.add_argument("--cluster-dir", required=True, type=Path)
    parser.add_argument("--cluster-index", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cluster = ClusterPaths(args.cluster_index, args.cluster_dir)
    net = network.load(cluster)
    if net is None:
        log.error("cluster %s has no network (run `hubploy sandbox up`)", cluster.name)
        return 1
    state = cluster.agent_state
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    api = Api(net.node_ip, APISERVER_PORT, k8s.admin_token(cluster), cluster.serving_cert)
    recorder = Recorder(api, NODE_NAME)
    node = NodeKeeper(api, net.node_ip)
    while not stopping.is_set():
        try:
            node.register()
            break
        except Exception:
            log.exception("cannot register the node yet")
            stopping.wait(1.0)
    services, proxy = ServiceIndex(), ServiceProxy()
    ctx = Context(api, net, netns.Addresses(net), services, recorder, args.cache_dir, state)
    clean_leftovers(ctx, net)
    pods = PodManager(ctx)
    provisioner = Provisioner(api, cluster.volumes, recorder)
    provisioner.ensure_class()
    balancers = LoadBalancers(api, net)
    proxy.start()

    def service_event(kind: str, svc: dict) -> None:
        services.handle(kind, svc)
        balancers.handle(kind, svc)
        proxy.service_changed(kind, svc)

    def files(
        namespace: str, pod: str, container: str, previous: bool
    ) -> tuple[Path | None, Callable[[], bool]]:
        worker = pods.find(namespace, pod)
        if worker is None:
            return None, lambda: False
        found = next((c for c in worker.init + worker.main if c.name == container), None)
        if found is None:
            return None, lambda: False
        run = found.restart_count - 1 if previous else found.restart_count
        if run < 0 and previous:
            return None, lambda: False
        if not previous and found.proc is None and found.restart_count and "waiting" in found.state:
            run = found.restart_count - 1  # waiting to restart: the last run's log
        file = worker.log_dir / container / f"{run}.log"
        return (file if file.exists() else None), lambda: found.proc is not None and found.running

    cert, key = logserver.ensure_certificate(state / "pki", net.node_ip)
    logserver.serve(net.node_ip, KUBELET_PORT, cert, key, files)

    services_synced = threading.Event()
    watches: list[
        tuple[str, str, Callable[[str, dict[str, Any]], None], dict[str, str], Callable[[], None] | None]
    ] = [
        ("services", path("services"), service_event, {}, services_synced.set),
        (
            "endpointslices",
            path("endpointslices", group="discovery.k8s.io/v1"),
            proxy.slice_changed,
            {},
            None,
        ),
        ("persistentvolumeclaims", path("persistentvolumeclaims"), provisioner.claim_changed, {}, None),
        ("persistentvolumes", path("persistentvolumes"), provisioner.volume_changed, {}, None),
    ]
    threads = [
        threading.Thread(
            target=watch_forever,
            name=name,
            daemon=True,
            args=(name, api, url, stopping, handle),
            kwargs={"synced": synced, **params},
        )
        for name, url, handle, params, synced in watches
    ]
    for thread in threads:
        thread.start()
    services_synced.wait(30)  # containers get their Service variables from the start
    pod_watch = threading.Thread(
        target=watch_forever,
        name="pods",
        daemon=True,
        args=("pods", api, path("pods"), stopping, pods.handle),
        kwargs={"fieldSelector": f"spec.nodeName={NODE_NAME}"},
    )
    pod_watch.start()
    threading.Thread(
        target=every, args=(stopping, RENEW_EVERY, node.renew_lease, "lease"), daemon=True
    ).start()
    threading.Thread(
        target=every, args=(stopping, STATUS_EVERY, node.report_status, "node status"), daemon=True
    ).start()
    (state / "ready").write_text(f"{os.getpid()}\n")
    log.info(
        "agent ready: node %s at %s (pods %s, services %s)",
        NODE_NAME,
        net.node_ip,
        net.pod_cidr,
        net.service_cidr,
    )
    while not stopping.wait(1.0):
        pass
    log.info("stopping: the pods' processes first")
    pods.stop_all()
    proxy.stop()
    (state / "ready").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
