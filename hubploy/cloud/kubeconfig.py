"""A kubeconfig given outright: a (sops-decrypted) file, or one built from secret fields.

Either way it is written at run time to a 0600 file in a private temp dir, and the context name
may carry ``{namespace}``. Only static credentials (a token, or a client certificate and key) can be
stored as fields; exec and auth-provider users belong to the cloud providers.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hubploy import runner
from hubploy.cloud.base import ClusterAccess, kube_env, write_private
from hubploy.errors import CredentialsError
from hubploy.workspace import private_dir

DEFAULT_CONTEXT = "hubploy"
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_SECRET_USER_KEYS = ("token", "client-key-data", "password")


@dataclass(frozen=True)
class KubeconfigFields:
    """The static credentials of one context of a kubeconfig."""

    context: str
    server: str
    certificate_authority_data: str | None
    insecure_skip_tls_verify: bool
    token: str | None
    client_certificate_data: str | None
    client_key_data: str | None
    namespace: str | None


def _named(data: Mapping[str, Any], kind: str, name: str) -> dict[str, Any]:
    for entry in data.get(kind) or []:
        if entry.get("name") == name:
            return dict(entry.get(kind.rstrip("s")) or {})
    raise CredentialsError(f"the kubeconfig has no {kind.rstrip('s')} named {name!r}")


def _read(name: str, base_dir: Path | None) -> bytes:
    path = Path(name).expanduser() if base_dir is None else base_dir / Path(name).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"the kubeconfig names {path}, which cannot be read: {exc.strerror}") from None


def _data_or_file(section: Mapping[str, Any], key: str, base_dir: Path | None) -> str | None:
    """``<key>-data`` as it is, or the file ``<key>`` read and base64-encoded."""
    if section.get(f"{key}-data"):
        return str(section[f"{key}-data"])
    if section.get(key):
        return base64.b64encode(_read(section[key], base_dir)).decode()
    return None


def fields_from_kubeconfig(
    data: Mapping[str, Any], context: str | None = None, *, base_dir: Path | None = None
) -> KubeconfigFields:
    """The credentials of ``context`` (default: the current context); files are read in."""
    name = context or data.get("current-context")
    if not name:
        raise CredentialsError("the kubeconfig has no current-context; name the context to use")
    ctx = _named(data, "contexts", name)
    cluster = _named(data, "clusters", ctx.get("cluster", ""))
    user = _named(data, "users", ctx.get("user", ""))
    unsupported = [k for k in ("exec", "auth-provider", "username") if user.get(k)]
    if unsupported:
        raise CredentialsError(
            f"the kubeconfig user of context {name!r} authenticates with "
            f"{unsupported[0]}, which cannot be stored as secret fields",
            hint="use the GCP, AWS or Azure cluster credentials block, or a token",
        )
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = _read(user["tokenFile"], base_dir).decode().strip()
    fields = KubeconfigFields(
        context=name,
        server=str(cluster.get("server", "")),
        certificate_authority_data=_data_or_file(cluster, "certificate-authority", base_dir),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=token,
        client_certificate_data=_data_or_file(user, "client-certificate", base_dir),
        client_key_data=_data_or_file(user, "client-key", base_dir),
        namespace=ctx.get("namespace"),
    )
    if not fields.server:
        raise CredentialsError(f"the kubeconfig cluster of context {name!r} has no server")
    if not fields.token and not (fields.client_certificate_data and fields.client_key_data):
        raise CredentialsError(
            f"the kubeconfig user of context {name!r} has neither a token nor a client certificate and key"
        )
    return fields


def build_kubeconfig(
    *,
    server: str,
    certificate_authority_data: str | None = None,
    insecure_skip_tls_verify: bool = False,
    token: str | None = None,
    client_certificate_data: str | None = None,
    client_key_data: str | None = None,
    context: str = DEFAULT_CONTEXT,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A one-context kubeconfig named ``context``."""
    cluster: dict[str, Any] = {"server": server}
    if certificate_authority_data:
        cluster["certificate-authority-data"] = certificate_authority_data
    if insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    user: dict[str, Any] = {}
    if token:
        user["token"] = token
    if client_certificate_data:
        user["client-certificate-data"] = client_certificate_data
    if client_key_data:
        user["client-key-data"] = client_key_data
    ctx: dict[str, Any] = {"cluster": context, "user": context}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": user}],
        "contexts": [{"name": context, "context": ctx}],
        "preferences": {},
    }


@contextlib.contextmanager
def kubeconfig_access(
    kubeconfig: Mapping[str, Any], *, base_env: Mapping[str, str], context: str | None = None
) -> Iterator[ClusterAccess]:
    """Write ``kubeconfig`` to a private 0600 file for this run; its secrets are registered for redaction."""
    for entry in kubeconfig.get("users") or []:
        for key in _SECRET_USER_KEYS:
            runner.register_secret((entry.get("user") or {}).get(key))
    with private_dir("hubploy-kube-") as kdir:
        path = write_private(kdir / "config", yaml.safe_dump(dict(kubeconfig), sort_keys=False))
        yield ClusterAccess(kubeconfig=path, env=kube_env(base_env, path), context=context)


@contextlib.contextmanager
def ambient_access(base_env: Mapping[str, str]) -> Iterator[ClusterAccess]:
    """The caller's own kubeconfig (KUBECONFIG, else ~/.kube/config), reused as it is; inside a pod
    without one, the pod's service account (as hubploy's in-cluster fallback)."""
    paths = [p for p in base_env.get("KUBECONFIG", "").split(":") if p]
    if not paths and base_env.get("HOME"):
        paths = [str(Path(base_env["HOME"]) / ".kube" / "config")]
    if paths and Path(paths[0]).is_file():
        yield ClusterAccess(kubeconfig=Path(paths[0]), env=dict(base_env), context=None)
        return
    if base_env.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").is_file():
        with kubeconfig_access(in_cluster_kubeconfig(base_env), base_env=base_env) as access:
            yield access
        return
    raise CredentialsError(
        "hubploy.yaml has no `cluster:` section and there is no kubeconfig "
        f"({paths[0] if paths else 'KUBECONFIG unset'})",
        hint="set KUBECONFIG, or add a `cluster:` section to hubploy.yaml",
    )


def in_cluster_kubeconfig(base_env: Mapping[str, str]) -> dict[str, Any]:
    """A kubeconfig for the pod's service account. It names the token *file*, which kubectl and helm
    re-read, so the kubelet's rotation of projected tokens never leaves a long deploy with a stale one."""
    host = base_env["KUBERNETES_SERVICE_HOST"]
    host = f"[{host}]" if ":" in host else host
    data = build_kubeconfig(
        server=f"https://{host}:{base_env.get('KUBERNETES_SERVICE_PORT', '443')}", context="in-cluster"
    )
    data["clusters"][0]["cluster"]["certificate-authority"] = str(SERVICE_ACCOUNT_DIR / "ca.crt")
    data["users"][0]["user"]["tokenFile"] = str(SERVICE_ACCOUNT_DIR / "token")
    namespace = SERVICE_ACCOUNT_DIR / "namespace"
    if namespace.is_file():
        data["contexts"][0]["context"]["namespace"] = namespace.read_text().strip()
    return data
