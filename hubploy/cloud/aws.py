"""EKS: an access key pair, or a role to assume, in private AWS config files.

Credentials reach the CLI only through AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE temp files
(never argv, never os.environ). A role is a profile with ``role_arn`` plus ``source_profile`` (or
``credential_source``), so the CLI assumes it, and assumes it again when the session expires.

Token lifetime: `aws eks update-kubeconfig` writes an exec entry (`aws eks get-token`) that mints a
fresh token whenever kubectl/helm need one, so long deploys outlive the 15-minute EKS token.

The CLI caches assumed-role sessions under ``~/.aws/cli/cache`` with no setting to move it, so aws
processes (including the kubeconfig's exec entry) run with HOME set to a temp dir.
"""

from __future__ import annotations

import configparser
import contextlib
import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from hubploy import runner
from hubploy.cloud.base import ClusterAccess, credentials_failed, kube_env, write_private
from hubploy.errors import CommandError, CredentialsError
from hubploy.workspace import private_dir

PROFILE = "hubploy"
SOURCE_PROFILE = "hubploy-source"
DEFAULT_SESSION_NAME = "hubploy-cluster-auth"
# Variables of the caller that would win over (or confuse) the temp profile.
DROP = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def _ini(sections: dict[str, dict[str, str]]) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def profile_files(
    *,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    role_arn: str | None = None,
    session_name: str = DEFAULT_SESSION_NAME,
    base_env: Mapping[str, str],
) -> tuple[str, str]:
    """The (credentials, config) file texts that make profile ``hubploy`` act as requested.

    A role without a key pair is assumed from the caller's own credentials: AWS_* keys in
    ``base_env``, a web identity (EKS IRSA), the ECS container, or else the EC2 instance metadata.
    """
    if bool(access_key_id) != bool(secret_access_key):
        raise CredentialsError("AWS credentials need both an access key id and a secret access key")
    if not access_key_id and not role_arn:
        raise CredentialsError("AWS credentials need an access key pair or a role ARN")
    credentials: dict[str, dict[str, str]] = {}
    config: dict[str, dict[str, str]] = {f"profile {PROFILE}": {"region": region}}
    if not role_arn:
        credentials[PROFILE] = {
            "aws_access_key_id": access_key_id or "",
            "aws_secret_access_key": secret_access_key or "",
        }
        return _ini(credentials), _ini(config)
    profile = config[f"profile {PROFILE}"]
    profile.update(role_arn=role_arn, role_session_name=session_name)
    if access_key_id:
        credentials[SOURCE_PROFILE] = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key or "",
        }
        profile["source_profile"] = SOURCE_PROFILE
    elif base_env.get("AWS_ACCESS_KEY_ID") and base_env.get("AWS_SECRET_ACCESS_KEY"):
        source = {
            "aws_access_key_id": base_env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": base_env["AWS_SECRET_ACCESS_KEY"],
        }
        if base_env.get("AWS_SESSION_TOKEN"):
            source["aws_session_token"] = base_env["AWS_SESSION_TOKEN"]
        credentials[SOURCE_PROFILE] = source
        profile["source_profile"] = SOURCE_PROFILE
    elif base_env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and base_env.get("AWS_ROLE_ARN"):
        config[f"profile {SOURCE_PROFILE}"] = {
            "region": region,
            "role_arn": base_env["AWS_ROLE_ARN"],
            "web_identity_token_file": base_env["AWS_WEB_IDENTITY_TOKEN_FILE"],
        }
        profile["source_profile"] = SOURCE_PROFILE
    elif base_env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or base_env.get(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    ):
        profile["credential_source"] = "EcsContainer"
    else:
        profile["credential_source"] = "Ec2InstanceMetadata"
    return _ini(credentials), _ini(config)


def keys_from_mapping(data: Mapping[str, object]) -> tuple[str, str]:
    """The key pair of a classic ``service_key`` file: sops YAML ``creds.*`` or an ini [default]."""
    for section in (data.get("creds"), data.get("default"), data):
        if (
            isinstance(section, Mapping)
            and section.get("aws_access_key_id")
            and section.get("aws_secret_access_key")
        ):
            return str(section["aws_access_key_id"]), str(section["aws_secret_access_key"])
    raise CredentialsError(
        "the AWS key file has no aws_access_key_id and aws_secret_access_key "
        "(under `creds:` or an ini [default] section)"
    )


def update_kubeconfig_args(cluster: str, region: str, kubeconfig: Path) -> list[str]:
    return [
        "aws",
        "eks",
        "update-kubeconfig",
        "--name",
        cluster,
        "--region",
        region,
        "--kubeconfig",
        str(kubeconfig),
    ]


@contextlib.contextmanager
def aws_env(
    *,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    role_arn: str | None = None,
    session_name: str = DEFAULT_SESSION_NAME,
    base_env: Mapping[str, str],
) -> Iterator[dict[str, str]]:
    """An env in which the aws CLI acts as the given credentials (HOME is a temp dir: aws only)."""
    runner.register_secret(secret_access_key)
    credentials, config = profile_files(
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        role_arn=role_arn,
        session_name=session_name,
        base_env=base_env,
    )
    with private_dir("hubploy-aws-") as tmp:
        home = tmp / "home"
        home.mkdir(mode=0o700)
        env = {k: v for k, v in base_env.items() if k not in DROP}
        env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(write_private(tmp / "credentials", credentials)),
            AWS_CONFIG_FILE=str(write_private(tmp / "config", config)),
            AWS_PROFILE=PROFILE,
            AWS_DEFAULT_REGION=region,
            AWS_PAGER="",
            HOME=str(home),
        )
        yield env


def pin_exec_home(kubeconfig: Path, home: str) -> None:
    """Give every `aws` exec entry of ``kubeconfig`` its private HOME (see the module docstring)."""
    data = yaml.safe_load(kubeconfig.read_text()) or {}
    for user in data.get("users") or []:
        exec_ = (user.get("user") or {}).get("exec")
        if exec_ and Path(str(exec_.get("command", ""))).name == "aws":
            exec_["env"] = [e for e in exec_.get("env") or [] if e.get("name") != "HOME"]
            exec_["env"].append({"name": "HOME", "value": home})
    kubeconfig.write_text(yaml.safe_dump(data, sort_keys=False))


@contextlib.contextmanager
def cluster_access(
    *,
    cluster: str,
    region: str,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    role_arn: str | None = None,
    session_name: str = DEFAULT_SESSION_NAME,
    base_env: Mapping[str, str],
    context: str | None = None,
) -> Iterator[ClusterAccess]:
    with (
        aws_env(
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            role_arn=role_arn,
            session_name=session_name,
            base_env=base_env,
        ) as env,
        private_dir("hubploy-kube-") as kdir,
    ):
        kubeconfig = kdir / "config"
        try:
            runner.run(update_kubeconfig_args(cluster, region, kubeconfig), env=kube_env(env, kubeconfig))
        except CommandError as exc:
            raise credentials_failed(f"aws eks update-kubeconfig for EKS cluster {cluster}", exc) from None
        pin_exec_home(kubeconfig, env["HOME"])
        child = kube_env(env, kubeconfig, drop=("HOME",))  # helm/kubectl keep the caller's HOME
        if "HOME" in base_env:
            child["HOME"] = base_env["HOME"]
        yield ClusterAccess(kubeconfig=kubeconfig, env=child, context=context)
