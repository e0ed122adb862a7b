"""hubploy.cloud.aws: exact argv, child env and profile files, with the runner replaced by a recorder."""

from __future__ import annotations

import configparser
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

from hubploy.cloud import aws
from hubploy.errors import CredentialsError

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ROLE = "arn:aws:iam::123456789012:role/deployer"


def _ini(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return {s: dict(parser[s]) for s in parser.sections()}


@pytest.fixture
def fake_aws(recorder: Recorder) -> list[dict]:
    """`aws eks update-kubeconfig` writes a kubeconfig with the `aws eks get-token` exec entry; the
    profile files are captured while they exist."""
    seen: list[dict] = []

    def update(argv: list[str], env: dict[str, str]) -> None:
        creds, config = Path(env["AWS_SHARED_CREDENTIALS_FILE"]), Path(env["AWS_CONFIG_FILE"])
        seen.append(
            {
                "credentials": _ini(creds.read_text()),
                "config": _ini(config.read_text()),
                "modes": (mode(creds), mode(config), mode(creds.parent)),
            }
        )
        write_kubeconfig(
            Path(argv[argv.index("--kubeconfig") + 1]),
            exec_user("aws", "--region", "us-west-2", "eks", "get-token", "--cluster-name", "hubs"),
        )

    recorder.on("aws", "eks", "update-kubeconfig", effect=update)
    return seen


def _caller_env(base_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in base_env.items() if k not in aws.DROP}


def test_access_key_pair(recorder: Recorder, fake_aws: list[dict], base_env: dict[str, str]) -> None:
    base_env.update(AWS_ACCESS_KEY_ID="AKIAAMBIENTAMBIENT00", AWS_SECRET_ACCESS_KEY="ambient-secret-ambient")
    environ = dict(os.environ)
    with aws.cluster_access(
        cluster="hubs", region="us-west-2", access_key_id=KEY_ID, secret_access_key=SECRET, base_env=base_env
    ) as access:
        tmp = Path(access.env["AWS_CONFIG_FILE"]).parent
        assert recorder.argvs == [
            [
                "aws",
                "eks",
                "update-kubeconfig",
                "--name",
                "hubs",
                "--region",
                "us-west-2",
                "--kubeconfig",
                str(access.kubeconfig),
            ]
        ]
        aws_env = {
            **_caller_env(base_env),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "credentials"),
            "AWS_CONFIG_FILE": str(tmp / "config"),
            "AWS_PROFILE": "hubploy",
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_PAGER": "",
            "HOME": str(tmp / "home"),
            "KUBECONFIG": str(access.kubeconfig),
        }
        assert recorder.calls[0].env == aws_env
        assert access.env == {**aws_env, "HOME": base_env["HOME"]}  # helm/kubectl keep the caller's HOME
        assert fake_aws == [
            {
                "credentials": {"hubploy": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}},
                "config": {"profile hubploy": {"region": "us-west-2"}},
                "modes": (0o600, 0o600, 0o700),
            }
        ]
        exec_ = yaml.safe_load(access.kubeconfig.read_text())["users"][0]["user"]["exec"]
        assert exec_["command"] == "aws" and exec_["env"] == [{"name": "HOME", "value": str(tmp / "home")}]
    assert not tmp.exists() and not access.kubeconfig.exists()
    assert os.environ == environ
    assert_no_secret_on_argv(recorder, SECRET)
    assert_home_untouched(base_env)


def test_role_with_key_pair_as_source(
    recorder: Recorder, fake_aws: list[dict], base_env: dict[str, str]
) -> None:
    with aws.cluster_access(
        cluster="hubs",
        region="us-west-2",
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        role_arn=ROLE,
        base_env=base_env,
    ):
        pass
    assert fake_aws[0]["credentials"] == {
        "hubploy-source": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    }
    assert fake_aws[0]["config"] == {
        "profile hubploy": {
            "region": "us-west-2",
            "role_arn": ROLE,
            "role_session_name": "hubploy-cluster-auth",
            "source_profile": "hubploy-source",
        }
    }
    assert_no_secret_on_argv(recorder, SECRET)


def test_role_from_ambient_env_keys(
    recorder: Recorder, fake_aws: list[dict], base_env: dict[str, str]
) -> None:
    base_env.update(
        AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET, AWS_SESSION_TOKEN="session-token-x"
    )
    with aws.cluster_access(
        cluster="hubs", region="eu-west-1", role_arn=ROLE, session_name="ci-run-7", base_env=base_env
    ) as access:
        assert "AWS_ACCESS_KEY_ID" not in access.env and "AWS_SESSION_TOKEN" not in access.env
    assert fake_aws[0]["credentials"] == {
        "hubploy-source": {
            "aws_access_key_id": KEY_ID,
            "aws_secret_access_key": SECRET,
            "aws_session_token": "session-token-x",
        }
    }
    assert fake_aws[0]["config"]["profile hubploy"] == {
        "region": "eu-west-1",
        "role_arn": ROLE,
        "role_session_name": "ci-run-7",
        "source_profile": "hubploy-source",
    }
    assert recorder.argvs[0][:3] == ["aws", "eks", "update-kubeconfig"]


@pytest.mark.parametrize(
    ("ambient", "expected"),
    [
        ({}, {"credential_source": "Ec2InstanceMetadata"}),
        (
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x"},
            {"credential_source": "EcsContainer"},
        ),
    ],
)
def test_role_from_instance_or_container(base_env: dict[str, str], ambient: dict, expected: dict) -> None:
    credentials, config = aws.profile_files(
        region="us-west-2", role_arn=ROLE, base_env={**base_env, **ambient}
    )
    assert credentials == ""
    assert _ini(config) == {
        "profile hubploy": {
            "region": "us-west-2",
            "role_arn": ROLE,
            "role_session_name": "hubploy-cluster-auth",
            **expected,
        }
    }


def test_role_from_web_identity(base_env: dict[str, str]) -> None:
    env = {
        **base_env,
        "AWS_ROLE_ARN": "arn:aws:iam::1:role/irsa",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token",
    }
    _, config = aws.profile_files(region="us-west-2", role_arn=ROLE, base_env=env)
    assert _ini(config) == {
        "profile hubploy": {
            "region": "us-west-2",
            "role_arn": ROLE,
            "role_session_name": "hubploy-cluster-auth",
            "source_profile": "hubploy-source",
        },
        "profile hubploy-source": {
            "region": "us-west-2",
            "role_arn": "arn:aws:iam::1:role/irsa",
            "web_identity_token_file": "/var/run/token",
        },
    }


@pytest.mark.parametrize("kwargs", [{}, {"access_key_id": KEY_ID}, {"secret_access_key": SECRET}])
def test_incomplete_credentials(base_env: dict[str, str], kwargs: dict) -> None:
    with pytest.raises(CredentialsError):
        aws.profile_files(region="us-west-2", base_env=base_env, **kwargs)


@pytest.mark.parametrize(
    "data",
    [
        {"creds": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}},
        {"default": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}},
    ],
)
def test_classic_key_file_shapes(data: dict) -> None:
    assert aws.keys_from_mapping(data) == (KEY_ID, SECRET)
    with pytest.raises(CredentialsError):
        aws.keys_from_mapping({"creds": {"aws_access_key_id": KEY_ID}})
