"""The optional hubploy-repo.yaml at the root of a deployment repository, with the checks that need
the repository (its chart dir, its age key file) and the freeze windows."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from hubploy.config.base import Problem, Strict
from hubploy.errors import ApprovalError

class SecretsSettings(Strict):
    allow_plaintext: bool = Field(False, description="Allow files under secrets/ without sops metadata "
                                                     "(for repos whose secrets are protected by git-crypt).")
    age_key_file: str | None = Field(None, description="age key file for sops, relative to the repo root or "
                                                       "absolute; overrides SOPS_AGE_KEY_FILE for hubploy's sops calls.")


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or datetime (UTC when it has no offset)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
    def _ordered(self) -> "FreezeWindow":
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

    prod: list[Name] | None = Field(None, min_length=1, description=(
        "Who may approve or reject a promotion to prod, e.g. [alice, bob@example.org]; the approver name "
        "given in the form (or `hubploy approve --as`) must be one of them, case-insensitive."))

    def allowed(self, env: str) -> list[str] | None:
        """The names that may decide ``env``'s approval, or None when anyone may."""
        return getattr(self, env) if env in type(self).model_fields else None

    def check(self, env: str, name: str) -> None:
        """Raise ApprovalError when names are listed for ``env`` and ``name`` is not one of them."""
        allowed = self.allowed(env)
        if allowed is None or name.strip().casefold() in {a.casefold() for a in allowed}:
            return
        who = repr(name.strip()) if name.strip() else "an approval without a name"
        raise ApprovalError(f"{who} may not decide {env}: approvers.{env} in hubploy-repo.yaml lists "
                            f"{', '.join(allowed)}",
                            hint="give your name as listed there (the form's approver field, or "
                                 "`hubploy approve --as NAME`)")


class RepoSettings(Strict):
    """Contents of the optional hubploy-repo.yaml at the deployment repo root."""

    chart: str = Field("hub", description="Path of the local umbrella chart, relative to the repo root.")
    staging_branch: str = Field("staging", description="Branch whose pushes start the lifecycle.")
    prod_branch: str = Field("prod", description="Branch that only ever receives merges of staging.")
    shared_paths: list[str] = Field(default_factory=list,
                                    description="Extra paths (glob) whose change affects every hub; the chart always does.")
    secrets: SecretsSettings = Field(default_factory=SecretsSettings, description="Secret file policy.")
    freeze_windows: list[FreezeWindow] = Field(default_factory=list,
                                               description="Date ranges during which prod promotion is refused.")
    approval_timeout_hours: float = Field(24, gt=0, description="How long the lifecycle waits for an approval.")
    approvers: Approvers = Field(default_factory=Approvers,
                                 description="Who may decide the approval of each approved environment.")
    cluster_concurrency: int = Field(4, ge=1, description="Most deploys run at once against one cluster.")
    health_check_timeout: float = Field(180, gt=0, description="Seconds a deployed hub has to answer /hub/api "
                                                               "before the deploy is rolled back.")

    def active_freeze(self, now: datetime | None = None) -> FreezeWindow | None:
        """The freeze window ``now`` (default: the current time) falls in, if any."""
        now = now or datetime.now(timezone.utc)
        return next((window for window in self.freeze_windows if window.covers(now)), None)

    def check_not_frozen(self, now: datetime | None = None) -> None:
        """Raise ApprovalError, saying until when, during a freeze window."""
        window = self.active_freeze(now)
        if window is not None:
            raise ApprovalError(window.refusal(), hint="approve again after the window ends")

    def problems(self, root: Path) -> list[Problem]:
        """What this valid file still gets wrong in the repository at ``root``: a chart dir without a
        Chart.yaml, an age key file that does not exist."""
        found = []
        if not (root / self.chart / "Chart.yaml").is_file():
            found.append(Problem(("chart",), f"chart directory {self.chart}/ with a Chart.yaml not found",
                                 "set `chart:` in hubploy-repo.yaml to your umbrella chart's directory"))
        key_file = self.secrets.age_key_file
        if key_file and not (root / key_file).is_file():
            found.append(Problem(("secrets", "age_key_file"), f"age key file {key_file} does not exist",
                                 "the path is relative to the repository root; sops could decrypt nothing"))
        return found
