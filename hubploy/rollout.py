"""Progressive delivery, the pure part: which hubs go in which wave, and how a rollout ended.

A rollout deploys its hubs wave after wave (``rollout.waves`` of hubploy-repo.yaml): a hub belongs to
the first wave whose names or globs match it; hubs no wave matches form a last wave, ``remaining``.
Without a ``rollout`` section every hub is in one wave, ``all``, deployed at once (the behaviour before
waves). Each wave's hubs are deployed and checked, then the wave soaks and its hubs are checked again;
the first wave with a hub that fails stops the line: later waves are never deployed.

Nothing here runs anything: the flows (flows/waves.py) and ``hubploy plan`` use these types.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hubploy.config.repo_settings import RolloutSettings

ALL_WAVE = "all"  # the one wave of a repository without `rollout`
REMAINING_WAVE = "remaining"  # the hubs no wave of `rollout.waves` matches


@dataclass(frozen=True)
class WavePlan:
    """One wave of a rollout: its hubs (sorted), its soak and how many hubs deploy at once."""

    number: int  # 1, 2, ... in rollout order
    name: str
    hubs: tuple[str, ...]
    soak_seconds: float = 0.0
    max_parallel: int | None = None


def plan_waves(hubs: Iterable[str], rollout: RolloutSettings | None) -> list[WavePlan]:
    """The waves ``hubs`` are deployed in, in order; waves none of ``hubs`` belongs to are left out."""
    remaining = sorted(set(hubs))
    if rollout is None:
        return [WavePlan(1, ALL_WAVE, tuple(remaining))] if remaining else []
    waves: list[WavePlan] = []
    for wave in rollout.waves:
        taken = [hub for hub in remaining if wave.matches(hub)]
        remaining = [hub for hub in remaining if hub not in taken]
        if taken:
            waves.append(
                WavePlan(len(waves) + 1, wave.name, tuple(taken), wave.soak_seconds, wave.max_parallel)
            )
    if remaining:
        waves.append(WavePlan(len(waves) + 1, REMAINING_WAVE, tuple(remaining)))
    return waves


def select_wave(waves: Sequence[WavePlan], name: str) -> list[WavePlan]:
    """Only the wave ``name`` (``hubploy rollout --wave``); ValueError naming the waves there are."""
    chosen = [wave for wave in waves if wave.name == name]
    if not chosen:
        raise ValueError(
            f"no wave {name!r} in this rollout; its waves: "
            f"{', '.join(w.name for w in waves) or 'none (no hub to deploy)'}"
        )
    return chosen


class HubOutcome(enum.StrEnum):
    """Where a rollout left one hub."""

    deployed = "deployed"  # upgraded, checked, soaked and checked again
    unchanged = "unchanged"  # already ran exactly this configuration; checked
    rolled_back = "rolled-back"  # failed its check (or its upgrade) and runs an earlier revision again
    refused = "refused"  # nothing changed: an image is missing, or the chart does not render
    failed = "failed"  # failed and was not (or could not be) rolled back
    held = "held"  # skipped: held by an operator (`hubploy hold`)
    not_deployed = "not-deployed"  # in a wave after the one that stopped the line: untouched

    @property
    def ok(self) -> bool:
        return self in (HubOutcome.deployed, HubOutcome.unchanged)


STOPS_THE_LINE = (HubOutcome.rolled_back, HubOutcome.refused, HubOutcome.failed)


@dataclass(frozen=True)
class HubReport:
    hub: str
    outcome: HubOutcome
    message: str = ""
    revision_before: int | None = None
    revision_after: int | None = None
    verified_revision: int | None = None  # the revision marked verified by this rollout
    seconds: float = 0.0  # deploy and check (the soak excluded)
    record: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the deploy's audit record


@dataclass(frozen=True)
class WaveReport:
    wave: WavePlan
    hubs: tuple[HubReport, ...]
    seconds: float = 0.0  # deploys and checks of the wave, the soak excluded
    soaked_seconds: float = 0.0

    @property
    def failed(self) -> list[HubReport]:
        """The hubs that stop the line."""
        return [h for h in self.hubs if h.outcome in STOPS_THE_LINE]


@dataclass(frozen=True)
class RolloutReport:
    """How a rollout of ``env`` ended: the waves that ran, and the hubs never reached."""

    env: str
    waves: tuple[WaveReport, ...]
    not_deployed: tuple[tuple[str, str], ...] = ()  # (wave, hub) never touched after the line stopped
    staged: bool = False  # the repository configures `rollout` (waves are named)
    notes: tuple[str, ...] = field(default=())  # e.g. returns to the last verified release

    @property
    def stopped_at(self) -> WaveReport | None:
        """The wave that stopped the line, if one did."""
        return next((wave for wave in self.waves if wave.failed), None)

    @property
    def hubs(self) -> dict[str, HubReport]:
        reports = {h.hub: h for wave in self.waves for h in wave.hubs}
        for _, hub in self.not_deployed:
            reports[hub] = HubReport(hub, HubOutcome.not_deployed)
        return reports

    def failure_message(self) -> str:
        """Which wave stopped the line, which hubs rolled back or failed, which were never deployed."""
        stopped = self.stopped_at
        if stopped is None:
            return ""
        total = len(self.waves) + len({wave for wave, _ in self.not_deployed})
        wave = stopped.wave
        parts = [f"wave {wave.name} ({wave.number} of {total}) stopped the {self.env} rollout"]
        for outcome in STOPS_THE_LINE:
            hubs = [h for h in stopped.failed if h.outcome is outcome]
            if hubs:
                parts.append(f"{outcome.value}: " + "; ".join(f"{h.hub} ({h.message})" for h in hubs))
        if self.not_deployed:
            parts.append("never deployed: " + ", ".join(f"{hub} ({wave})" for wave, hub in self.not_deployed))
        parts += self.notes
        return ". ".join(parts)

    def table(self) -> list[dict[str, str]]:
        """One row per hub, in rollout order (the Prefect artifact, the approval form, the CLI)."""
        rows = [
            {
                "wave": w.wave.name,
                "hub": h.hub,
                "result": h.outcome.value,
                "revision": _revisions(h),
                "verified": str(h.verified_revision or ""),
                "seconds": f"{h.seconds:.1f}",
                "message": h.message,
            }
            for w in self.waves
            for h in w.hubs
        ]
        rows += [
            {
                "wave": wave,
                "hub": hub,
                "result": HubOutcome.not_deployed.value,
                "revision": "",
                "verified": "",
                "seconds": "",
                "message": "",
            }
            for wave, hub in self.not_deployed
        ]
        return rows


def _revisions(report: HubReport) -> str:
    if report.revision_before is None and report.revision_after is None:
        return ""
    return f"{report.revision_before or 'none'} -> {report.revision_after or 'none'}"


def untouched(waves: Sequence[WavePlan]) -> tuple[tuple[str, str], ...]:
    """(wave, hub) of every hub of ``waves``: what a stopped line never deployed."""
    return tuple((wave.name, hub) for wave in waves for hub in wave.hubs)
