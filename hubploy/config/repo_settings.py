"""The optional hubploy-repo.yaml at the root of a deployment repository, with the checks that need
the repository (its chart dir, its age key file, the hubs its waves name), the freeze windows, the
rollout (waves, smoke test), the approval policy and the notices."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from difflib import get_close_matches
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from hubploy.config.base import DNS_LABEL, Problem, Strict, is_dns_label
from hubploy.errors import ApprovalError


class SecretsSettings(Strict):
    allow_plaintext: bool = Field(
        False,
        description="Allow files under secrets/ without sops metadata "
        "(for repos whose secrets are protected by git-crypt).",
    )
    age_key_file: str | None = Field(
        None,
        description="age key file for sops, relative to the repo root or "
        "absolute; overrides SOPS_AGE_KEY_FILE for hubploy's "
        "sops calls.",
    )


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or datetime (UTC when it has no offset)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class FreezeWindow(Strict):
    start: str = Field(description="First frozen moment, ISO 8601 date or datetime (UTC if no offset).")
    end: str = Field(description="End of the freeze, exclusive, ISO 8601 date or datetime.")
    reason: str = Field("", description="Shown when a promotion is refused, e.g. 'final exams'.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> str:
        text = value.isoformat() if isinstance(value, (date, datetime)) else str(value)
        try:
            parse_moment(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an ISO 8601 date or datetime (e.g. 2026-12-14)") from None
        return text

    @model_validator(mode="after")
    def _ordered(self) -> FreezeWindow:
        if self.ends <= self.starts:
            raise ValueError("a freeze window must end after it starts")
        return self

    @property
    def starts(self) -> datetime:
        return parse_moment(self.start)

    @property
    def ends(self) -> datetime:
        return parse_moment(self.end)

    def covers(self, moment: datetime) -> bool:
        return self.starts <= moment < self.ends

    def refusal(self) -> str:
        """Why a promotion is refused during this window, and until when."""
        why = f" ({self.reason})" if self.reason else ""
        return f"prod is frozen{why} until {self.ends.isoformat()}; promotion is refused until then"


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Approvers(Strict):
    """Per approved environment, the names that may decide its approval; unset: anyone who can reach the
    Prefect UI or API (the open-source server records no user, so the name is the one the form gives)."""

    prod: list[Name] | None = Field(
        None,
        min_length=1,
        description=(
            "Who may approve or reject a promotion to prod, e.g. [alice, bob@example.org]; the approver name "
            "given in the form (or `hubploy approve --as`) must be one of them, case-insensitive."
        ),
    )

    def allowed(self, env: str) -> list[str] | None:
        """The names that may decide ``env``'s approval, or None when anyone may."""
        return getattr(self, env) if env in type(self).model_fields else None

    def check(self, env: str, name: str) -> None:
        """Raise ApprovalError when names are listed for ``env`` and ``name`` is not one of them."""
        allowed = self.allowed(env)
        if allowed is None or name.strip().casefold() in {a.casefold() for a in allowed}:
            return
        who = repr(name.strip()) if name.strip() else "an approval without a name"
        raise ApprovalError(
            f"{who} may not decide {env}: approvers.{env} in hubploy-repo.yaml lists {', '.join(allowed)}",
            hint="give your name as listed there (the form's approver field, or `hubploy approve --as NAME`)",
        )


# ---------------------------------------------------------------- rollout

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
GLOB_CHARS = frozenset("*?[")


