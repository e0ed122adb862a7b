"""`hubploy new-hub NAME [--from HUB]`: a hub added to a deployment repository, validated at once.

Without ``--from`` the hub gets init's files: hubploy.yaml (no image, no cluster section), config/ and
new secrets. With ``--from HUB`` it gets a copy of that hub's directory without its secrets/, adapted so
that it is a hub of its own:

- its secret values files are new (random values), encrypted by the repository's .sops.yaml rules;
- the key files hubploy.yaml names are HUB's, referred to where they are (one copy of a credential);
- an image built from a directory of HUB's is built from the copy, under a repository named after the new
  hub (the source hub's name replaced, else ``-NAME`` appended): two hubs never push one repository;
- an environment's release, namespace or url that names HUB names the new hub instead, else is dropped
  (the default <hub>-<env>, the proxy-public Service): the new hub never deploys over HUB.

hubploy.yaml keeps its comments: each change is made on its own line, and the result is parsed again; a
file written so that a line cannot be changed alone (flow style, block scalars) is written anew instead.
The hub is written into a temporary directory (at the repository's root, not among the hubs) and renamed
into place; when the validation (``hubploy validate NAME --no-decrypt``: no key is needed to add a hub)
finds a problem, it is removed again.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import yaml

from hubploy.config.base import KeyPath, inside
from hubploy.config.loader import load_yaml_or_raise, parse_yaml
from hubploy.config.models import DEFAULT_ENVIRONMENTS, split_image_reference
from hubploy.errors import ConfigError, HubployError
from hubploy.images import REBUILD_TAGS_FILE
from hubploy.layout import HUB_FILE, Hub, load_repo
from hubploy.scaffold.hubs import check_hub_name, hub_files, secret_files
from hubploy.scaffold.staging import IGNORED_IN_COPIES, StagedTree
from hubploy.scaffold.texts import q
from hubploy.secrets import SECRETS_DIR, encrypt_text
from hubploy.validate import validate_repo

DROP = object()  # an edit that removes the key


@dataclass
class NewHubResult:
    hub: str
    dir: Path
    source: str | None
    environments: list[str]
    images: list[tuple[str, str]] = field(default_factory=list)  # (source image, new image)
    key_files: list[str] = field(default_factory=list)  # HUB's key files it refers to
    changed: list[str] = field(default_factory=list)  # environment settings renamed or dropped
    comments_kept: bool = True


def new_hub(root: Path, name: str, *, source: str | None, env: Mapping[str, str]) -> NewHubResult:
    """Add hub ``name`` to the repository at ``root`` (see the module docstring)."""
    check_hub_name(name)
    repo = load_repo(root)
    if os.path.lexists(repo.hubs_dir / name):
        raise HubployError(
            f"hub {name!r} already exists: {repo.hubs_dir / name}",
            hint="choose another name, or edit that hub",
        )
    hubs = repo.hub_names()
    if source is not None and source not in hubs:
        close = get_close_matches(source, hubs, n=1)
        raise HubployError(
            f"--from {source}: no such hub",
            hint=f"did you mean {close[0]}?" if close else f"hubs: {', '.join(hubs) or 'none'}",
        )
    original = repo.load_hub(source) if source is not None else None
    with StagedTree(repo.hubs_dir / name, workdir=repo.root) as tree:
        if original is None:
            result = NewHubResult(name, repo.hubs_dir / name, None, list(DEFAULT_ENVIRONMENTS))
            for path, text in hub_files(name, image=None, cluster=None, base_image=None).items():
                tree.write(path, text)
        else:
            result = _copy(original, name, tree.root)
        for path, text in secret_files(name, result.environments).items():
            tree.write(path, encrypt_text(text, f"deployments/{name}/{path}", root=repo.root, env=env))
        tree.move_into_place()
    issues = validate_repo(repo.root, [name], decrypt=False, env=env)
    if issues:
        shutil.rmtree(result.dir)
        raise ConfigError(issues)
    return result


def _copy(hub: Hub, name: str, destination: Path) -> NewHubResult:
    """The source hub's directory copied to ``destination`` without its secrets/ and rebuild records,
    with its hubploy.yaml adapted."""

    def ignored(directory: str, names: list[str]) -> set[str]:
        top = {SECRETS_DIR, REBUILD_TAGS_FILE} if Path(directory) == hub.dir else set()
        return top | set(IGNORED_IN_COPIES(directory, names))

    shutil.copytree(hub.dir, destination, ignore=ignored, symlinks=True, dirs_exist_ok=True)
    result = NewHubResult(name, hub.repo.hubs_dir / name, hub.name, hub.environments)
    edits = _adapt(hub, result)
    text, result.comments_kept = edited_yaml(
        hub.config_file.read_text(), load_yaml_or_raise(hub.config_file), hub.lines, edits
    )
    (destination / HUB_FILE).write_text(text)
    return result


def _adapt(hub: Hub, result: NewHubResult) -> dict[KeyPath, Any]:
    """What changes in the copy's hubploy.yaml, by key path (see the module docstring); what it changes is
    recorded in ``result``."""
    edits: dict[KeyPath, Any] = {}
    for prefix, settings in hub.config.provider_settings():
        for key, filename in settings.key_files().items():
            shared = os.path.relpath(
                hub.secret_file(filename).resolve(), (result.dir / SECRETS_DIR).resolve()
            )
            edits[(*prefix, key)] = shared
            result.key_files.append(shared)
    legacy = bool(hub.config.images and hub.config.images.image_name)
    for index, entry in enumerate(hub.config.image_entries()):
        if entry.path is None or not inside((hub.dir / entry.path).resolve(), hub.dir.resolve()):
            continue  # a pinned image, or a directory outside the hub (shared with its other users)
        renamed = renamed_image(entry.name, hub.name, result.hub)
        edits[("images", "image_name") if legacy else ("images", "images", index, "name")] = renamed
        result.images.append((entry.name, renamed))
    for env, env_settings in hub.config.environments.items():
        for key in ("release", "namespace", "url"):
            value = getattr(env_settings, key)
            if value is None:
                continue
            replaced = _replace_token(value, hub.name, result.hub)
            edits[("environments", env, key)] = DROP if replaced == value else replaced
            result.changed.append(
                f"environments.{env}.{key}: " + ("dropped" if replaced == value else replaced)
            )
    return edits


def _replace_token(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced by ``new`` where it stands as a word of letters and digits."""
    return re.sub(rf"(?<![a-z0-9]){re.escape(old)}(?![a-z0-9])", new, text)


