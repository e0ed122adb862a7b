"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback (platform.md §1)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import yaml

from hubploy.errors import SandboxError
from hubploy.runner import run
from hubploy_sandbox.health import http_status
from hubploy_sandbox.paths import SandboxPaths


def etcd_argv(paths: SandboxPaths) -> list[str]:
    p = paths.ports
    client, peer = f"http://127.0.0.1:{p.etcd_client}", f"http://127.0.0.1:{p.etcd_peer}"
    return [
        "etcd",
        "--name",
        "sandbox",
        "--data-dir",
        str(paths.runtime / "etcd"),
        "--listen-client-urls",
        client,
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        peer,
        "--initial-advertise-peer-urls",
        peer,
        "--initial-cluster",
        f"sandbox={peer}",
    ]


def etcd_ready(paths: SandboxPaths) -> bool:
    return http_status(f"http://127.0.0.1:{paths.ports.etcd_client}/health") == 200


def ensure_pki(paths: SandboxPaths, env: Mapping[str, str]) -> None:
    """Service-account key pair and an admin token, generated once per runtime dir."""
    paths.pki.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, pub = paths.pki / "sa.key", paths.pki / "sa.pub"
    if not key.exists() or not pub.exists():
        run(["openssl", "genrsa", "-out", str(key), "2048"], env=env)
        run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)], env=env)
        key.chmod(0o600)
    if not paths.token_file.exists():
        paths.token_file.write_text(f'{secrets.token_hex(16)},admin,admin-uid,"system:masters"\n')
        paths.token_file.chmod(0o600)


def admin_token(paths: SandboxPaths) -> str:
    try:
        return paths.token_file.read_text().split(",", 1)[0].strip()
    except OSError:
        raise SandboxError("the sandbox has no admin token", hint="run `hubploy sandbox up`") from None


def apiserver_argv(paths: SandboxPaths) -> list[str]:
    pki = paths.pki
    return [
        str(paths.k8s_bin / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{paths.ports.etcd_client}",
        "--bind-address=127.0.0.1",
        f"--secure-port={paths.ports.apiserver}",
        "--advertise-address=127.0.0.1",
        f"--cert-dir={pki / 'serving'}",
        f"--token-auth-file={paths.token_file}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--insecure-port=0",
        "--allow-privileged=true",
    ]


def apiserver_url(paths: SandboxPaths) -> str:
    return f"https://127.0.0.1:{paths.ports.apiserver}"


def apiserver_ready(paths: SandboxPaths) -> bool:
    if not paths.serving_cert.exists():
        return False
    return (
        http_status(apiserver_url(paths) + "/readyz", cafile=paths.serving_cert, token=admin_token(paths))
        == 200
    )


def write_kubeconfig(paths: SandboxPaths) -> None:
    """A kubeconfig with the admin token and the apiserver's own serving cert as verified CA."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sandbox",
        "preferences": {},
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {"server": apiserver_url(paths), "certificate-authority": str(paths.serving_cert)},
            }
        ],
        "users": [{"name": "admin", "user": {"token": admin_token(paths)}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": "admin", "namespace": "default"}}
        ],
    }
    tmp = paths.kubeconfig.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(paths.kubeconfig)


def controller_manager_argv(paths: SandboxPaths) -> list[str]:
    k = str(paths.kubeconfig)
    return [
        str(paths.k8s_bin / "kube-controller-manager"),
        f"--kubeconfig={k}",
        f"--authentication-kubeconfig={k}",
        f"--authorization-kubeconfig={k}",
        f"--service-account-private-key-file={paths.pki / 'sa.key'}",
        f"--root-ca-file={paths.serving_cert}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--port=0",
        "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-route,-service",
    ]


def controller_manager_ready(paths: SandboxPaths) -> bool:
    """The default ServiceAccount exists: the controllers are running (pods need it)."""
    url = apiserver_url(paths) + "/api/v1/namespaces/default/serviceaccounts/default"
    return http_status(url, cafile=paths.serving_cert, token=admin_token(paths)) == 200


def scheduler_argv(paths: SandboxPaths) -> list[str]:
    k = str(paths.kubeconfig)
    return [
        str(paths.k8s_bin / "kube-scheduler"),
        f"--kubeconfig={k}",
        f"--authentication-kubeconfig={k}",
        f"--authorization-kubeconfig={k}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--port=0",
    ]


def binaries_present(paths: SandboxPaths) -> bool:
    return all(
        (paths.k8s_bin / b).is_file() for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    )
