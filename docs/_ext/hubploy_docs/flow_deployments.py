"""The Prefect deployments of ``prefect.yaml`` with the signatures of the flows they run."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str
    default: str  # "" when the parameter is required
    deployment_value: str  # what prefect.yaml sets for it, "" when nothing


@dataclass(frozen=True)
class FlowDeployment:
    name: str
    flow_name: str
    entrypoint: str
    description: str
    flow_doc: str
    schedules: tuple[str, ...]
    tags: tuple[str, ...]
    work_pool: str
    parameters: tuple[Parameter, ...]

    @property
    def run_name(self) -> str:
        """What `prefect deployment run` takes: <flow name>/<deployment name>."""
        return f"{self.flow_name}/{self.name}"


def flow_deployments(prefect_yaml: Path) -> list[FlowDeployment]:
    """Each deployment of ``prefect_yaml``, its flow imported from its entrypoint (relative to the file's
    directory, which must be importable)."""
    spec = yaml.safe_load(prefect_yaml.read_text())
    return [_deployment(entry) for entry in spec.get("deployments", [])]


def _deployment(entry: dict[str, Any]) -> FlowDeployment:
    path, _, function = entry["entrypoint"].partition(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), function)
    fixed = entry.get("parameters") or {}
    parameters = tuple(
        Parameter(
            name,
            _annotation(p.annotation),
            "" if p.default is inspect.Parameter.empty else repr(p.default),
            str(fixed[name]) if name in fixed else "",
        )
        for name, p in inspect.signature(flow.fn).parameters.items()
    )
    schedules = tuple(
        f"cron `{s['cron']}` ({s.get('timezone', 'UTC')})"
        for s in entry.get("schedules") or ()
        if "cron" in s
    )
    description = " ".join(str(entry.get("description", "")).split())
    pool = (entry.get("work_pool") or {}).get("name", "")
    return FlowDeployment(
        entry["name"],
        flow.name,
        entry["entrypoint"],
        description,
        inspect.cleandoc(flow.fn.__doc__ or ""),
        schedules,
        tuple(entry.get("tags") or ()),
        pool,
        parameters,
    )


def _annotation(annotation: object) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def undescribed(found: list[FlowDeployment]) -> list[str]:
    """Deployments without a description in prefect.yaml."""
    return [d.name for d in found if not d.description]
