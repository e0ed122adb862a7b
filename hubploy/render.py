"""Render what a hub/env would deploy, and read what a release runs now — for `hubploy render`, the
approval diff and the drift check. Secrets are decrypted just in time and never returned in clear:
rendered output goes through :func:`hubploy.manifest_diff.normalized` or :func:`shown`.

A render is made twice: what differs between the two is what the chart generates at random on a
client-side render (see hubploy.manifest_diff), so that an unchanged hub renders as no change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from hubploy import helm
from hubploy.config.loader import SafeLoader
from hubploy.deploy import PreparedValues, redact_rendered
from hubploy.deploy import prepared_values as prepared_values  # part of this module's API
from hubploy.errors import CommandError
from hubploy.layout import DeploymentRepo
from hubploy.manifest_diff import GENERATED, FieldPath, document_key, generated_fields
from hubploy.runner import run


@dataclass(frozen=True)
class Rendered:
    """A render (Secrets in clear: never print it as is) and the fields the chart generated in it."""

    manifest: str
    generated: frozenset[FieldPath]


def template(prepared: PreparedValues, *, env: Mapping[str, str]) -> str:
    """`helm template` of the hub's release with exactly the prepared values."""
    hub, env_name = prepared.hub, prepared.env_name
    argv = helm.template_argv(
        prepared.helm,
        hub.release(env_name),
        str(prepared.chart),
        hub.namespace(env_name),
        prepared.values_args,
    )
    return run(argv, env=env, hint="the chart does not render with these values").stdout


def render(prepared: PreparedValues, *, env: Mapping[str, str]) -> Rendered:
    """The release rendered, with the fields that two renders do not agree on."""
    first = template(prepared, env=env)
    return Rendered(first, generated_fields(first, template(prepared, env=env)))


def render_manifest(
    repo: DeploymentRepo, hub_name: str, env_name: str, *, base_env: Mapping[str, str]
) -> Rendered:
    """What a deploy of ``hub_name`` to ``env_name`` would apply."""
    with prepared_values(repo, repo.load_hub(hub_name), env_name, base_env=base_env) as prepared:
        return render(prepared, env=base_env)


def shown(rendered: Rendered, secret_strings: Sequence[str]) -> str:
    """What `hubploy render` prints: helm's output with the generated fields replaced by ``GENERATED``
    (the same on every run of an unchanged hub) and every secret redacted."""
    return redact_rendered(mask_text(rendered.manifest, rendered.generated), secret_strings)


def mask_text(manifest: str, generated: frozenset[FieldPath]) -> str:
    """``manifest`` with the text of each generated field replaced, its layout and comments kept."""
    if not generated:
        return manifest
    chunks: list[str] = []
    current: list[str] = []
    for line in manifest.splitlines(keepends=True):
        if line.rstrip("\r\n") == "---" and current:
            chunks.append("".join(current))
            current = []
        current.append(line)
    chunks.append("".join(current))
    return "".join(_mask_chunk(chunk, generated) for chunk in chunks)


def _mask_chunk(chunk: str, generated: frozenset[FieldPath]) -> str:
    loader = SafeLoader(chunk)
    try:
        node = loader.get_single_node()
        doc = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError:
        return chunk
    finally:
        loader.dispose()
    if node is None or not isinstance(doc, dict):
        return chunk
    key = document_key(doc)
    spans = sorted(
        (span for doc_key, path in generated if doc_key == key if (span := _span(node, path)) is not None),
        reverse=True,
    )
    for start, end in spans:
        tail = "\n" if chunk[start:end].endswith("\n") else ""
        chunk = chunk[:start] + json.dumps(GENERATED) + tail + chunk[end:]
    return chunk


def _span(node: yaml.Node, path: tuple[str | int, ...]) -> tuple[int, int] | None:
    """Where the scalar at ``path`` is written in the text ``node`` was composed from."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return None
        if node is None:
            return None
    if not isinstance(node, yaml.ScalarNode):
        return None
    return node.start_mark.index, node.end_mark.index


def deployed_manifest(
    executable: str, release: str, namespace: str, *, env: Mapping[str, str], kube_context: str | None = None
) -> str | None:
    """The manifest of the release's current revision, or None when it is not installed."""
    try:
        return run(
            helm.get_manifest_argv(executable, release, namespace, kube_context=kube_context), env=env
        ).stdout
    except CommandError as exc:
        if helm.is_release_not_found(exc.stderr_tail):
            return None
        raise
