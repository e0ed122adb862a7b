"""The files of one hub, `deployments/<hub>/`: hubploy.yaml, config/common.yaml and config/<env>.yaml,
the secret values of each environment (in clear here: the caller encrypts them) and the image's
Dockerfile. Both `hubploy init` and `hubploy new-hub` write them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

import yaml

from hubploy.config.base import MAX_RELEASE_NAME, is_dns_label
from hubploy.config.models import DEFAULT_ENVIRONMENTS
from hubploy.errors import HubployError
from hubploy.runner import register_secret
from hubploy.scaffold.texts import CHART_NAME, Z2JH_DOCS, q

IMAGE_DIR = "image"
# A hub's release and namespace are <hub>-<env>; the longest environment name is "develop"/"staging".
MAX_HUB_NAME = MAX_RELEASE_NAME - len("-staging")


def check_hub_name(name: str) -> None:
    """Refuse a name that is no DNS label or makes a release name helm refuses."""
    if not is_dns_label(name) or len(name) > MAX_HUB_NAME:
        raise HubployError(
            f"hub name {name!r} must be lowercase letters, digits and '-', starting and "
            f"ending with a letter or digit, at most {MAX_HUB_NAME} characters",
            hint="it names the hub's directory, its helm releases and namespaces (<hub>-<env>)",
        )


def _yaml(data: dict[str, Any]) -> str:
    return str(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def hub_config_yaml(
    hub: str,
    *,
    image: dict[str, Any] | None,
    cluster: dict[str, Any] | None,
    environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
) -> str:
    """hubploy.yaml: the image entry (with its registry section), the cluster section, the environments."""
    if image is not None:
        image_text = f"""
# The user image, built from {IMAGE_DIR}/ by `hubploy build {hub} --push`: its tag is the last commit
# that changed {IMAGE_DIR}/, and a deploy sets it at {CHART_NAME}.singleuser.image.
""" + _yaml({"images": image})
    else:
        image_text = f"""
# No image of its own: users get the chart's default image ({CHART_NAME}.singleuser.image).
"""
    if cluster is not None:
        cluster_text = "\n# The cluster, and how hubploy gets its credentials.\n" + _yaml(
            {"cluster": cluster}
        )
    else:
        cluster_text = "\n# No cluster section: deploys use the caller's KUBECONFIG (its current context).\n"
    return f"""\
# Hub `{hub}`: how hubploy builds its image and reaches its cluster (`hubploy schema` lists every
# key). Its values are in config/ and, encrypted, in secrets/.
{image_text}{cluster_text}
# Where the hub is deployed: release and namespace <hub>-<env>. An environment's `url:` (the hub's
# public address) is where the health check looks for the hub; without it, the proxy-public Service.
""" + _yaml({"environments": {env: {} for env in environments}})


def common_values_yaml(hub: str) -> str:
    return f"""\
# Values of hub {hub} in every environment, over hub/values.yaml; config/<env>.yaml and
# secrets/<env>.yaml come after. Every key: {Z2JH_DOCS}/resources/reference.html
{CHART_NAME}:
  hub:
    config:
      JupyterHub:
        # Anyone who knows the shared password in secrets/<env>.yaml logs in. Before real users
        # arrive, choose your identity provider: {Z2JH_DOCS}/administrator/authentication.html
        authenticator_class: dummy
      Authenticator:
        allow_all: true
  singleuser:
    defaultUrl: /lab
"""


def env_values_yaml(hub: str, env: str) -> str:
    return f"""\
# Values of hub {hub} in {env} only, over config/common.yaml. For instance its own address through
# an ingress:
#   {CHART_NAME}:
#     proxy:
#       service:
#         type: ClusterIP
#     ingress:
#       enabled: true
#       hosts: [{env}.{hub}.example.org]
{CHART_NAME}: {{}}
"""


def secret_values_yaml(hub: str, env: str) -> str:
    """New secret values (random, registered for redaction), in clear."""
    token, password = secrets.token_hex(32), secrets.token_urlsafe(18)
    register_secret(token)
    register_secret(password)
    return f"""\
# Secret values of hub {hub} in {env}, over config/common.yaml and config/{env}.yaml. Encrypted by
# sops: `sops deployments/{hub}/secrets/{env}.yaml` edits them.
{CHART_NAME}:
  proxy:
    # The token between the hub and its proxy (kept here, it survives a reinstall).
    secretToken: {q(token)}
  hub:
    config:
      DummyAuthenticator:
        # The shared password of the authenticator in config/common.yaml; with your identity
        # provider, its client secret goes here instead.
        password: {q(password)}
"""


def dockerfile(hub: str, base_image: str) -> str:
    return f"""\
# The user image of hub {hub}: what its users' servers run.
FROM {base_image}
# Add what your users need, for instance:
# RUN pip install --no-cache-dir numpy pandas matplotlib
"""


def hub_files(
    hub: str,
    *,
    image: dict[str, Any] | None,
    cluster: dict[str, Any] | None,
    base_image: str | None,
    environments: Iterable[str] = DEFAULT_ENVIRONMENTS,
) -> dict[str, str]:
    """The hub's files but its secrets, by path relative to the hub's directory."""
    envs = list(environments)
    files = {
        "hubploy.yaml": hub_config_yaml(hub, image=image, cluster=cluster, environments=envs),
        "config/common.yaml": common_values_yaml(hub),
    }
    files.update({f"config/{env}.yaml": env_values_yaml(hub, env) for env in envs})
    if image is not None and base_image is not None:
        files[f"{IMAGE_DIR}/Dockerfile"] = dockerfile(hub, base_image)
    return files


def secret_files(hub: str, environments: Iterable[str]) -> dict[str, str]:
    """New secret values files in clear (to be encrypted), by path relative to the hub's directory."""
    return {f"secrets/{env}.yaml": secret_values_yaml(hub, env) for env in environments}
