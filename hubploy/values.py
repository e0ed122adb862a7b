"""Helm values layering, identical to classic hubploy (``helm.py@606e2c8``), lowest to highest:

1. the chart's own values (helm applies them; no ``-f`` is passed for them);
2. ``deployments/<hub>/config/common.yaml``;
3. ``deployments/<hub>/config/<env>.yaml``;
4. ``deployments/<hub>/secrets/<env>.yaml``, then the secrets-submodule location
   ``<repo>/secrets/deployments/<hub>/secrets/<env>.yaml`` (each only if it exists);
5. user ``--set``, then user ``--set-string``;
6. each image's ``<helm_substitution_path>.tag=<tag>`` and ``.name=<name>``, appended to the
   ``--set-string`` list after the user's, so they win on a conflict.

:func:`layered_values` returns the plan; :meth:`ValuesPlan.helm_args` gives the exact argv tail.
:func:`merged_values` computes the values helm would end up with, for digests and diffs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hubploy.config.loader import load_yaml_or_raise
from hubploy.errors import ConfigError, ConfigIssue, GitError, HubployError, SecretsError
from hubploy.git import image_tag

if TYPE_CHECKING:
    from hubploy.layout import ImageSpec


class ImageValue(NamedTuple):
    """An image to inject into the chart values: where, which repository, which tag."""

    substitution_path: str
    name: str
    tag: str


@dataclass(frozen=True)
class ValuesPlan:
    """The ordered values sources of one hub in one environment."""

    values_files: list[Path] = field(default_factory=list)  # plaintext, in order
    secret_files: list[Path] = field(default_factory=list)  # maybe sops-encrypted, in order
    set_args: list[str] = field(default_factory=list)
    set_string_args: list[str] = field(default_factory=list)

    def helm_args(self, decrypted: Mapping[Path, Path]) -> list[str]:
        """``-f`` for each values file, then each decrypted secret file, then ``--set`` and
        ``--set-string``. ``decrypted`` maps each of ``secret_files`` to the file helm should read
        (see :func:`hubploy.secrets.decrypted`).
        """
        args: list[str] = []
        for path in [*self.values_files, *(_decrypted_path(decrypted, p) for p in self.secret_files)]:
            args += ["-f", str(path)]
        for value in self.set_args:
            args += ["--set", value]
        for value in self.set_string_args:
            args += ["--set-string", value]
        return args


def _decrypted_path(decrypted: Mapping[Path, Path], path: Path) -> Path:
    try:
        return decrypted[path]
    except KeyError:
        raise SecretsError(f"secret values file {path} was not decrypted before use") from None


def image_values(
    repo_root: Path,
    images: Iterable[ImageSpec],
    *,
    allow_dirty: bool = False,
    env: Mapping[str, str] | None = None,
) -> list[ImageValue]:
    """The name and tag to inject for each image: its pinned tag (v1 ``name:tag`` form), else
    hubploy's git tag of its build dir (:func:`hubploy.git.image_tag`; a dirty dir is a GitError).
    """
    values = []
    for spec in images:
        tag = spec.pinned_tag
        if tag is None:
            if spec.path is None:
                raise GitError(f"image {spec.name} has neither a pinned tag nor a build directory")
            tag = image_tag(repo_root, spec.path, allow_dirty=allow_dirty, env=env)
        values.append(ImageValue(spec.helm_substitution_path, spec.name, tag))
    return values


def config_values_files(hub_dir: Path, env: str) -> list[Path]:
    """The values files hubploy reads for ``env``, in order, whether or not they exist."""
    return [hub_dir / "config" / "common.yaml", hub_dir / "config" / f"{env}.yaml"]


def secret_values_files(hub_dir: Path, repo_root: Path, hub: str, env: str) -> list[Path]:
    """The existing secret values files for ``env``: the hub's own, then the submodule's."""
    candidates = [
        hub_dir / "secrets" / f"{env}.yaml",
        repo_root / "secrets" / "deployments" / hub / "secrets" / f"{env}.yaml",
    ]
    return [p for p in candidates if p.is_file()]


def layered_values(
    hub_dir: Path,
    repo_root: Path,
    hub: str,
    env: str,
    *,
    images: Iterable[ImageValue | tuple[str, str, str]] = (),
    set_values: Iterable[str] = (),
    set_string_values: Iterable[str] = (),
) -> ValuesPlan:
    """The values plan of ``hub`` (directory ``hub_dir``) in ``env``; missing files are skipped.

    ``images`` are ``(helm_substitution_path, name, tag)`` in hubploy.yaml order.
    """
    values_files = [p for p in config_values_files(hub_dir, env) if p.is_file()]
    injected: list[str] = []
    for substitution_path, name, tag in images:
        injected += [f"{substitution_path}.tag={tag}", f"{substitution_path}.name={name}"]
    return ValuesPlan(
        values_files=values_files,
        secret_files=secret_values_files(hub_dir, repo_root, hub, env),
        set_args=list(set_values),
        set_string_args=[*set_string_values, *injected],
    )


# --- merged values: helm's merge, for digests and diffs -------------------------------------------

_UNSUPPORTED_KEY = re.compile(r"[\[\]\\{}]")


def merged_values(
    plan: ValuesPlan, decrypted: Mapping[Path, Path], chart_values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The values helm computes for ``plan`` on top of ``chart_values`` (the chart's values.yaml).

    As helm 3 does: values files are deep-merged in order (maps merge, anything else replaces);
    ``--set`` then ``--set-string`` are applied; the result is coalesced over the chart values,
    where a ``null`` removes the chart's key. Subchart defaults and templates are not evaluated.

    Supported ``--set`` syntax: comma-separated ``dotted.key=value`` pairs, where ``--set`` types
    values as helm does (``true``/``false``, ``null``, integers without a leading zero; anything else
    is a string). List indexes (``a[0]=x``), escapes (``a\\.b``), ``{a,b}`` list values and values
    containing commas are rejected with a HubployError: use a values file for those.
    """
    user: dict[str, Any] = {}
    for path in [*plan.values_files, *(_decrypted_path(decrypted, p) for p in plan.secret_files)]:
        user = merge_maps(user, load_values_file(path))
    return coalesce(dict(chart_values or {}), set_values(user, plan.set_args, plan.set_string_args))


