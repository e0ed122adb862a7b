"""Chart values checked as helm checks them, before any cluster call: a hub's merged values (the chart's
values.yaml, then the hub's files as hubploy layers them) against the chart's values.schema.json, and the
values of each enabled dependency (what the parent sets under its key, over the dependency's own
defaults, with the parent's ``global``) against the dependency's schema, level by level.

Every error names the layer that set the offending key (the highest one holding it), with the key path
and line: a typo under ``jupyterhub:`` in config/common.yaml is reported at that line of that file. Values
from secret files never appear in a message. A layer read without decrypting (``hubploy validate
--no-decrypt``) holds typed placeholders for its encrypted values (sops records each value's type): its
keys and types are checked, not what the values say.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from hubploy.charts import Chart, dependency_charts
from hubploy.config.loader import KeyPath, LineMap, format_key_path
from hubploy.errors import ConfigIssue
from hubploy.runner import redact
from hubploy.values import coalesce

# Rules about what a value says (not its key or type), skipped for a placeholder of an encrypted value.
VALUE_RULES = frozenset(
    {
        "enum",
        "const",
        "pattern",
        "format",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)
_ENCRYPTED = re.compile(r"^ENC\[AES256_GCM,data:.*,type:(\w+)\]$", re.DOTALL)
_PLACEHOLDERS: dict[str, Any] = {"int": 0, "float": 0.0, "bool": False}
_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


@dataclass(frozen=True)
class Layer:
    """Values from one source, lowest first in a list: where they came from, the line of each key path."""

    file: Path
    data: Mapping[str, Any]
    lines: LineMap = field(default_factory=dict)
    secret: bool = False  # messages never show its values
    placeholders: frozenset[KeyPath] = frozenset()  # encrypted values it only knows the type of


def encrypted_structure(data: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[KeyPath]]:
    """A sops-encrypted values file as values with typed placeholders (its ``sops`` metadata left out),
    and the key paths of the placeholders."""
    placeholders: set[KeyPath] = set()

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item, (*path, index)) for index, item in enumerate(node)]
        match = _ENCRYPTED.match(node) if isinstance(node, str) else None
        if match is None:
            return node
        placeholders.add(path)
        return _PLACEHOLDERS.get(match.group(1), "encrypted")

    values = walk({key: value for key, value in data.items() if key != "sops"}, ())
    return values, frozenset(placeholders)


def check_values(
    chart: Chart, root: Path, layers: list[Layer], merged: Mapping[str, Any]
) -> list[ConfigIssue]:
    """Every schema error of ``merged`` (the coalesced values of ``chart``, in the repository at ``root``),
    attributed to ``layers`` (lowest first)."""
    issues: list[ConfigIssue] = []
    for where, schema, values, chart_name in _levels(chart, root, merged, ()):
        if schema is None:
            continue
        validator_class = jsonschema.validators.validator_for(schema)
        for error in validator_class(schema).iter_errors(values):
            issues.extend(_issues(error, where, chart_name, layers))
    unique = {(i.file, i.key_path, i.message): i for i in issues}
    return sorted(unique.values(), key=lambda i: (str(i.file), i.line or 0, i.key_path))


def _levels(
    chart: Chart, root: Path, values: Mapping[str, Any], where: KeyPath
) -> Iterator[tuple[KeyPath, dict[str, Any] | None, Mapping[str, Any], str]]:
    """(key path, schema, values, chart name) of the chart and of each enabled dependency, recursively."""
    yield where, chart.schema, values, chart.name
    dependencies = dependency_charts(chart, root)
    for dependency in chart.dependencies:
        sub = dependencies.get(dependency.key)
        if sub is None or not dependency.enabled(values):
            continue
        given = values.get(dependency.key)
        sub_values = coalesce(sub.values, given if isinstance(given, dict) else {})
        parent_global = values.get("global")
        sub_values["global"] = coalesce(
            sub_values.get("global") or {}, parent_global if isinstance(parent_global, dict) else {}
        )
        yield from _levels(sub, root, sub_values, (*where, dependency.key))


def _issues(
    error: ValidationError, where: KeyPath, chart_name: str, layers: list[Layer]
) -> list[ConfigIssue]:
    path: KeyPath = (*where, *error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return [
            _issue((*path, extra), _unknown_key(error, extra, chart_name), layers)
            for extra in _extra_keys(error)
        ]
    layer = _source(path, layers)
    if layer is not None and path in layer.placeholders and error.validator in VALUE_RULES:
        return []
    return [_issue(path, _message(error, secret=layer is not None and layer.secret), layers)]


def _extra_keys(error: ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    known = set(schema.get("properties") or {})
    patterns = [re.compile(p) for p in schema.get("patternProperties") or {}]
    return [key for key in error.instance if key not in known and not any(p.search(key) for p in patterns)]


def _unknown_key(error: ValidationError, key: str, chart_name: str) -> str:
    known = list((error.schema.get("properties") or {}) if isinstance(error.schema, dict) else {})
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return f"unknown key: the {chart_name} chart's values schema allows no `{key}` here{hint}"


def _kind(value: Any) -> str:
    return next(
        (
            name
            for kind, name in _JSON_TYPES.items()
            if isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        ),
        type(value).__name__,
    )


def _message(error: ValidationError, *, secret: bool) -> str:
    """What the schema wants, without the value when it comes from a secret file."""
    value = "" if secret else f" {json.dumps(error.instance, default=str)[:80]}"
    if error.validator == "type":
        wanted = (
            error.validator_value
            if isinstance(error.validator_value, str)
            else " or ".join(error.validator_value)
        )
        found = _kind(error.instance)
        quote = (
            " (YAML read it as a number: quote it)"
            if found in ("integer", "number") and "string" in wanted
            else ""
        )
        return f"must be {wanted}, not {found}{value}{quote}"
    if error.validator == "enum":
        return (
            f"must be one of {', '.join(json.dumps(v) for v in error.validator_value)}, not{value or ' this'}"
        )
    if error.validator == "required":
        return redact(error.message.replace(" is a required property", " is required here"))
    if secret:
        return f"fails the schema's `{error.validator}` rule (the value is a secret, not shown)"
    return redact(error.message[:300])


def _issue(path: KeyPath, message: str, layers: list[Layer]) -> ConfigIssue:
    layer = _source(path, layers)
    if layer is None:
        layer = layers[0]
    return ConfigIssue(layer.file, format_key_path(path), message, line=_line(path, layer.lines))


def _source(path: KeyPath, layers: list[Layer]) -> Layer | None:
    """The highest layer setting ``path``, else the highest setting the longest part of it."""
    for end in range(len(path), 0, -1):
        for layer in reversed(layers):
            if _holds(layer.data, path[:end]):
                return layer
    return None


def _holds(data: Any, path: KeyPath) -> bool:
    for key in path:
        if isinstance(data, Mapping) and key in data:  # noqa: SIM114 (typed apart: a list takes int keys only)
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return False
    return True


def _line(path: KeyPath, lines: LineMap) -> int | None:
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None
