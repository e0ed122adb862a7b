"""hubploy.cloud.kubeconfig and the KubeconfigCredentials block: unit tests, and for real against the
sandbox Kubernetes API (token user, CA)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import yaml
from helpers.cloud import assert_home_untouched, base_env, mode  # noqa: F401
from pydantic import SecretStr

from blocks.kubeconfig import KubeconfigCredentials
from hubploy.cloud import ClusterAccess, kubeconfig, verify_access
from hubploy.errors import CredentialsError
from hubploy.runner import REDACTED, redact, run

pytest_plugins = ["fixtures.sandbox"]

TOKEN = "kubeconfig-test-token-0123456789"


def _kubeconfig(tmp_path: Path) -> Path:
    (tmp_path / "ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
    (tmp_path / "token").write_text(TOKEN + "\n")
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "a",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://k8s.example.org:6443",
                            "certificate-authority": "ca.crt",
                        },
                    },
                    {
                        "name": "d",
                        "cluster": {"server": "https://d.example.org", "insecure-skip-tls-verify": True},
                    },
                ],
                "users": [
                    {"name": "u", "user": {"tokenFile": "token"}},
                    {
                        "name": "cert",
                        "user": {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5LWRhdGE="},
                    },
                    {"name": "gke", "user": {"exec": {"command": "gke-gcloud-auth-plugin"}}},
                ],
                "contexts": [
                    {"name": "a", "context": {"cluster": "c", "user": "u", "namespace": "hubs"}},
                    {"name": "b", "context": {"cluster": "d", "user": "cert"}},
                    {"name": "g", "context": {"cluster": "c", "user": "gke"}},
                ],
            }
        )
    )
    return path


def test_fields_from_kubeconfig_reads_files(tmp_path: Path) -> None:
    data = yaml.safe_load(_kubeconfig(tmp_path).read_text())
    fields = kubeconfig.fields_from_kubeconfig(data, base_dir=tmp_path)
    assert fields == kubeconfig.KubeconfigFields(
        context="a",
        server="https://k8s.example.org:6443",
        certificate_authority_data=base64.b64encode((tmp_path / "ca.crt").read_bytes()).decode(),
        insecure_skip_tls_verify=False,
        token=TOKEN,
        client_certificate_data=None,
        client_key_data=None,
        namespace="hubs",
    )
    cert = kubeconfig.fields_from_kubeconfig(data, "b")
    assert (cert.client_certificate_data, cert.client_key_data, cert.insecure_skip_tls_verify) == (
        "Y2VydA==",
        "a2V5LWRhdGE=",
        True,
    )
    with pytest.raises(CredentialsError, match="authenticates with exec"):
        kubeconfig.fields_from_kubeconfig(data, "g")
    with pytest.raises(CredentialsError, match="no context named 'zz'"):
        kubeconfig.fields_from_kubeconfig(data, "zz")


def test_block_keeps_credentials_in_secret_fields(tmp_path: Path) -> None:
    block = KubeconfigCredentials.from_kubeconfig(_kubeconfig(tmp_path))
    assert isinstance(block.token, SecretStr) and block.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(block) and TOKEN not in str(block.model_dump())
    assert (block.context, block.namespace) == ("a", "hubs")
    cert = KubeconfigCredentials.from_kubeconfig(
        yaml.safe_load(_kubeconfig(tmp_path).read_text()), context="b"
    )
    assert isinstance(cert.client_key_data, SecretStr) and cert.token is None
    with pytest.raises(ValueError, match="set a token, or a client certificate and key"):
        KubeconfigCredentials(server="https://x", client_certificate_data="Y2VydA==")


def test_block_access_writes_a_private_kubeconfig(tmp_path: Path, base_env: dict[str, str]) -> None:
    block = KubeconfigCredentials(
        server="https://k8s.example.org",
        token=SecretStr(TOKEN),
        context="nrp-{namespace}",
        namespace="hubs",
        certificate_authority_data="Q0E=",
    )
    environ = dict(os.environ)
    with block.cluster_access("hub-staging", base_env=base_env) as access:
        assert access.context == "nrp-hub-staging"
        assert access.env == {**base_env, "KUBECONFIG": str(access.kubeconfig)}
        assert (mode(access.kubeconfig), mode(access.kubeconfig.parent)) == (0o600, 0o700)
        assert yaml.safe_load(access.kubeconfig.read_text()) == {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "nrp-hub-staging",
            "preferences": {},
            "clusters": [
                {
                    "name": "nrp-hub-staging",
                    "cluster": {"server": "https://k8s.example.org", "certificate-authority-data": "Q0E="},
                }
            ],
            "users": [{"name": "nrp-hub-staging", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "nrp-hub-staging",
                    "context": {"cluster": "nrp-hub-staging", "user": "nrp-hub-staging", "namespace": "hubs"},
                }
            ],
        }
        assert access.kubectl_args() == [
            "--kubeconfig",
            str(access.kubeconfig),
            "--context",
            "nrp-hub-staging",
        ]
        assert access.kube_args() == [
            "--kubeconfig",
            str(access.kubeconfig),
            "--kube-context",
            "nrp-hub-staging",
        ]
    assert not access.kubeconfig.parent.exists()
    assert redact(f"token {TOKEN}") == f"token {REDACTED}"
    assert os.environ == environ
    assert_home_untouched(base_env)


def test_ambient_kubeconfig_is_reused(tmp_path: Path, base_env: dict[str, str]) -> None:
    path = _kubeconfig(tmp_path)
    env = {**base_env, "KUBECONFIG": f"{path}:{tmp_path / 'other'}"}
    with kubeconfig.ambient_access(env) as access:
        assert access == ClusterAccess(kubeconfig=path, env=env, context=None)
    assert path.exists()
    with (
        pytest.raises(CredentialsError, match="no `cluster:` section"),
        kubeconfig.ambient_access({**base_env, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}),
    ):
        pass  # no service-account token either


def _service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str, ca: bytes) -> Path:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(ca)
    (sa / "namespace").write_text("hubploy-system\n")
    monkeypatch.setattr(kubeconfig, "SERVICE_ACCOUNT_DIR", sa)
    return sa


def test_in_cluster_service_account(
    tmp_path: Path, base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = _service_account(tmp_path, monkeypatch, TOKEN, b"CA")
    env = {**base_env, "KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    with kubeconfig.ambient_access(env) as access:
        data = yaml.safe_load(access.kubeconfig.read_text())
        assert data["clusters"][0]["cluster"] == {
            "server": "https://[fd00::1]:443",
            "certificate-authority": str(sa / "ca.crt"),
        }
        assert data["users"][0]["user"] == {"tokenFile": str(sa / "token")}  # re-read: rotation-safe
        assert data["contexts"][0]["context"]["namespace"] == "hubploy-system"
    assert not access.kubeconfig.exists()


def test_from_cluster_config_moves_credentials_into_secret_fields(tmp_path: Path) -> None:
    from prefect_kubernetes.credentials import KubernetesClusterConfig

    data = yaml.safe_load(_kubeconfig(tmp_path).read_text())
    with pytest.raises(CredentialsError, match="names token, which cannot be read"):  # relative to nothing
        KubeconfigCredentials.from_cluster_config(KubernetesClusterConfig(config=data, context_name="a"))
    data["users"][0]["user"] = {"token": TOKEN}
    data["clusters"][0]["cluster"] = {
        "server": "https://k8s.example.org:6443",
        "certificate-authority-data": "Q0E=",
    }
    block = KubeconfigCredentials.from_cluster_config(KubernetesClusterConfig(config=data, context_name="a"))
    assert block.token is not None and block.token.get_secret_value() == TOKEN
    assert (block.server, block.certificate_authority_data, block.context) == (
        "https://k8s.example.org:6443",
        "Q0E=",
        "a",
    )


# ---------------------------------------------------------------- for real, against the sandbox


@pytest.mark.sandbox
def test_sandbox_kubectl_with_block_credentials(sandbox, sandbox_namespace: str) -> None:
    block = KubeconfigCredentials.from_kubeconfig(sandbox.kubeconfig).model_copy(
        update={"context": "sandbox-{namespace}"}
    )
    base = {k: v for k, v in sandbox.env.items() if k != "KUBECONFIG"}
    with block.cluster_access(sandbox_namespace, base_env=base) as access:
        assert access.context == f"sandbox-{sandbox_namespace}"
        assert mode(access.kubeconfig) == 0o600
        out = run(["kubectl", *access.kubectl_args(), "get", "ns", "-o", "name"], env=access.env, timeout=60)
        assert f"namespace/{sandbox_namespace}" in out.stdout.split()
        verify_access(access)
    assert not access.kubeconfig.exists()


@pytest.mark.sandbox
def test_sandbox_in_cluster_service_account(sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod fallback for real: the sandbox's token and CA laid out as a pod's service account."""
    fields = kubeconfig.fields_from_kubeconfig(
        yaml.safe_load(sandbox.kubeconfig.read_text()), base_dir=sandbox.kubeconfig.parent
    )
    assert fields.token and fields.certificate_authority_data
    _service_account(tmp_path, monkeypatch, fields.token, base64.b64decode(fields.certificate_authority_data))
    host, port = fields.server.removeprefix("https://").rsplit(":", 1)
    base = {k: v for k, v in sandbox.env.items() if k != "KUBECONFIG"}
    base.update(HOME=str(tmp_path), KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=port)
    with kubeconfig.ambient_access(base) as access:
        verify_access(access)
        out = run(
            ["kubectl", *access.kubectl_args(), "get", "ns", "default", "-o", "name"],
            env=access.env,
            timeout=60,
        )
        assert out.stdout.strip() == "namespace/default"


@pytest.mark.sandbox
def test_sandbox_wrong_token_is_a_credentials_error(sandbox) -> None:
    block = KubeconfigCredentials.from_kubeconfig(sandbox.kubeconfig).model_copy(
        update={"token": SecretStr("wrong-token-for-the-sandbox")}
    )
    with (
        block.cluster_access("default", base_env=sandbox.env) as access,
        pytest.raises(CredentialsError, match="rejected the credentials") as info,
    ):
        verify_access(access)
    assert "wrong-token-for-the-sandbox" not in str(info.value)
