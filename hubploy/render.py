"""Render what a hub/env would deploy, and read what a release runs now — for `hubploy render`, the
approval diff and the drift check. Secrets are decrypted just in time and never returned in clear:
rendered output goes through :func:`hubploy.manifest_diff.normalized` or is redacted by the caller."""

from __future__ import annotations

from collections.abc import Mapping

from hubploy import helm
from hubploy.deploy import PreparedValues, prepared_values
from hubploy.errors import CommandError
from hubploy.layout import DeploymentRepo
from hubploy.runner import run


def template(prepared: PreparedValues, *, env: Mapping[str, str]) -> str:
    """`helm template` of the hub's release with exactly the prepared values."""
    hub, env_name = prepared.hub, prepared.env_name
    argv = helm.template_argv(prepared.helm, hub.release(env_name), str(prepared.chart), hub.namespace(env_name),
                              prepared.values_args)
    return run(argv, env=env, hint="the chart does not render with these values").stdout


def render_manifest(repo: DeploymentRepo, hub_name: str, env_name: str, *, base_env: Mapping[str, str]) -> str:
    """What a deploy of ``hub_name`` to ``env_name`` would apply (Secrets still in clear: do not print)."""
    with prepared_values(repo, repo.load_hub(hub_name), env_name, base_env=base_env) as prepared:
        return template(prepared, env=base_env)


def deployed_manifest(executable: str, release: str, namespace: str, *, env: Mapping[str, str],
                      kube_context: str | None = None) -> str | None:
    """The manifest of the release's current revision, or None when it is not installed."""
    try:
        return run(helm.get_manifest_argv(executable, release, namespace, kube_context=kube_context), env=env).stdout
    except CommandError as exc:
        if helm.is_release_not_found(exc.stderr_tail):
            return None
        raise
