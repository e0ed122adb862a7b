"""Load YAML files and validate them against a model, turning every problem into a ConfigIssue
that names the file, the key path and the line.

Every YAML file hubploy reads from a deployment repository (hubploy.yaml, hubploy-repo.yaml, values
files, decrypted secrets, the chart's Chart.yaml and values.yaml) goes through :func:`load_yaml`, which
bounds what a hostile file can cost: files over ``MAX_YAML_BYTES`` are refused before they are read,
bytes that are not UTF-8 are named with their line, and aliases may add at most ``MAX_ALIAS_NODES``
values (a "billion laughs" file is refused before anything walks it).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hubploy.errors import ConfigError, ConfigIssue

M = TypeVar("M", bound=BaseModel)
# far above any real values file: a helm release must fit in a 1 MiB Secret
MAX_YAML_BYTES = 16 * 1024 * 1024
MAX_ALIAS_NODES = 100_000  # values aliases may add, counted each time an alias is used
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser, ten times faster, when built
KeyPath = tuple[str | int, ...]
LineMap = dict[KeyPath, int]

# Known causes of errors, matched on the message, with what to do about them.
_HINTS: tuple[tuple[str, str], ...] = (
    (
        "set only one of service_key, role_arn",
        (
            "an aws block takes either service_key (a key file) or "
            "role_arn (assume a role), never both; remove one"
        ),
    ),
    ("image_config_path` only applies", "use helm_substitution_path inside an images: entry instead"),
    ("either the legacy `image_name`", "move image_name into an images: entry with path: image"),
    ("needs `path`", "add `path: image` (the build dir) or pin a tag with `name: repo:tag`"),
)


def format_key_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_map(
    node: yaml.Node, path: KeyPath = (), lines: LineMap | None = None, seen: set[int] | None = None
) -> LineMap:
    """The line of every key path; a node reached again through an alias is not walked twice."""
    lines = {} if lines is None else lines
    seen = set() if seen is None else seen
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:
        return lines
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            lines[sub] = key.start_mark.line + 1
            _line_map(value, sub, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines, seen)
    return lines


def read_file(path: Path, *, limit: int = MAX_YAML_BYTES) -> tuple[bytes | None, list[ConfigIssue]]:
    """The bytes of a file, or None and why not (a file over ``limit`` bytes is not read)."""
    try:
        size = path.stat().st_size
        if size > limit:
            return None, [
                ConfigIssue(
                    path,
                    "",
                    f"file is {size / 2**20:.1f} MiB; hubploy reads files up "
                    f"to {limit // 2**20} MiB (a helm release, its values "
                    "included, must fit in one 1 MiB Kubernetes Secret)",
                )
            ]
        return path.read_bytes(), []
    except FileNotFoundError:
        return None, [ConfigIssue(path, "", "file not found")]
    except OSError as exc:
        return None, [ConfigIssue(path, "", f"cannot read file: {exc.strerror or exc}")]


def decode_text(path: Path, raw: bytes) -> tuple[str | None, list[ConfigIssue]]:
    """``raw`` as text, with newlines as a text-mode read gives them; None and the line of the first byte
    that is not UTF-8."""
    try:
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n"), []
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [
            ConfigIssue(
                path,
                "",
                f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded",
                line=line,
                hint="YAML files must be UTF-8; re-save the file as UTF-8",
            )
        ]


class AliasBombError(yaml.YAMLError):  # type: ignore[misc]  # PyYAML ships no type hints: YAMLError is Any
    """Aliases of a YAML file expand to too many values, or refer to themselves."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for once every alias in it is expanded (memoized per node)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise AliasBombError("an alias refers to a value that contains it (a recursive alias)")
    open_nodes.add(key)
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    total = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    sizes[key] = total
    return total