def set_values(
    values: Mapping[str, Any], set_args: Iterable[str], set_string_args: Iterable[str]
) -> dict[str, Any]:
    """``values`` with ``--set`` then ``--set-string`` arguments applied (see :func:`merged_values`)."""
    out = copy.deepcopy(dict(values))  # the arguments change it
    for arg in set_args:
        _apply_set(out, arg, as_string=False)
    for arg in set_string_args:
        _apply_set(out, arg, as_string=True)
    return out


def load_values_file(path: Path) -> dict[str, Any]:
    """A values file's mapping ({} when empty); ConfigError naming the file when it is not one."""
    data = load_yaml_or_raise(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [ConfigIssue(path, "", f"a values file must be a mapping, not {type(data).__name__}")]
        )
    return data


def merge_maps(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """helm's ``mergeMaps`` for ``-f`` files: nested maps merge, other values (and null) replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def coalesce(chart: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """helm's ``coalesceValues``: user values win and chart values fill the gaps; a user ``null``
    deletes the chart's key (a ``null`` for a key the chart lacks stays, as in helm).
    """
    out = dict(user)
    for key, default in chart.items():
        if key not in user:
            out[key] = default
        elif user[key] is None:
            del out[key]
        elif isinstance(default, dict) and isinstance(user[key], dict):
            out[key] = coalesce(default, user[key])
    return out


def _apply_set(values: dict[str, Any], arg: str, *, as_string: bool) -> None:
    flag = "--set-string" if as_string else "--set"
    for pair in arg.split(","):
        key, eq, raw = pair.partition("=")
        problem = None
        if not eq:
            problem = f"{key!r} has no value (expected key=value; values containing commas are not supported)"
        elif _UNSUPPORTED_KEY.search(key) or raw.startswith("{") or "\\" in raw:
            problem = "list indexes, escapes and {a,b} lists are not supported"
        elif any(not part for part in key.split(".")):
            problem = "empty key segment"
        if problem:
            raise HubployError(
                f"{flag} {arg!r}: {problem}", hint="put structured values in config/<env>.yaml instead"
            )
        target = values
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = raw if as_string else _typed(raw)


def _typed(raw: str) -> Any:
    """helm's ``strvals.typedVal`` for ``--set``."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if raw == "0":
        return 0
    if raw and raw[0] != "0" and re.fullmatch(r"[+-]?[0-9]+", raw):
        number = int(raw)
        if -(2**63) <= number < 2**63:
            return number
    return raw
