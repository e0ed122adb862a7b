"""Freeze windows: date ranges (e.g. exam weeks) during which prod promotion is refused."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from hubploy.config.models import FreezeWindow, parse_moment
from hubploy.errors import ApprovalError


def active_freeze(windows: Sequence[FreezeWindow], now: datetime | None = None) -> FreezeWindow | None:
    now = now or datetime.now(timezone.utc)
    return next((w for w in windows if parse_moment(w.start) <= now < parse_moment(w.end)), None)


def freeze_message(window: FreezeWindow) -> str:
    why = f" ({window.reason})" if window.reason else ""
    return f"prod is frozen{why} until {parse_moment(window.end).isoformat()}; promotion is refused until then"


def check_not_frozen(windows: Sequence[FreezeWindow], now: datetime | None = None) -> None:
    window = active_freeze(windows, now)
    if window is not None:
        raise ApprovalError(freeze_message(window), hint="approve again after the window ends")
