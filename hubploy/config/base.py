"""What the configuration models share: the strict base model (unknown keys are errors), the
problems their checks report, and the name rules of Kubernetes and helm."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_DNS_LABEL = 63  # Kubernetes' limit for a namespace name
MAX_RELEASE_NAME = 53  # helm's limit for release names
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """What a check of the model finds wrong: the key path it is at, what is wrong, what to do."""

    path: KeyPath
    message: str
    hint: str | None = None


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (already resolved) is ``root`` or under it, once ``root``'s symlinks are resolved."""
    root = root.resolve()
    return path == root or root in path.parents


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_DNS_LABEL and bool(DNS_LABEL.match(name))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
