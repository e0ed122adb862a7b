"""Release preparation: the values a deploy of one hub/env uses (layered, images injected last), the
chart's dependencies, the secrets decrypted just in time and registered for redaction, and the digests
of values and configuration that the audit record and the unchanged-release check use."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubploy import helm, values
from hubploy.charts import content_digest, update_dependencies
from hubploy.deploy.model import Logger, log
from hubploy.images import effective_tag
from hubploy.layout import DeploymentRepo, Hub
from hubploy.runner import REDACTED, redact, register_secret
from hubploy.secrets import decrypted, with_age_key

SECRET_PLACEHOLDER = "<secret>"


@dataclass(frozen=True)
class PreparedValues:
    """Exactly the values a deploy of one hub/env uses, with secrets decrypted to temp files."""

    hub: Hub
    env_name: str
    chart: Path
    helm: str
    plan: values.ValuesPlan
    decrypted: Mapping[Path, Path]  # secret file -> its decrypted temp file
    values_args: list[str]  # -f ... --set ... --set-string ... (paths of decrypted temp files)
    merged: dict[str, Any]  # chart values + every layer, as helm merges them
    secret_strings: list[str]  # every string from a secret file (registered for redaction)

    @property
    def user_values(self) -> dict[str, Any]:
        """The layers without the chart's defaults: what `helm get values` reports for the release."""
        return values.merged_values(self.plan, self.decrypted)

    @property
    def secret_paths(self) -> list[tuple[str, ...]]:
        """The key path of every value the secret values files set."""
        return secret_key_paths(self.plan.secret_files, self.decrypted)


@contextlib.contextmanager
def prepared_values(
    repo: DeploymentRepo,
    hub: Hub,
    env_name: str,
    *,
    base_env: Mapping[str, str],
    set_values: tuple[str, ...] = (),
    set_string_values: tuple[str, ...] = (),
    chart: Path | None = None,
    logger: Logger = log,
) -> Iterator[PreparedValues]:
    """Layer the values (images injected last), update chart dependencies and decrypt the secrets;
    the decrypted files exist only inside the ``with`` block."""
    chart = (chart or repo.chart_dir).resolve()
    executable = helm.helm_executable(base_env)
    images = [
        values.ImageValue(spec.helm_substitution_path, spec.name, effective_tag(hub, spec))
        for spec in hub.images
    ]
    plan = values.layered_values(
        hub.dir,
        repo.root,
        hub.name,
        env_name,
        images=images,
        set_values=set_values,
        set_string_values=set_string_values,
    )
    update_dependencies(executable, chart, root=repo.root, env=base_env, logger=logger)
    with decrypted(
        plan.secret_files, env=sops_env(repo, base_env), allow_plaintext=repo.settings.secrets.allow_plaintext
    ) as files:
        secret_strings = register_secret_values(plan.secret_files, files)
        merged = values.merged_values(plan, files, _chart_values(chart))
        yield PreparedValues(
            hub, env_name, chart, executable, plan, files, plan.helm_args(files), merged, secret_strings
        )


# --- step 2: secrets ------------------------------------------------------------------------------------


def sops_env(repo: DeploymentRepo, env: Mapping[str, str]) -> dict[str, str]:
    """sops's environment: ``env`` with the repository's age key file added to the user's own."""
    return with_age_key(env, repo.age_key_file)


def _leaves(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from _leaves(value, (*prefix, str(key)))
    else:
        yield prefix, data


def register_secret_values(secret_files: Sequence[Path], files: Mapping[Path, Path]) -> list[str]:
    """Every string in the decrypted secret values files, registered for redaction."""
    strings = []
    for path in secret_files:
        for _, value in _leaves(values.load_values_file(files[path])):
            if isinstance(value, str):
                register_secret(value)
                strings.append(value)
    return strings


def secret_key_paths(secret_files: Sequence[Path], files: Mapping[Path, Path]) -> list[tuple[str, ...]]:
    """The key path of every value the (decrypted) secret values files set."""
    return [keys for path in secret_files for keys, _ in _leaves(values.load_values_file(files[path]))]


def secret_strings_at(user_values: Mapping[str, Any], paths: Sequence[tuple[str, ...]]) -> list[str]:
    """Every string ``user_values`` holds at (or under) ``paths``: a running release's secrets (its values
    as `helm get values` reports them, at the keys the secret files set), which may differ from the
    checkout's, for redaction."""
    found = []
    for keys in paths:
        node: Any = user_values
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        found += [value for _, value in _leaves(node) if isinstance(value, str) and value]
    return found


def values_digest(merged: Mapping[str, Any], secret_files: Sequence[Path], files: Mapping[Path, Path]) -> str:
    """sha256 of the merged values with every key set by a secret file replaced by a placeholder."""
    masked = json.loads(json.dumps(merged, default=str))
    for keys in secret_key_paths(secret_files, files):
        target = masked
        for key in keys[:-1]:
            target = target.get(key) if isinstance(target, dict) else None
        if isinstance(target, dict) and keys and keys[-1] in target:
            target[keys[-1]] = SECRET_PLACEHOLDER
    text = json.dumps(masked, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def redact_rendered(text: str, secret_strings: Sequence[str]) -> str:
    """Rendered manifests without secrets: every Secret's data/stringData values and every secret string."""
    out: list[str] = []
    in_secret, in_data, data_indent = False, False, 0
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped == "---" or stripped.startswith("MANIFEST:"):
            in_secret, in_data = False, False
        elif indent == 0 and stripped.startswith("kind:"):
            in_secret = stripped.split(":", 1)[1].strip() == "Secret"
        elif in_data and stripped and indent <= data_indent:
            in_data = False
        if in_data and ":" in stripped:
            key = line.split(":", 1)[0]
            out.append(f'{key}: "{REDACTED}"')  # quoted: the output stays valid YAML
            continue
        if in_secret and stripped in ("data:", "stringData:"):
            in_data, data_indent = True, indent
        out.append(line)
    return redact("\n".join(out) + ("\n" if text.endswith("\n") else ""), secret_strings)


def _chart_values(chart: Path) -> dict[str, Any]:
    path = chart / "values.yaml"
    return values.load_values_file(path) if path.is_file() else {}


# --- step 6: unchanged releases ----------------------------------------------------------------------------

CONFIG_STAMP_PREFIX = "hubploy config sha256:"


def config_digest(prepared: PreparedValues, release: str, namespace: str, version: str | None) -> str:
    """sha256 of everything that decides what helm deploys: every file of the chart (a packaged
    dependency by the files in it, not its bytes, which change each time helm packages it), the merged values
    (secrets included: helm stores them in the release anyway), the ``--set`` arguments, release,
    namespace and chart version. Comments and key order in values files do not count."""
    digest = hashlib.sha256(content_digest(prepared.chart).encode())
    described = {
        "values": prepared.merged,
        "set": prepared.plan.set_args,
        "set-string": prepared.plan.set_string_args,
        "release": release,
        "namespace": namespace,
        "version": version,
    }
    digest.update(json.dumps(described, sort_keys=True, separators=(",", ":"), default=str).encode())
    return digest.hexdigest()


def config_stamp(digest: str) -> str:
    """What a revision's helm description carries, so a later deploy can tell it is unchanged."""
    return CONFIG_STAMP_PREFIX + digest