def renamed_image(image: str, source: str, name: str) -> str:
    """The repository of ``image`` named after hub ``name``: ``source`` replaced in its last component, else
    ``-name`` appended to it; a pinned tag stays."""
    repository, tag = split_image_reference(image)
    head, slash, last = repository.rpartition("/")
    renamed = _replace_token(last, source, name)
    renamed = renamed if renamed != last else f"{last}-{name}"
    return f"{head}{slash}{renamed}" + (f":{tag}" if tag else "")


_KEY_LINE = re.compile(
    r"^(?P<lead>\s*(?:-\s+)?)(?P<key>[A-Za-z_][\w-]*|\"[^\"]*\"|'[^']*')(?P<sep>\s*:\s+)"
    r"(?P<value>[^#{}\[\]|>&*!\s][^#]*?|\"[^\"]*\"|'[^']*')(?P<comment>\s+#.*)?$"
)


def edited_yaml(
    text: str, data: Any, lines: Mapping[KeyPath, int], edits: Mapping[KeyPath, Any]
) -> tuple[str, bool]:
    """``text`` (whose parsed ``data`` and key ``lines`` are given) with ``edits`` made line by line, and
    True; or, when a line cannot be changed alone, the edited data written anew, and False."""
    expected = copy.deepcopy(data)
    for path, value in edits.items():
        parent = expected
        for part in path[:-1]:
            parent = parent[part]
        if value is DROP:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    rows = text.splitlines(keepends=True)
    dropped = set()
    for path, value in edits.items():
        index = lines[path] - 1
        match = _KEY_LINE.match(rows[index].rstrip("\n"))
        if match is None or match["key"].strip("\"'") != path[-1]:
            return yaml.safe_dump(expected, sort_keys=False), False
        if value is DROP:
            dropped.add(index)
        else:
            rows[index] = f"{match['lead']}{match['key']}{match['sep']}{q(value)}{match['comment'] or ''}\n"
    edited = "".join(row for index, row in enumerate(rows) if index not in dropped)
    if _emptied(parse_yaml(edited)[0]) != _emptied(expected):
        return yaml.safe_dump(expected, sort_keys=False), False
    return edited, True


def _emptied(data: Any) -> Any:
    """``data`` with empty mappings as None (a key whose only child line was dropped reads as null)."""
    if isinstance(data, dict):
        return {key: _emptied(value) for key, value in data.items()} or None
    if isinstance(data, list):
        return [_emptied(item) for item in data]
    return data
