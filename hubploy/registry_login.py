"""Registry logins for cloud registries, as (username, password) pairs, without global config.

Each builder is a pure function returning a :class:`LoginCommand`: the argv, the env overrides
(every config location points into a temp dir the caller owns, never ``~/.config/gcloud``,
``~/.aws`` or ``~/.azure``) and how to read the password from the command's output. Only
:func:`fetch_credentials` runs anything. The credentials then go into a per-run auth file
(:func:`hubploy.registry.auth_files`); no ``docker login``, no credential helpers.

- gcloud: ``gcloud auth print-access-token`` with the key file as
  ``CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE``; username ``oauth2accesstoken``.
- aws: ``aws ecr get-login-password --region R``; username ``AWS``.
- azure: ``az acr login --name REG --expose-token --output json`` in an ``AZURE_CONFIG_DIR`` where the
  cloud layer already ran ``az login``; username is the fixed ACR token user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubploy.config.models import AwsRegistry, DockerconfigRegistry, GcloudRegistry
from hubploy.errors import CredentialsError
from hubploy.layout import Hub
from hubploy.registry import RegistryCredentials, credentials_from_docker_config
from hubploy.runner import child_env, register_secret, run
from hubploy.secrets import decrypt_to_mapping, decrypted, with_age_key
from hubploy.workspace import private_dir

GCLOUD_USERNAME = "oauth2accesstoken"
AWS_USERNAME = "AWS"
ACR_USERNAME = "00000000-0000-0000-0000-000000000000"
LOGIN_TIMEOUT = 120


@dataclass(frozen=True)
class AwsKeys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LoginCommand:
    argv: list[str]
    env: dict[str, str]
    username: str
    parse_password: Callable[[str], str] = field(compare=False, repr=False)
    host: str | None = None  # known in advance (ECR), else read from the output (ACR) or given by the caller
    secrets: tuple[str, ...] = field(default=(), repr=False)


def _stripped(stdout: str) -> str:
    return stdout.strip()


def gcloud_login(config_dir: Path, key_file: Path | None = None) -> LoginCommand:
    """An access token for Artifact Registry / gcr.io from a service-account key (or, without one,
    the credentials the cloud layer stored in ``config_dir``)."""
    env = {"CLOUDSDK_CONFIG": str(config_dir), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    if key_file is not None:
        env["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"] = str(key_file)
    return LoginCommand(["gcloud", "auth", "print-access-token"], env, GCLOUD_USERNAME, _stripped)


def ecr_host(account_id: str, region: str) -> str:
    return f"{account_id}.dkr.ecr.{region}.amazonaws.com"


def aws_login(config_dir: Path, account_id: str, region: str, keys: AwsKeys | None = None) -> LoginCommand:
    """An ECR password; with ``keys`` they are passed to aws in its env only."""
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "credentials"),
        "AWS_CONFIG_FILE": str(config_dir / "config"),
        "AWS_PAGER": "",
        "AWS_REGION": region,
    }
    secrets: tuple[str, ...] = ()
    if keys is not None:
        env["AWS_ACCESS_KEY_ID"] = keys.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = keys.secret_access_key
        secrets = (keys.secret_access_key,)
        if keys.session_token:
            env["AWS_SESSION_TOKEN"] = keys.session_token
            secrets += (keys.session_token,)
    return LoginCommand(
        ["aws", "ecr", "get-login-password", "--region", region],
        env,
        AWS_USERNAME,
        _stripped,
        host=ecr_host(account_id, region),
        secrets=secrets,
    )


def _acr_token(stdout: str) -> str:
    try:
        token = json.loads(stdout)["accessToken"]
    except (ValueError, KeyError, TypeError):
        raise CredentialsError("`az acr login --expose-token` returned no accessToken") from None
    return str(token)


def azure_login(registry: str, env: Mapping[str, str]) -> LoginCommand:
    """An ACR token; ``env`` must hold the ``AZURE_CONFIG_DIR`` where ``az login`` already ran."""
    if "AZURE_CONFIG_DIR" not in env:
        raise CredentialsError(
            "azure registry login needs AZURE_CONFIG_DIR set to a logged-in temp dir",
            hint="log in with the azure credentials block first",
        )
    return LoginCommand(
        ["az", "acr", "login", "--name", registry, "--expose-token", "--output", "json"],
        dict(env),
        ACR_USERNAME,
        _acr_token,
        host=f"{registry}.azurecr.io",
    )


def fetch_credentials(
    command: LoginCommand, host: str | None = None, *, base_env: Mapping[str, str] | None = None
) -> RegistryCredentials:
    """Run ``command`` and return credentials for ``host`` (default: the command's own host)."""
    target = host or command.host
    if not target:
        raise CredentialsError(f"no registry host for `{' '.join(command.argv[:3])}`")
    env = {**(base_env if base_env is not None else child_env()), **command.env}
    result = run(
        command.argv,
        env=env,
        secrets=command.secrets,
        timeout=LOGIN_TIMEOUT,
        hint="check the registry credentials block or key file",
    )
    password = command.parse_password(result.stdout)
    if not password:
        raise CredentialsError(f"`{' '.join(command.argv[:3])}` printed no password for {target}")
    register_secret(password)
    return RegistryCredentials(target, command.username, password)


def credentials_from_env(host: str, environ: Mapping[str, str]) -> RegistryCredentials | None:
    """HUBPLOY_REGISTRY_USERNAME/PASSWORD, when HUBPLOY_REGISTRY names ``host`` (the sandbox, CI)."""
    username, password = environ.get("HUBPLOY_REGISTRY_USERNAME"), environ.get("HUBPLOY_REGISTRY_PASSWORD")
    if environ.get("HUBPLOY_REGISTRY") == host and username and password:
        return RegistryCredentials(host, username, password)
    return None


def aws_keys(data: Mapping[str, Any]) -> AwsKeys:
    """Keys from an aws ``service_key``: modern YAML ``creds.*`` or a classic credentials INI
    ``[default]``."""
    section = data.get("creds") or data.get("default") or data
    try:
        return AwsKeys(
            section["aws_access_key_id"], section["aws_secret_access_key"], section.get("aws_session_token")
        )
    except (KeyError, TypeError):
        raise CredentialsError(
            "the aws service_key has no aws_access_key_id/aws_secret_access_key "
            "(expected creds.* in YAML or a [default] profile)"
        ) from None


def credentials_from_key_files(hub: Hub, host: str, env: Mapping[str, str]) -> RegistryCredentials | None:
    """Credentials from the key files named by the hub's ``images.registry`` (decrypted with sops when
    needed); None when the registry is configured with a credentials block instead (see the flows)."""
    registry = hub.config.images.registry if hub.config.images else None
    if registry is None:
        raise CredentialsError(
            f"hub {hub.name} has no images.registry section, so no registry credentials for {host}",
            hint="add images.registry to hubploy.yaml, or set "
            "HUBPLOY_REGISTRY, HUBPLOY_REGISTRY_USERNAME and HUBPLOY_REGISTRY_PASSWORD",
        )
    settings = registry.settings
    if settings is not None and settings.credentials_block:
        return None
    allow_plaintext = hub.repo.settings.secrets.allow_plaintext
    env = with_age_key(env, hub.repo.age_key_file)
    with private_dir("hubploy-registry-login-") as tmp:
        match settings:
            case DockerconfigRegistry(filename=str(filename)):
                config = decrypt_to_mapping(
                    hub.secret_file(filename), env=env, allow_plaintext=allow_plaintext
                )
                found = credentials_from_docker_config(config, host)
                if found is None:
                    raise CredentialsError(f"{filename} has no credentials for {host}")
                return found
            case GcloudRegistry(service_key=str(service_key)):
                key = hub.secret_file(service_key)
                with decrypted([key], env=env, allow_plaintext=allow_plaintext) as files:
                    return fetch_credentials(gcloud_login(Path(tmp), files[key]), host, base_env=env)
            case AwsRegistry(service_key=str(service_key), account_id=account_id, region=region):
                keys = aws_keys(
                    decrypt_to_mapping(hub.secret_file(service_key), env=env, allow_plaintext=allow_plaintext)
                )
                return fetch_credentials(aws_login(Path(tmp), account_id, region, keys), base_env=env)
    raise CredentialsError(
        f"hub {hub.name}'s registry provider {registry.provider} names no key file that "
        "gives registry credentials (azure and role_arn need a cloud login)",
        hint="set images.registry.<provider>.credentials_block and run the build_images "
        "flow, or set HUBPLOY_REGISTRY_USERNAME/PASSWORD",
    )