def _check_aliases(node: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    expanded = _expanded_size(node, sizes, set())
    if expanded - len(sizes) > MAX_ALIAS_NODES:
        raise AliasBombError(
            f"its aliases expand to {expanded:,} values from {len(sizes):,} written ones "
            f"(at most {MAX_ALIAS_NODES:,} more are allowed): an alias bomb?"
        )


def parse_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, node) of a one-document YAML text. Raises yaml.YAMLError, or AliasBombError when aliases
    would add more than MAX_ALIAS_NODES values."""
    loader = SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_aliases(node)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def parse_yaml_documents(text: str) -> list[Any]:
    """Every document of a YAML text, each bounded as in :func:`parse_yaml`."""
    loader = SafeLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _check_aliases(node)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def yaml_problem(exc: BaseException) -> tuple[str, int | None]:
    """What a YAML error says, and its line."""
    if isinstance(exc, AliasBombError):
        return f"refused YAML: {exc}", None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        return f"malformed YAML: {exc.problem or str(exc).splitlines()[0]}", mark.line + 1 if mark else None
    return f"malformed YAML: {exc or type(exc).__name__}", None


def parse_checked(text: str, path: Path) -> tuple[Any, LineMap, list[ConfigIssue]]:
    """Parse the YAML text of ``path``: (data, line map, issues), with duplicate keys as issues."""
    try:
        data, node = parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        message, line = yaml_problem(exc)
        return None, {}, [ConfigIssue(path, "", message, line=line)]
    duplicates = _duplicate_keys(node, path) if node is not None else []
    if duplicates:
        return None, {}, duplicates
    return data, (_line_map(node) if node is not None else {}), []


def load_yaml(path: Path, raw: bytes | None = None) -> tuple[Any, LineMap, list[ConfigIssue]]:
    """Parse one YAML file (``raw``: its bytes, when the caller has read them). Returns (data, line map,
    issues); data is None when unusable."""
    if raw is None:
        raw, issues = read_file(path)
        if raw is None:
            return None, {}, issues
    text, issues = decode_text(path, raw)
    if text is None:
        return None, {}, issues
    return parse_checked(text, path)


def load_yaml_or_raise(path: Path) -> Any:
    """The data of a YAML file (None when empty), or ConfigError naming the file and what is wrong."""
    data, _, issues = load_yaml(path)
    if issues:
        raise ConfigError(issues)
    return data


def _duplicate_keys(
    node: yaml.Node, file: Path, path: KeyPath = (), seen_nodes: set[int] | None = None
) -> list[ConfigIssue]:
    """A key given twice in one mapping: YAML loaders keep the last silently, losing the first."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return []
    seen_nodes.add(id(node))
    issues: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if (
                isinstance(key, yaml.ScalarNode)
                and key.value in seen
                and key.tag != "tag:yaml.org,2002:merge"
            ):
                issues.append(
                    ConfigIssue(
                        file,
                        format_key_path(path + (key.value,)),
                        "duplicate key: it is given twice in the same mapping",
                        line=key.start_mark.line + 1,
                        hint="keep one; YAML would silently use only the last",
                    )
                )
            seen.add(key.value if isinstance(key, yaml.ScalarNode) else id(key))
            issues.extend(
                _duplicate_keys(
                    value, file, path + (key.value if isinstance(key, yaml.ScalarNode) else "?",), seen_nodes
                )
            )
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, file, path + (index,), seen_nodes))
    return issues


def load_mapping(
    path: Path, *, allow_empty: bool = False, raw: bytes | None = None
) -> tuple[dict[str, Any] | None, LineMap, list[ConfigIssue]]:
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
        return (
            None,
            lines,
            [ConfigIssue(path, "", f"top level is {kind}; it must be a mapping of keys", line=1)],
        )
    return data, lines, []


def _data_path(loc: tuple[Any, ...], data: Any) -> KeyPath:
    """Keep the parts of a pydantic error location that index into the data (drops union tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (typed apart: a list takes int keys only)
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
        field = (
            current.model_fields.get(part)
            if isinstance(current, type) and issubclass(current, BaseModel)
            else None
        )
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


def _message(error: ErrorDetails, model: type[BaseModel], path: KeyPath) -> tuple[str, str | None]:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, path[:-1])
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1) if path else []
        hint = (
            f"did you mean `{close[0]}`?"
            if close
            else f"allowed keys: {', '.join(allowed)}"
            if allowed
            else None
        )
        return "unknown key", hint
    if kind == "missing":
        return "required key is missing", None
    msg = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    hint = next((h for needle, h in _HINTS if needle in msg), None)
    return msg, hint


def validate_model(
    model: type[M], data: Any, file: Path, lines: LineMap
) -> tuple[M | None, list[ConfigIssue]]:
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