def duration_seconds(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``2m`` or ``1.5h`` (as written in hubploy-repo.yaml)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30s, 2m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(value: Any) -> Any:
    """A bare number of seconds is taken as such (``soak: 90`` is ``90s``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return f"{value:g}s"
    if isinstance(value, str):
        duration_seconds(value)
    return value


def _duration_schema(schema: dict[str, Any]) -> None:
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "string", "pattern": _DURATION.pattern}, {"type": "number", "minimum": 0}]


Duration = Annotated[str, BeforeValidator(_duration), Field(json_schema_extra=_duration_schema)]


class SmokeTest(enum.StrEnum):
    """What a hub's check proves after a deploy (and after a soak)."""

    health = "health"  # /hub/api answers as JupyterHub does
    spawn = "spawn"  # ... and a smoke-test user's server starts, answers through the proxy, and stops


class OnFailure(enum.StrEnum):
    """What a rollout that stops the line does with the hubs that failed their check."""

    rollback = "rollback"  # return them to their last verified release
    keep = "keep"  # leave them as the deploy's own rollback left them (the revision before)


class Wave(Strict):
    name: str = Field(
        description="Shown in the Prefect UI, the approval form and `hubploy plan`; lowercase "
        "letters, digits and '-'.",
        json_schema_extra={"pattern": DNS_LABEL.pattern},
    )
    hubs: list[str] = Field(
        min_length=1,
        description="Hub names or globs (e.g. `physics`, `course-*`, `*`); a hub belongs "
        "to the first wave that matches it.",
    )
    soak: Duration = Field(
        "0s", description="Wait after the wave is healthy, then check its hubs again (e.g. 2m); 0s: no soak."
    )
    max_parallel: int | None = Field(
        None,
        ge=1,
        description="Most hubs of this wave deployed at once (the "
        "clusters' cluster_concurrency still applies).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_dns_label(value):
            raise ValueError(f"wave name {value!r} must be lowercase letters, digits and '-' (at most 63)")
        return value

    @property
    def soak_seconds(self) -> float:
        return duration_seconds(self.soak)

    def matches(self, hub: str) -> bool:
        return any(fnmatchcase(hub, pattern) for pattern in self.hubs)


class SpawnTest(Strict):
    service: str = Field(
        "hubploy-smoke",
        description="The hub.services entry whose API token starts the smoke-test server: "
        "the hub Secret's hub.services.<service>.apiToken (Zero to JupyterHub "
        "keeps a given or generated token there). Give it a hub.loadRoles role "
        "with the scopes admin:users, admin:servers and access:servers.",
    )
    user: str = Field(
        "hubploy-smoke",
        pattern=r"^[a-z0-9][-a-z0-9._]*$",
        description="The smoke-test user (created when missing, its server stopped afterwards).",
    )
    timeout: float = Field(180, gt=0, description="Seconds the user's server has to start and answer.")


class RolloutSettings(Strict):
    waves: list[Wave] = Field(
        default_factory=list,
        description="Waves, deployed one after another; hubs in no wave form a last wave.",
    )
    smoke_test: SmokeTest = Field(
        SmokeTest.health,
        description="health: /hub/api answers. spawn: also start a smoke-test "
        "user's server through the REST API, reach it through the "
        "proxy, stop it.",
    )
    spawn: SpawnTest = Field(default_factory=SpawnTest, description="Settings of the spawn smoke test.")
    on_failure: OnFailure = Field(
        OnFailure.rollback,
        description="When a wave stops the line: rollback returns the hubs "
        "that failed to their last verified release; keep leaves them "
        "on the revision deployed before.",
    )

    @field_validator("waves")
    @classmethod
    def _unique_names(cls, waves: list[Wave]) -> list[Wave]:
        names = [wave.name for wave in waves]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"wave names must be unique: {', '.join(twice)} given twice")
        return waves


# ---------------------------------------------------------------- approvals, notices


class ApprovalPolicy(Strict):
    required: int = Field(
        1, ge=1, le=10, description="Distinct approvers needed; a reject by anyone ends the run."
    )


class Approvals(Strict):
    prod: ApprovalPolicy = Field(
        default_factory=ApprovalPolicy, description="The promotion of staging to prod."
    )


class Notice(enum.StrEnum):
    """What the lifecycle and the rollouts tell people about."""

    approval_waiting = "approval_waiting"  # a run waits for an approval
    run_failed = "run_failed"  # a lifecycle, prod deploy or rollout ended failed
    wave_failed = "wave_failed"  # a wave stopped the line


_BLOCK_REFERENCE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*/[A-Za-z0-9][-A-Za-z0-9_.]*$")


class NoticeTarget(Strict):
    block: str = Field(
        description="A Prefect notification block, as <block type slug>/<block name>, e.g. "
        "slack-webhook/hub-ops or custom-webhook/pager.",
        json_schema_extra={"pattern": _BLOCK_REFERENCE.pattern},
    )
    events: list[Notice] = Field(
        default_factory=lambda: list(Notice),
        min_length=1,
        description="Which notices it gets (default: all).",
    )

    @field_validator("block")
    @classmethod
    def _reference(cls, value: str) -> str:
        if not _BLOCK_REFERENCE.match(value):
            raise ValueError(
                f"{value!r} is not <block type slug>/<block name>, e.g. slack-webhook/hub-ops "
                "(`prefect block ls` lists both)"
            )
        return value


class RepoSettings(Strict):
    """Contents of the optional hubploy-repo.yaml at the deployment repo root."""

    chart: str = Field("hub", description="Path of the local umbrella chart, relative to the repo root.")
    staging_branch: str = Field("staging", description="Branch whose pushes start the lifecycle.")
    prod_branch: str = Field("prod", description="Branch that only ever receives merges of staging.")
    shared_paths: list[str] = Field(
        default_factory=list,
        description="Extra paths (glob) whose change affects every hub; the chart always does.",
    )
    secrets: SecretsSettings = Field(default_factory=SecretsSettings, description="Secret file policy.")
    freeze_windows: list[FreezeWindow] = Field(
        default_factory=list, description="Date ranges during which prod promotion is refused."
    )
    approval_timeout_hours: float = Field(
        24, gt=0, description="How long the lifecycle waits for an approval."
    )
    approvers: Approvers = Field(
        default_factory=Approvers, description="Who may decide the approval of each approved environment."
    )
    cluster_concurrency: int = Field(4, ge=1, description="Most deploys run at once against one cluster.")
    helm_timeout: Duration = Field(
        "10m",
        description=(
            "How long helm waits for a release to be ready (`helm upgrade --wait --timeout`) when a flow, "
            "`hubploy deploy` or `hubploy rollout` deploys without --timeout; a hub that is still not ready "
            "then fails and is rolled back. E.g. 10m, 300s, 1h."
        ),
    )
    health_check_timeout: float = Field(
        180,
        gt=0,
        description="Seconds a deployed hub has to answer /hub/api before the deploy is rolled back.",
    )
    rollout: RolloutSettings | None = Field(
        None,
        description="Progressive delivery: waves, soak, smoke "
        "test. Without it, a fleet deploys every hub "
        "at once.",
    )
    approvals: Approvals = Field(
        default_factory=Approvals, description="How many approvers a promotion needs."
    )
    notifications: list[NoticeTarget] = Field(
        default_factory=list,
        description="Prefect notification blocks told about waiting "
        "approvals, failed runs and waves that stopped the "
        "line.",
    )

    def active_freeze(self, now: datetime | None = None) -> FreezeWindow | None:
        """The freeze window ``now`` (default: the current time) falls in, if any."""
        now = now or datetime.now(UTC)
        return next((window for window in self.freeze_windows if window.covers(now)), None)

    def check_not_frozen(self, now: datetime | None = None) -> None:
        """Raise ApprovalError, saying until when, during a freeze window."""
        window = self.active_freeze(now)
        if window is not None:
            raise ApprovalError(window.refusal(), hint="approve again after the window ends")

    def problems(self, root: Path) -> list[Problem]:
        """What this valid file still gets wrong in the repository at ``root``: a chart dir without a
        Chart.yaml, a wave naming a hub that does not exist, an age key file that does not exist."""
        found = []
        if not (root / self.chart / "Chart.yaml").is_file():
            found.append(
                Problem(
                    ("chart",),
                    f"chart directory {self.chart}/ with a Chart.yaml not found",
                    "set `chart:` in hubploy-repo.yaml to your umbrella chart's directory",
                )
            )
        found += self._wave_problems(root)
        key_file = self.secrets.age_key_file
        if key_file and not (root / key_file).is_file():
            found.append(
                Problem(
                    ("secrets", "age_key_file"),
                    f"age key file {key_file} does not exist",
                    "the path is relative to the repository root; sops could decrypt nothing",
                )
            )
        return found

    def _wave_problems(self, root: Path) -> list[Problem]:
        """A wave naming (without a glob) a hub that does not exist: a typo would deploy it last."""
        hubs_dir = root / "deployments"
        known = (
            {p.name for p in hubs_dir.iterdir() if (p / "hubploy.yaml").is_file()}
            if hubs_dir.is_dir()
            else set()
        )
        found = []
        for index, wave in enumerate(self.rollout.waves if self.rollout else []):
            for position, name in enumerate(wave.hubs):
                if not GLOB_CHARS & set(name) and name not in known:
                    close = get_close_matches(name, sorted(known), n=1)
                    found.append(
                        Problem(
                            ("rollout", "waves", index, "hubs", position),
                            f"wave {wave.name!r} names hub {name!r}, which does not exist",
                            f"did you mean `{close[0]}`?"
                            if close
                            else "hubs are directories under deployments/ with a hubploy.yaml",
                        )
                    )
        return found

    def notice_blocks(self, notice: Notice) -> list[str]:
        """The notification blocks that get ``notice``."""
        return [target.block for target in self.notifications if notice in target.events]


def hubs_matching(patterns: Iterable[str], hubs: Iterable[str]) -> list[str]:
    """The hubs matching any of ``patterns`` (names or globs), sorted."""
    patterns = list(patterns)
    return sorted(hub for hub in hubs if any(fnmatchcase(hub, pattern) for pattern in patterns))
