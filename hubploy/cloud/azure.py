"""AKS: a service principal (appId, tenant, password) in a private az config dir.

AZURE_CONFIG_DIR points at a temp dir in every child env, so ``~/.azure`` is never touched. The
password never reaches a command line (hubploy passed ``--password <secret>``): it is written to a
0600 file and passed as ``--password @file``, az's documented way to read any argument from a file
(Azure/azure-cli#14544); the file is deleted right after the login. Residual: az still stats the
value to tell a password from a certificate path (Azure/login#433), visible only to syscall audits.

``--file`` is passed to `az aks get-credentials` because older az ignored KUBECONFIG and wrote
``~/.kube/config`` (Azure/azure-cli#16148). Token lifetime: a cluster with Entra ID integration
gets a kubelogin exec entry, converted to ``--login azurecli`` so kubelogin takes fresh tokens from
the logged-in az of AZURE_CONFIG_DIR; a cluster with local accounts gets a client certificate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hubploy import runner
from hubploy.cloud.base import ClusterAccess, credentials_failed, kube_env, load_kubeconfig, write_private
from hubploy.errors import CommandError, CredentialsError
from hubploy.workspace import private_dir

DROP = ("AZURE_CONFIG_DIR",)


def login_args(client_id: str, tenant_id: str, password_file: Path) -> list[str]:
    return [
        "az",
        "login",
        "--service-principal",
        "--username",
        client_id,
        "--tenant",
        tenant_id,
        "--password",
        f"@{password_file}",
        "--output",
        "none",
    ]


def set_subscription_args(subscription_id: str) -> list[str]:
    return ["az", "account", "set", "--subscription", subscription_id]


def get_credentials_args(cluster: str, resource_group: str, kubeconfig: Path) -> list[str]:
    return [
        "az",
        "aks",
        "get-credentials",
        "--name",
        cluster,
        "--resource-group",
        resource_group,
        "--file",
        str(kubeconfig),
        "--output",
        "none",
    ]


def kubelogin_args(kubeconfig: Path) -> list[str]:
    return ["kubelogin", "convert-kubeconfig", "--login", "azurecli", "--kubeconfig", str(kubeconfig)]


def uses_kubelogin(kubeconfig: Mapping[str, Any]) -> bool:
    return any(
        Path(str(((u.get("user") or {}).get("exec") or {}).get("command", ""))).name == "kubelogin"
        for u in kubeconfig.get("users") or []
    )


def service_principal_from_mapping(data: Mapping[str, Any]) -> tuple[str, str, str]:
    """(appId, tenant, password) of a classic ``auth_file`` (the `az ad sp create-for-rbac` output)."""
    missing = [k for k in ("appId", "tenant", "password") if not data.get(k)]
    if missing:
        raise CredentialsError(
            f"the Azure auth file lacks {', '.join(missing)}",
            hint="it holds the output of `az ad sp create-for-rbac`: appId, tenant, password",
        )
    return str(data["appId"]), str(data["tenant"]), str(data["password"])


@contextlib.contextmanager
def az_env(
    *,
    client_id: str,
    tenant_id: str,
    client_secret: str,
    base_env: Mapping[str, str],
    subscription_id: str | None = None,
) -> Iterator[dict[str, str]]:
    """An env in which az is logged in as the service principal, in a temp AZURE_CONFIG_DIR."""
    runner.register_secret(client_secret)
    with private_dir("hubploy-azure-") as tmp:
        config = tmp / "config"
        config.mkdir(mode=0o700)
        env = {k: v for k, v in base_env.items() if k not in DROP}
        env["AZURE_CONFIG_DIR"] = str(config)
        password_file = write_private(tmp / "sp-password", client_secret)
        try:
            runner.run(login_args(client_id, tenant_id, password_file), env=env)
            if subscription_id:
                runner.run(set_subscription_args(subscription_id), env=env)
        except CommandError as exc:
            raise credentials_failed("az login as the service principal", exc) from None
        finally:
            password_file.unlink(missing_ok=True)
        yield env


@contextlib.contextmanager
def cluster_access(
    *,
    client_id: str,
    tenant_id: str,
    client_secret: str,
    resource_group: str,
    cluster: str,
    base_env: Mapping[str, str],
    subscription_id: str | None = None,
    context: str | None = None,
) -> Iterator[ClusterAccess]:
    with (
        az_env(
            client_id=client_id,
            tenant_id=tenant_id,
            client_secret=client_secret,
            base_env=base_env,
            subscription_id=subscription_id,
        ) as env,
        private_dir("hubploy-kube-") as kdir,
    ):
        kubeconfig = kdir / "config"
        env = kube_env(env, kubeconfig)
        try:
            runner.run(get_credentials_args(cluster, resource_group, kubeconfig), env=env)
            if uses_kubelogin(load_kubeconfig(kubeconfig)):
                runner.run(kubelogin_args(kubeconfig), env=env)
        except CommandError as exc:
            raise credentials_failed(f"az aks get-credentials for AKS cluster {cluster}", exc) from None
        yield ClusterAccess(kubeconfig=kubeconfig, env=env, context=context)
