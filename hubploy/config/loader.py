"""Load YAML files and validate them against a model, turning every problem into a ConfigIssue
that names the file, the key path and the line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hubploy.errors import ConfigIssue

M = TypeVar("M", bound=BaseModel)
KeyPath = tuple[str | int, ...]
LineMap = dict[KeyPath, int]

# Known causes of errors, matched on the message, with what to do about them.
_HINTS: tuple[tuple[str, str], ...] = (
    ("set only one of service_key, role_arn", "an aws block takes either service_key (a key file) or role_arn "
                                               "(assume a role), never both; remove one"),
    ("image_config_path` only applies", "use helm_substitution_path inside an images: entry instead"),
    ("either the legacy `image_name`", "move image_name into an images: entry with path: image"),
    ("needs `path`", "add `path: image` (the build dir) or pin a tag with `name: repo:tag`"),
)


def format_key_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_map(node: yaml.Node, path: KeyPath = (), lines: LineMap | None = None) -> LineMap:
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            lines[sub] = key.start_mark.line + 1
            _line_map(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines)
    return lines


def read_file(path: Path) -> tuple[bytes | None, list[ConfigIssue]]:
    """The bytes of a file, or None and why not."""
    try:
        return path.read_bytes(), []
    except FileNotFoundError:
        return None, [ConfigIssue(path, "", "file not found")]
    except OSError as exc:
        return None, [ConfigIssue(path, "", f"cannot read file: {exc}")]


def load_yaml(path: Path, raw: bytes | None = None) -> tuple[Any, LineMap, list[ConfigIssue]]:
    """Parse one YAML file (``raw``: its bytes, when the caller has read them). Returns (data, line map,
    issues); data is None when unusable."""
    if raw is None:
        raw, issues = read_file(path)
        if raw is None:
            return None, {}, issues
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read
    except UnicodeDecodeError as exc:
        return None, {}, [ConfigIssue(path, "", f"cannot read file: {exc}")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc).splitlines()[0]
        return None, {}, [ConfigIssue(path, "", f"malformed YAML: {problem}", line=line)]
    except yaml.YAMLError as exc:
        return None, {}, [ConfigIssue(path, "", f"malformed YAML: {exc}")]
    duplicates = _duplicate_keys(node, path) if node is not None else []
    if duplicates:
        return None, {}, duplicates
    return data, (_line_map(node) if node is not None else {}), []


def _duplicate_keys(node: yaml.Node, file: Path, path: KeyPath = ()) -> list[ConfigIssue]:
    """A key given twice in one mapping: YAML loaders keep the last silently, losing the first."""
    issues: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in seen and key.tag != "tag:yaml.org,2002:merge":
                issues.append(ConfigIssue(file, format_key_path(path + (key.value,)),
                                          "duplicate key: it is given twice in the same mapping",
                                          line=key.start_mark.line + 1,
                                          hint="keep one; YAML would silently use only the last"))
            seen.add(key.value if isinstance(key, yaml.ScalarNode) else id(key))
            issues.extend(_duplicate_keys(value, file, path + (key.value if isinstance(key, yaml.ScalarNode)
                                                              else "?",)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, file, path + (index,)))
    return issues


def load_mapping(path: Path, *, allow_empty: bool = False,
                 raw: bytes | None = None) -> tuple[dict | None, LineMap, list[ConfigIssue]]:
    """Parse a YAML file that must hold a mapping at its top level (``raw``: its bytes, if read)."""
    data, lines, issues = load_yaml(path, raw)
    if issues:
        return None, lines, issues
    if data is None:
        if allow_empty:
            return {}, lines, []
        return None, lines, [ConfigIssue(path, "", "file is empty; it must be a YAML mapping", line=1)]
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        return None, lines, [ConfigIssue(path, "", f"top level is {kind}; it must be a mapping of keys", line=1)]
    return data, lines, []


def _data_path(loc: tuple[Any, ...], data: Any) -> KeyPath:
    """Keep the parts of a pydantic error location that index into the data (drops union tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, str) and part in node:
            path.append(part)  # a list the model reads as a mapping (environments: [staging, prod])
            node = None
        elif isinstance(node, dict) and isinstance(part, str) and not any(c in part for c in "[]-,"):
            path.append(part)  # a missing key: name it, there is nothing below it
            node = None
    return tuple(path)


def _line_for(path: KeyPath, lines: LineMap) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _allowed_keys(model: type[BaseModel], path: KeyPath) -> list[str]:
    """Field names of the sub-model at `path` (for 'did you mean' hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            current = None
            break
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _message(error: dict[str, Any], model: type[BaseModel], path: KeyPath) -> tuple[str, str | None]:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, path[:-1])
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1) if path else []
        hint = f"did you mean `{close[0]}`?" if close else (f"allowed keys: {', '.join(allowed)}" if allowed else None)
        return "unknown key", hint
    if kind == "missing":
        return "required key is missing", None
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    hint = next((h for needle, h in _HINTS if needle in msg), None)
    return msg, hint


def validate_model(model: type[M], data: Any, file: Path, lines: LineMap) -> tuple[M | None, list[ConfigIssue]]:
    """Validate parsed data; on failure return every error as a ConfigIssue (deduplicated, in file order)."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        issues: dict[tuple[str, str], ConfigIssue] = {}
        for error in exc.errors():
            path = _data_path(error["loc"], data)
            message, hint = _message(error, model, path)
            key = (format_key_path(path), message)
            if key not in issues:
                issues[key] = ConfigIssue(file, key[0], message, line=_line_for(path, lines), hint=hint)
        ordered = sorted(issues.values(), key=lambda i: (i.line or 0, i.key_path))
        return None, ordered
