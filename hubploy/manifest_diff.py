"""A reviewable diff between two rendered helm manifests, with Secret contents replaced by digests.

Used in the approval form (what prod will change) and by the drift check. Secret values never
appear: each `data`/`stringData` value of a `kind: Secret` becomes `sha256:<12 hex>`, so a changed
secret still shows up as a changed line.
"""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

import yaml

MAX_DIFF_LINES = 400


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(str(value).encode()).hexdigest()[:12]


def _documents(manifest: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(manifest) if isinstance(d, dict)]


def redact_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    if doc.get("kind") != "Secret":
        return doc
    doc = dict(doc)
    for field in ("data", "stringData"):
        if isinstance(doc.get(field), dict):
            doc[field] = {k: _digest(v) for k, v in doc[field].items()}
    return doc


def _key(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('namespace', '')}/{meta.get('name', '?')}"


def normalized(manifest: str) -> str:
    """The manifest as sorted, redacted YAML documents, so that ordering noise does not show."""
    docs = sorted((redact_secrets(d) for d in _documents(manifest)), key=_key)
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=True) for d in docs)


def manifest_diff(old: str, new: str, *, old_label: str = "running", new_label: str = "proposed",
                  max_lines: int = MAX_DIFF_LINES) -> str:
    """Unified diff of the normalized manifests; empty when they are the same."""
    lines = list(difflib.unified_diff(normalized(old).splitlines(), normalized(new).splitlines(),
                                      old_label, new_label, lineterm="", n=3))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... {len(lines) - max_lines} more lines not shown"]
    return "\n".join(lines)
