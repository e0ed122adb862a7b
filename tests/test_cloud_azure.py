"""hubploy.cloud.azure: exact argv and child env; the SP password only ever in a 0600 file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from helpers.cloud import (  # noqa: F401
    Recorder,
    assert_home_untouched,
    assert_no_secret_on_argv,
    base_env,
    exec_user,
    mode,
    recorder,
    write_kubeconfig,
)

from hubploy.cloud import azure
from hubploy.errors import CommandError, CredentialsError

APP_ID = "11111111-2222-3333-4444-555555555555"
TENANT = "contoso.onmicrosoft.com"
PASSWORD = "sp~Pa55w0rd.for-the-azure-test"


def _fake_az(recorder: Recorder, user: dict) -> dict[str, object]:
    seen: dict[str, object] = {}

    def login(argv: list[str], env: dict[str, str]) -> None:
        password_file = Path(argv[argv.index("--password") + 1].removeprefix("@"))
        seen.update(password=password_file.read_text(), mode=mode(password_file), file=password_file)

    def get_credentials(argv: list[str], env: dict[str, str]) -> None:
        write_kubeconfig(Path(argv[argv.index("--file") + 1]), user, "hubs")

    recorder.on("az", "login", effect=login)
    recorder.on("az", "aks", "get-credentials", effect=get_credentials)
    return seen


def test_service_principal_with_kubelogin(recorder: Recorder, base_env: dict[str, str]) -> None:
    seen = _fake_az(recorder, exec_user("kubelogin", "get-token", "--login", "devicecode"))
    environ = dict(os.environ)
    with azure.cluster_access(
        client_id=APP_ID,
        tenant_id=TENANT,
        client_secret=PASSWORD,
        resource_group="rg",
        cluster="hubs",
        base_env=base_env,
        subscription_id="sub-1",
    ) as access:
        config = Path(access.env["AZURE_CONFIG_DIR"])
        tmp = config.parent
        assert recorder.argvs == [
            [
                "az",
                "login",
                "--service-principal",
                "--username",
                APP_ID,
                "--tenant",
                TENANT,
                "--password",
                f"@{tmp / 'sp-password'}",
                "--output",
                "none",
            ],
            ["az", "account", "set", "--subscription", "sub-1"],
            [
                "az",
                "aks",
                "get-credentials",
                "--name",
                "hubs",
                "--resource-group",
                "rg",
                "--file",
                str(access.kubeconfig),
                "--output",
                "none",
            ],
            [
                "kubelogin",
                "convert-kubeconfig",
                "--login",
                "azurecli",
                "--kubeconfig",
                str(access.kubeconfig),
            ],
        ]
        az_env = {
            **{k: v for k, v in base_env.items() if k != "AZURE_CONFIG_DIR"},
            "AZURE_CONFIG_DIR": str(config),
        }
        assert [c.env for c in recorder.calls[:2]] == [az_env, az_env]
        kube = {**az_env, "KUBECONFIG": str(access.kubeconfig)}
        assert [c.env for c in recorder.calls[2:]] == [kube, kube]
        assert access.env == kube and access.context is None
        assert seen["password"] == PASSWORD and seen["mode"] == 0o600
        assert not Path(str(seen["file"])).exists()  # removed right after the login
        assert not config.is_relative_to(base_env["HOME"])
    assert not tmp.exists() and not access.kubeconfig.parent.exists()
    assert os.environ == environ
    assert_no_secret_on_argv(recorder, PASSWORD)
    assert_home_untouched(base_env)


def test_local_account_cluster_needs_no_kubelogin(recorder: Recorder, base_env: dict[str, str]) -> None:
    _fake_az(recorder, {"client-certificate-data": "Y2VydA==", "client-key-data": "a2V5"})
    with azure.cluster_access(
        client_id=APP_ID,
        tenant_id=TENANT,
        client_secret=PASSWORD,
        resource_group="rg",
        cluster="hubs",
        base_env=base_env,
    ):
        pass
    assert [argv[:3] for argv in recorder.argvs] == [
        ["az", "login", "--service-principal"],
        ["az", "aks", "get-credentials"],
    ]


def test_rejected_login_is_a_credentials_error(recorder: Recorder, base_env: dict[str, str]) -> None:
    def reject(argv: list[str], env: dict[str, str]) -> None:
        raise CommandError(argv, 1, "AADSTS7000215: Invalid client secret provided.")

    recorder.on("az", "login", effect=reject)
    with (
        pytest.raises(CredentialsError, match="AADSTS7000215") as info,
        azure.cluster_access(
            client_id=APP_ID,
            tenant_id=TENANT,
            client_secret=PASSWORD,
            resource_group="rg",
            cluster="hubs",
            base_env=base_env,
        ),
    ):
        pass
    assert PASSWORD not in str(info.value)
    assert not Path(recorder.calls[0].env["AZURE_CONFIG_DIR"]).exists()


def test_auth_file_fields() -> None:
    assert azure.service_principal_from_mapping(
        {"appId": APP_ID, "tenant": TENANT, "password": PASSWORD, "displayName": "x"}
    ) == (APP_ID, TENANT, PASSWORD)
    with pytest.raises(CredentialsError, match="lacks password"):
        azure.service_principal_from_mapping({"appId": APP_ID, "tenant": TENANT})


def test_uses_kubelogin() -> None:
    assert azure.uses_kubelogin({"users": [{"name": "u", "user": exec_user("/usr/local/bin/kubelogin")}]})
    assert not azure.uses_kubelogin(yaml.safe_load("users: [{name: u, user: {token: x}}]"))
