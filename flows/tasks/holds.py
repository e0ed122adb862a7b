"""Holds: an operator keeps a hub's release out of fleet deploys (`hubploy hold <hub> <env> --reason`).

A hold is a Prefect Variable ``hubploy-hold-<release>`` (tag ``hubploy-hold``) on the server, so it is
shared by every worker and CLI and visible in the UI (Variables); its value says who held the release,
when and why. Holding and unholding write an ``audit-<release>`` artifact, next to the release's deploys.
Fleets skip held releases and say so; `hubploy deploy` of a held hub refuses unless told to ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import VariableFilter, VariableFilterTags
from prefect.client.schemas.objects import Variable as StoredVariable
from prefect.variables import Variable

from flows.tasks.locks import limit_name

HOLD_TAG = "hubploy-hold"
PAGE = 200


@dataclass(frozen=True)
class Hold:
    hub: str
    env: str
    release: str
    reason: str
    by: str
    since: str  # UTC, ISO 8601

    def describe(self) -> str:
        return f"held by {self.by} since {self.since}: {self.reason}"

    @classmethod
    def from_value(cls, value: Any) -> Hold | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(**{key: str(value[key]) for key in ("hub", "env", "release", "reason", "by", "since")})
        except KeyError:
            return None


def variable_name(release: str) -> str:
    return limit_name("hubploy-hold", release)


@task(name="hold", task_run_name="hold-{release}")
def hold(hub: str, env: str, release: str, *, reason: str, by: str) -> Hold:
    """Hold ``release`` (replacing an earlier hold of it) and audit it (a task run, which the artifact
    belongs to)."""
    held = Hold(hub, env, release, reason, by, datetime.now(UTC).isoformat(timespec="seconds"))
    Variable.set(variable_name(release), held.__dict__, tags=[HOLD_TAG, f"env-{env}"], overwrite=True)
    _audit(release, f"# {release}: held\n\n{held.describe()}\n", f"{release}: held by {by}")
    return held


@task(name="unhold", task_run_name="unhold-{release}")
def unhold(release: str, *, by: str) -> Hold | None:
    """Release the hold of ``release``; the hold there was, if any."""
    held = Hold.from_value(Variable.get(variable_name(release)))
    if held is None:
        return None
    Variable.unset(variable_name(release))
    _audit(
        release,
        f"# {release}: hold released\n\nby {by}; it was {held.describe()}\n",
        f"{release}: hold released by {by}",
    )
    return held


def holds(releases: Iterable[str] | None = None) -> dict[str, Hold]:
    """The holds on the server ({release: hold}), of ``releases`` only when given."""
    wanted = None if releases is None else set(releases)
    found: dict[str, Hold] = {}
    tagged = VariableFilter(tags=VariableFilterTags(all_=[HOLD_TAG])).model_dump(
        mode="json", exclude_unset=True
    )
    with get_client(sync_client=True) as client:
        offset = 0
        # the REST API's filter (the client's read_variables takes only a limit)
        while page := StoredVariable.model_validate_list(
            client.request(
                "POST", "/variables/filter", json={"variables": tagged, "offset": offset, "limit": PAGE}
            ).json()
        ):
            for variable in page:
                held = Hold.from_value(variable.value)
                if held is not None and (wanted is None or held.release in wanted):
                    found[held.release] = held
            offset += len(page)
            if len(page) < PAGE:
                break
    return found


def _audit(release: str, markdown: str, description: str) -> None:
    create_markdown_artifact(key=limit_name("audit", release), markdown=markdown, description=description)
