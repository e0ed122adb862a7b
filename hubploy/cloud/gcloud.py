"""GKE: a service-account key or application default credentials (ADC), in a private gcloud config.

The user's gcloud config is never touched: CLOUDSDK_CONFIG points at a temp dir in every child env.
With a key, `gcloud auth activate-service-account` runs inside that temp config; with ADC, gcloud
reads GOOGLE_APPLICATION_CREDENTIALS (or the well-known ADC file) through
CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE, and falls back to the metadata server on GCP.

Token lifetime: the kubeconfig written by `get-credentials` authenticates through the
gke-gcloud-auth-plugin exec entry, which asks gcloud for a new access token whenever the old one
expires, so a deploy that outlasts the token's hour keeps working (hubploy 1.2 wrote a static
bearer token, valid for about an hour). The env therefore has to stay the same for helm/kubectl.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from hubploy import runner
from hubploy.cloud.base import ClusterAccess, credentials_failed, kube_env, write_private
from hubploy.errors import CommandError, CredentialsError
from hubploy.workspace import private_dir

ADC_FILE = "application_default_credentials.json"
# Variables of the caller that would point gcloud at another account or config.
DROP = (
    "CLOUDSDK_CONFIG",
    "CLOUDSDK_CORE_ACCOUNT",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE",
    "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE",
    "CLOUDSDK_ACTIVE_CONFIG_NAME",
)


def activate_args(key_file: Path) -> list[str]:
    return ["gcloud", "auth", "activate-service-account", "--key-file", str(key_file), "--quiet"]


def location_flag(location: str) -> str:
    """``--zone`` for a zone such as us-central1-a, ``--region`` for a region such as us-central1."""
    return "--zone" if len(location.split("-")) >= 3 else "--region"


def get_credentials_args(cluster: str, location: str, project: str) -> list[str]:
    return [
        "gcloud",
        "container",
        "clusters",
        "get-credentials",
        cluster,
        location_flag(location),
        location,
        "--project",
        project,
        "--quiet",
    ]


def adc_file(base_env: Mapping[str, str]) -> str | None:
    """The ADC file gcloud should use: GOOGLE_APPLICATION_CREDENTIALS, else the well-known file
    that `gcloud auth application-default login` writes; None means the metadata server."""
    if base_env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return base_env["GOOGLE_APPLICATION_CREDENTIALS"]
    config_dir = base_env.get("CLOUDSDK_CONFIG") or (
        str(Path(base_env["HOME"]) / ".config" / "gcloud") if base_env.get("HOME") else None
    )
    if config_dir and (Path(config_dir) / ADC_FILE).is_file():
        return str(Path(config_dir) / ADC_FILE)
    return None


def check_service_account_info(info: Mapping[str, Any]) -> None:
    missing = [k for k in ("client_email", "private_key") if not info.get(k)]
    if info.get("type") != "service_account" or missing:
        raise CredentialsError(
            "the GCP service-account key is not a service-account JSON key "
            f"(type {info.get('type')!r}, missing {', '.join(missing) or 'nothing'})",
            hint="use the JSON key file downloaded for the service account",
        )


@contextlib.contextmanager
def gcloud_env(
    service_account_info: Mapping[str, Any] | None, *, base_env: Mapping[str, str]
) -> Iterator[dict[str, str]]:
    """An env in which gcloud (and docker-credential-gcloud) act as the given account; None = ADC."""
    with private_dir("hubploy-gcloud-") as tmp:
        config = tmp / "config"
        config.mkdir(mode=0o700)
        env = {k: v for k, v in base_env.items() if k not in DROP}
        env.update(CLOUDSDK_CONFIG=str(config), CLOUDSDK_CORE_DISABLE_PROMPTS="1")
        if service_account_info is None:
            adc = adc_file(base_env)
            if adc:
                env["CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE"] = adc
        else:
            check_service_account_info(service_account_info)
            runner.register_secret(str(service_account_info["private_key"]))
            key_file = write_private(tmp / "service-account.json", json.dumps(dict(service_account_info)))
            try:
                runner.run(activate_args(key_file), env=env)
            except CommandError as exc:
                raise credentials_failed("gcloud service-account activation", exc) from None
        yield env


@contextlib.contextmanager
def cluster_access(
    *,
    project: str,
    cluster: str,
    location: str,
    service_account_info: Mapping[str, Any] | None,
    base_env: Mapping[str, str],
    context: str | None = None,
) -> Iterator[ClusterAccess]:
    with gcloud_env(service_account_info, base_env=base_env) as env, private_dir("hubploy-kube-") as kdir:
        kubeconfig = kdir / "config"
        env = kube_env(env, kubeconfig, {"USE_GKE_GCLOUD_AUTH_PLUGIN": "True"})
        try:
            runner.run(get_credentials_args(cluster, location, project), env=env)
        except CommandError as exc:
            raise credentials_failed(f"gcloud get-credentials for GKE cluster {cluster}", exc) from None
        yield ClusterAccess(kubeconfig=kubeconfig, env=env, context=context)
