"""Read the chart's values and generated secrets from inside the hub pod.

The chart mounts, next to this module (``/usr/local/etc/jupyterhub/`` in the hub pod):

- ``secret/``: the hub Secret: ``values.yaml`` (the chart values) and generated secrets;
- ``existing-secret/``: the Secret named by ``hub.existingSecret``, if any; its keys win, and
  its ``values.yaml`` is merged over the chart's;
- ``config/``: the hub ConfigMap, with the names of the release's objects.

``hub.extraConfig`` snippets can use it too: ``from z2jh import get_config``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Any

import yaml

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
_SECRET_DIRS = ("existing-secret", "secret")  # first found wins
_MISSING = object()


def _merged(base: Mapping, over: Mapping) -> dict:
    """``over`` merged into ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


@cache
def _values() -> dict:
    values: dict = {}
    for directory in reversed(_SECRET_DIRS):
        path = os.path.join(BASE_DIR, directory, "values.yaml")
        if os.path.exists(path):
            print(f"Loading chart values from {path}")
            with open(path) as f:
                values = _merged(values, yaml.safe_load(f) or {})
    return values


def get_config(key: str, default: Any = None) -> Any:
    """The chart value at a dotted path (``get_config("singleuser.image.name")``), or ``default``
    when a part of the path is missing. Mappings and lists are shared with later callers: copy
    them before changing them."""
    value: Any = _values()
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = value[part]
    return value


def get_secret_value(key: str, default: Any = _MISSING) -> Any:
    """A key of hub.existingSecret or else of the chart's hub Secret (``hub.db.password``,
    ``hub.config.JupyterHub.cookie_secret``, ...); ``default`` if neither has it."""
    for directory in _SECRET_DIRS:
        path = os.path.join(BASE_DIR, directory, key)
        if os.path.exists(path):
            with open(path) as f:
                return f.read()
    if default is _MISSING:
        raise KeyError(f"{key} is in neither the hub Secret nor hub.existingSecret")
    return default


def get_name(name: str) -> str:
    """The name of a release object by its short name (``hub``, ``proxy-api``, ``user-scheduler``)."""
    path = os.path.join(BASE_DIR, "config", name)
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        raise KeyError(f"the hub ConfigMap has no name for {name!r} ({path})") from None


def get_name_env(name: str, suffix: str = "") -> str:
    """An environment variable Kubernetes sets for a Service of the release, e.g.
    ``get_name_env("proxy-api", "_SERVICE_PORT")`` reads PROXY_API_SERVICE_PORT."""
    variable = (get_name(name) + suffix).upper().replace("-", "_")
    try:
        return os.environ[variable]
    except KeyError:
        raise KeyError(f"{variable} is not set: is the {get_name(name)} Service missing?") from None


def set_config_if_not_none(section: Any, trait: str, key: str) -> None:
    """Set ``section.<trait>`` (a traitlets config section) to the chart value ``key`` unless it is
    null or absent, so the trait keeps its own default then."""
    value = get_config(key)
    if value is not None:
        setattr(section, trait, value)
