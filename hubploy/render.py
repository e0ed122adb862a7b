"""Render what a hub/env would deploy, and read what a release runs now — for `hubploy render`, the
approval diff and the drift check. Secrets are decrypted just in time and never returned in clear:
rendered output goes through :func:`hubploy.manifest_diff.normalized` or is redacted by the caller."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from hubploy import helm, values
from hubploy.deploy import _chart_values, register_secret_values, sops_env, update_dependencies
from hubploy.errors import CommandError
from hubploy.images import effective_tag
from hubploy.layout import DeploymentRepo, Hub
from hubploy.runner import run
from hubploy.secrets import decrypted


@dataclass(frozen=True)
class PreparedValues:
    """Exactly the values a deploy of one hub/env uses, with secrets decrypted to temp files."""

    hub: Hub
    env_name: str
    chart: Path
    helm: str
    plan: values.ValuesPlan
    decrypted: Mapping[Path, Path]   # secret file -> its decrypted temp file
    values_args: list[str]           # -f ... --set ... --set-string ... (paths of decrypted temp files)
    merged: dict[str, Any]           # chart values + every layer, as helm merges them
    secret_strings: list[str]        # every string from a secret file (registered for redaction)

    @property
    def user_values(self) -> dict[str, Any]:
        """The layers without the chart's defaults: what `helm get values` reports for the release."""
        return values.merged_values(self.plan, self.decrypted)


@contextmanager
def prepared_values(repo: DeploymentRepo, hub: Hub, env_name: str, *, base_env: Mapping[str, str],
                    set_values: tuple[str, ...] = (), set_string_values: tuple[str, ...] = (),
                    chart: Path | None = None) -> Iterator[PreparedValues]:
    """Layer the values (images injected last), update chart dependencies and decrypt the secrets;
    the decrypted files exist only inside the ``with`` block."""
    chart = (chart or repo.chart_dir).resolve()
    executable = helm.helm_executable(base_env)
    images = [values.ImageValue(spec.helm_substitution_path, spec.name, effective_tag(hub, spec)) for spec in hub.images]
    plan = values.layered_values(hub.dir, repo.root, hub.name, env_name, images=images,
                                 set_values=set_values, set_string_values=set_string_values)
    update_dependencies(executable, chart, env=base_env)
    with decrypted(plan.secret_files, env=sops_env(repo, base_env),
                   allow_plaintext=repo.settings.secrets.allow_plaintext) as files:
        secret_strings = register_secret_values(plan.secret_files, files)
        merged = values.merged_values(plan, files, _chart_values(chart))
        yield PreparedValues(hub, env_name, chart, executable, plan, files, plan.helm_args(files), merged,
                             secret_strings)


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
