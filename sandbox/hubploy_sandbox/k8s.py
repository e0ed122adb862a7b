"""One cluster's control plane: etcd, kube-apiserver, kube-controller-manager and kube-scheduler, all
listening on the cluster's node address (see :mod:`hubploy_sandbox.network`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hubploy.runner import run
from hubploy_sandbox import network
from hubploy_sandbox.errors import SandboxError
from hubploy_sandbox.health import http_status
from hubploy_sandbox.paths import (
    APISERVER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    ClusterPaths,
    SandboxPaths,
)
from hubploy_sandbox.versions import KUBERNETES_COMMANDS


def net(cluster: ClusterPaths) -> network.ClusterNetwork:
    found = network.load(cluster)
    if found is None:
        raise SandboxError(f"cluster {cluster.name} has no network yet", hint="run `hubploy sandbox up`")
    return found


def etcd_argv(paths: SandboxPaths, cluster: ClusterPaths) -> list[str]:
    ip = net(cluster).node_ip
    client, peer = f"http://{ip}:{ETCD_CLIENT_PORT}", f"http://{ip}:{ETCD_PEER_PORT}"
    return [
        str(paths.etcd_bin / "etcd"),
        "--name",
        cluster.name,
        "--data-dir",
        str(cluster.etcd_data),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"{cluster.name}={peer}",
        "--listen-metrics-urls",
        "",
        # A throwaway test cluster: no fsync per write (helm stores every release revision in etcd).
        "--unsafe-no-fsync",
        "--log-level",
        "warn",
    ]


def etcd_ready(paths: SandboxPaths, cluster: ClusterPaths) -> bool:
    return http_status(f"http://{net(cluster).node_ip}:{ETCD_CLIENT_PORT}/health") == 200


def ensure_pki(cluster: ClusterPaths, env: Mapping[str, str]) -> None:
    """Service-account key pair and an admin token, generated once per cluster."""
    cluster.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, pub = cluster.pki / "sa.key", cluster.pki / "sa.pub"
    if not key.exists() or not pub.exists():
        run(["openssl", "genrsa", "-out", str(key), "2048"], env=env)
        run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], env=env)
        key.chmod(0o600)
    if not cluster.token_file.exists():
        cluster.token_file.write_text(f'{secrets.token_hex(16)},admin,admin-uid,"system:masters"\n')
        cluster.token_file.chmod(0o600)


def admin_token(cluster: ClusterPaths) -> str:
    try:
        return cluster.token_file.read_text().split(",", 1)[0].strip()
    except OSError:
        raise SandboxError(
            f"cluster {cluster.name} has no admin token", hint="run `hubploy sandbox up`"
        ) from None


def apiserver_url(cluster: ClusterPaths) -> str:
    return f"https://{net(cluster).node_ip}:{APISERVER_PORT}"


def apiserver_argv(paths: SandboxPaths, cluster: ClusterPaths) -> list[str]:
    pki, n = cluster.pki, net(cluster)
    return [
        str(paths.k8s_bin / "kube-apiserver"),
        f"--etcd-servers=http://{n.node_ip}:{ETCD_CLIENT_PORT}",
        f"--bind-address={n.node_ip}",
        f"--advertise-address={n.node_ip}",
        f"--secure-port={APISERVER_PORT}",
        f"--cert-dir={pki / 'serving'}",
        f"--token-auth-file={cluster.token_file}",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={n.service_cidr}",
        "--allow-privileged=true",
        # Logs of pods come from the agent's kubelet port at the node's address (no client certificate:
        # the agent serves only its own logs, on an address routed within this host).
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
    ]


def apiserver_ready(paths: SandboxPaths, cluster: ClusterPaths) -> bool:
    if not cluster.serving_cert.exists():
        return False
    url = apiserver_url(cluster) + "/readyz"
    return http_status(url, cafile=cluster.serving_cert, token=admin_token(cluster)) == 200


def kubeconfig(clusters: Sequence[ClusterPaths]) -> dict[str, Any]:
    """A kubeconfig with one context per cluster (the admin token; the API server's own serving
    certificate as CA); the first cluster's context is current."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": clusters[0].name,
        "preferences": {},
        "clusters": [
            {
                "name": c.name,
                "cluster": {"server": apiserver_url(c), "certificate-authority": str(c.serving_cert)},
            }
            for c in clusters
        ],
        "users": [{"name": f"admin@{c.name}", "user": {"token": admin_token(c)}} for c in clusters],
        "contexts": [
            {
                "name": c.name,
                "context": {"cluster": c.name, "user": f"admin@{c.name}", "namespace": "default"},
            }
            for c in clusters
        ],
    }


def write_kubeconfig(path: Path, clusters: Sequence[ClusterPaths]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig(clusters), sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


def _client_flags(cluster: ClusterPaths) -> list[str]:
    k = str(cluster.kubeconfig)
    return [f"--kubeconfig={k}", f"--authentication-kubeconfig={k}", f"--authorization-kubeconfig={k}"]


def controller_manager_argv(paths: SandboxPaths, cluster: ClusterPaths) -> list[str]:
    return [
        str(paths.k8s_bin / "kube-controller-manager"),
        *_client_flags(cluster),
        f"--service-account-private-key-file={cluster.pki / 'sa.key'}",
        f"--root-ca-file={cluster.serving_cert}",
        "--use-service-account-credentials=true",
        f"--cluster-name={cluster.name}",
        "--leader-elect=false",
        f"--bind-address={net(cluster).node_ip}",
        "--secure-port=0",
        # No cloud and no pod CIDR allocation: pod addresses come from the agent, LoadBalancer
        # addresses from its service proxy. The node lifecycle controller runs: the agent renews
        # its node's Lease and status as a kubelet does.
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service",
    ]


def controller_manager_ready(paths: SandboxPaths, cluster: ClusterPaths) -> bool:
    """The default ServiceAccount exists: the controllers are running (pods need it)."""
    url = apiserver_url(cluster) + "/api/v1/namespaces/default/serviceaccounts/default"
    return http_status(url, cafile=cluster.serving_cert, token=admin_token(cluster)) == 200


def scheduler_argv(paths: SandboxPaths, cluster: ClusterPaths) -> list[str]:
    return [
        str(paths.k8s_bin / "kube-scheduler"),
        *_client_flags(cluster),
        "--leader-elect=false",
        f"--bind-address={net(cluster).node_ip}",
        "--secure-port=0",
    ]


def binaries_present(paths: SandboxPaths) -> bool:
    return (paths.etcd_bin / "etcd").is_file() and all(
        (paths.k8s_bin / b).is_file() for b in KUBERNETES_COMMANDS
    )
