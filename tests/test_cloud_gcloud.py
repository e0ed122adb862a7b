"""hubploy.cloud.gcloud: exact argv and child env, with the runner replaced by a recorder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
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

from hubploy.cloud import gcloud
from hubploy.errors import CommandError, CredentialsError

PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-gcloud-test\n-----END PRIVATE KEY-----\n"
)
KEY = {
    "type": "service_account",
    "project_id": "p",
    "private_key_id": "0123abcd",
    "private_key": PRIVATE_KEY,
    "client_email": "deployer@p.iam.gserviceaccount.com",
    "client_id": "1",
}


def _caller_env(base_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base_env.items() if k not in gcloud.DROP}


@pytest.fixture
def fake_gcloud(recorder: Recorder) -> dict[str, object]:
    seen: dict[str, object] = {}

    def activate(argv: list[str], env: dict[str, str]) -> None:
        key = Path(argv[argv.index("--key-file") + 1])
        seen.update(key=json.loads(key.read_text()), key_mode=mode(key), dir_mode=mode(key.parent))

    def get_credentials(argv: list[str], env: dict[str, str]) -> None:
        write_kubeconfig(
            Path(env["KUBECONFIG"]), exec_user("gke-gcloud-auth-plugin"), "gke_p_us-central1-a_hubs"
        )

    recorder.on("gcloud", "auth", "activate-service-account", effect=activate)
    recorder.on("gcloud", "container", "clusters", "get-credentials", effect=get_credentials)
    return seen


def test_service_account_key(recorder: Recorder, fake_gcloud: dict, base_env: dict[str, str]) -> None:
    environ = dict(os.environ)
    with gcloud.cluster_access(
        project="p",
        cluster="hubs",
        location="us-central1-a",
        service_account_info=KEY,
        base_env=base_env,
        context="ctx-x",
    ) as access:
        config = Path(access.env["CLOUDSDK_CONFIG"])
        tmp = config.parent
        kubeconfig = access.kubeconfig
        assert recorder.argvs == [
            [
                "gcloud",
                "auth",
                "activate-service-account",
                "--key-file",
                str(tmp / "service-account.json"),
                "--quiet",
            ],
            [
                "gcloud",
                "container",
                "clusters",
                "get-credentials",
                "hubs",
                "--zone",
                "us-central1-a",
                "--project",
                "p",
                "--quiet",
            ],
        ]
        gcloud_env = {
            **_caller_env(base_env),
            "CLOUDSDK_CONFIG": str(config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        }
        assert recorder.calls[0].env == gcloud_env
        kube = {**gcloud_env, "USE_GKE_GCLOUD_AUTH_PLUGIN": "True", "KUBECONFIG": str(kubeconfig)}
        assert recorder.calls[1].env == kube
        assert access.env == kube and access.context == "ctx-x"
        assert fake_gcloud == {"key": KEY, "key_mode": 0o600, "dir_mode": 0o700}
        assert "gke-gcloud-auth-plugin" in kubeconfig.read_text()  # the refreshing exec entry is kept
        assert not config.is_relative_to(base_env["HOME"]) and config.is_dir()
    assert not tmp.exists() and not kubeconfig.parent.exists()
    assert os.environ == environ
    assert_no_secret_on_argv(recorder, PRIVATE_KEY, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC")
    assert_home_untouched(base_env)


def test_adc_uses_google_application_credentials(
    recorder: Recorder, fake_gcloud: dict, base_env: dict[str, str], tmp_path: Path
) -> None:
    adc = tmp_path / "wif.json"
    adc.write_text("{}")
    base_env["GOOGLE_APPLICATION_CREDENTIALS"] = str(adc)
    with gcloud.cluster_access(
        project="p", cluster="hubs", location="us-central1", service_account_info=None, base_env=base_env
    ) as access:
        config = access.env["CLOUDSDK_CONFIG"]
        assert recorder.argvs == [
            [
                "gcloud",
                "container",
                "clusters",
                "get-credentials",
                "hubs",
                "--region",
                "us-central1",
                "--project",
                "p",
                "--quiet",
            ]
        ]
        assert recorder.calls[0].env == {
            **_caller_env(base_env),
            "CLOUDSDK_CONFIG": config,
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(adc),
            "USE_GKE_GCLOUD_AUTH_PLUGIN": "True",
            "KUBECONFIG": str(access.kubeconfig),
        }
        assert access.context is None
    assert not Path(config).exists()
    assert_home_untouched(base_env)


def test_adc_well_known_file_and_metadata_server(base_env: dict[str, str], tmp_path: Path) -> None:
    assert gcloud.adc_file(base_env) is None  # nothing found: gcloud falls back to the metadata server
    well_known = Path(base_env["HOME"]) / ".config" / "gcloud" / gcloud.ADC_FILE
    well_known.parent.mkdir(parents=True)
    well_known.write_text("{}")
    del base_env["CLOUDSDK_CONFIG"]
    assert gcloud.adc_file(base_env) == str(well_known)
    base_env["CLOUDSDK_CONFIG"] = str(tmp_path / "other")
    assert gcloud.adc_file(base_env) is None


@pytest.mark.parametrize(
    ("location", "flag"),
    [
        ("us-central1-a", "--zone"),
        ("us-central1", "--region"),
        ("northamerica-northeast1-b", "--zone"),
        ("europe-west4", "--region"),
    ],
)
def test_location_flag(location: str, flag: str) -> None:
    assert gcloud.location_flag(location) == flag


def test_failure_is_a_credentials_error_and_cleans_up(recorder: Recorder, base_env: dict[str, str]) -> None:
    dirs: list[Path] = []

    def fail(argv: list[str], env: dict[str, str]) -> None:
        dirs.append(Path(env["CLOUDSDK_CONFIG"]).parent)
        raise CommandError(argv, 1, "ERROR: (gcloud.auth) invalid key\nPlease run:\n  $ gcloud auth login")

    recorder.on("gcloud", "auth", effect=fail)
    with (
        pytest.raises(CredentialsError) as info,
        gcloud.cluster_access(
            project="p", cluster="hubs", location="us-central1", service_account_info=KEY, base_env=base_env
        ),
    ):
        pass
    assert str(info.value) == "gcloud service-account activation failed: ERROR: (gcloud.auth) invalid key"
    assert dirs and not dirs[0].exists()


def test_temp_dirs_removed_when_the_body_raises(
    recorder: Recorder, fake_gcloud: dict, base_env: dict[str, str]
) -> None:
    with (
        pytest.raises(RuntimeError),
        gcloud.cluster_access(
            project="p", cluster="hubs", location="us-central1", service_account_info=KEY, base_env=base_env
        ) as access,
    ):
        paths = [Path(access.env["CLOUDSDK_CONFIG"]), access.kubeconfig]
        raise RuntimeError("deploy failed")
    assert not any(p.exists() for p in paths)


def test_not_a_service_account_key() -> None:
    with pytest.raises(CredentialsError, match="not a service-account JSON key"):
        gcloud.check_service_account_info({"type": "authorized_user", "refresh_token": "x"})
