"""Every key of a JSON Schema as the reference lists it: dotted path, type, default, description.

Works on the schema `hubploy schema` prints (pydantic's: ``$defs`` and ``$ref``, ``anyOf`` with
``null`` for optional keys, ``additionalProperties`` for maps such as ``environments``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]


@dataclass(frozen=True)
class ConfigKey:
    """One key: ``path`` as written in YAML (``[]`` for a list item, ``<name>`` for a map entry)."""

    path: str
    type: str
    default: str
    required: bool
    description: str

    @property
    def depth(self) -> int:
        return self.path.count(".")


def config_keys(schema: Schema) -> list[ConfigKey]:
    """Every key of ``schema``, parents before their children, in the schema's order."""
    keys: list[ConfigKey] = []
    _walk(schema, schema.get("$defs", {}), "", keys, ())
    return keys


def _resolve(node: Schema, defs: Schema) -> Schema:
    """``node`` with its ``$ref`` followed and a ``null`` alternative (an optional key) dropped."""
    while True:
        if "$ref" in node:
            node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            node = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
            continue
        return node


def _walk(node: Schema, defs: Schema, prefix: str, keys: list[ConfigKey], seen: tuple[str, ...]) -> None:
    node = _resolve(node, defs)
    required = set(node.get("required", ()))
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        child = _resolve(prop, defs)
        description = (prop.get("description") or child.get("description") or "").strip()
        keys.append(
            ConfigKey(
                path,
                type_name(prop, defs),
                _default(prop, child, name in required),
                name in required,
                description,
            )
        )
        _children(child, defs, path, keys, seen)


def _children(child: Schema, defs: Schema, path: str, keys: list[ConfigKey], seen: tuple[str, ...]) -> None:
    if path in seen:  # a recursive schema
        return
    seen = (*seen, path)
    # e.g. `environments`: a list of names or a map of settings
    for shape in (child, *(_resolve(o, defs) for o in child.get("anyOf", []))):
        if "properties" in shape:
            _walk(shape, defs, f"{path}.", keys, seen)
        items = shape.get("items")
        if isinstance(items, dict):
            _children(_resolve(items, defs), defs, f"{path}[]", keys, seen)
        values = shape.get("additionalProperties")
        if isinstance(values, dict):
            _children(_resolve(values, defs), defs, f"{path}.<name>", keys, seen)


def type_name(node: Schema, defs: Schema) -> str:
    """A reader's name for the type of ``node``: ``string``, ``list of string``, ``one of a, b``, ..."""
    optional = any(o.get("type") == "null" for o in node.get("anyOf", []))
    node = _resolve(node, defs)
    if "enum" in node:
        name = "one of " + ", ".join(json.dumps(v) for v in node["enum"])
    elif "const" in node:
        name = json.dumps(node["const"])
    elif "anyOf" in node:
        name = " or ".join(type_name(o, defs) for o in node["anyOf"] if o.get("type") != "null")
    else:
        kind = node.get("type", "object" if "properties" in node else "any")
        kinds = [kind] if isinstance(kind, str) else [k for k in kind if k != "null"]
        optional = optional or (not isinstance(kind, str) and "null" in kind)
        name = " or ".join(_plain(k, node, defs) for k in kinds)
    return f"{name}, optional" if optional else name


def _plain(kind: str, node: Schema, defs: Schema) -> str:
    if kind == "array" and isinstance(node.get("items"), dict):
        return f"list of {type_name(node['items'], defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of name to {type_name(node['additionalProperties'], defs)}"
    return {"number": "number", "integer": "integer", "boolean": "boolean"}.get(kind, kind)


def _default(prop: Schema, child: Schema, required: bool) -> str:
    if required:
        return "required"
    if "default" in prop:
        return "none" if prop["default"] is None else json.dumps(prop["default"])
    if child.get("type") == "array":
        return "[]"
    if "properties" in child:
        return "the defaults of its keys"
    return "none"


def undescribed(keys: list[ConfigKey]) -> list[str]:
    """The paths of keys that have no description."""
    return [key.path for key in keys if not key.description]
