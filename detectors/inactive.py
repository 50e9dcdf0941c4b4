"""Inactive usage: consumption on an account that is not active.

Water used at a premise whose account was closed: a move-in nobody registered, an unbilled
occupant, or a leak in an empty house. The flag opens once `MIN_VOLUME` has been used and
closes after a day without use.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, profile = InactiveUsage(), MeterProfile()
>>> closed = MeterContext(active=False)
>>> [bool(detector.update(Interval(h * 3600, 3600, 3.0), closed, profile)) for h in (1, 2)]
[False, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext
from detectors.profile import MeterProfile

MIN_VOLUME = 5.0  # gal
HOLD_S = 24 * 3600


class InactiveUsage(Detector):
    """Flags consumption on an inactive account."""

    kinds: ClassVar[tuple[str, ...]] = ("inactive_usage",)

    def __init__(self) -> None:
        self._since: int | None = None
        self._last_use = 0
        self._volume = 0.0

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if context.active:
            self._since, self._volume = None, 0.0
            return NOTHING
        if interval.value >= 0.05:
            if self._since is None:
                self._since, self._volume = interval.ts - interval.seconds, 0.0
            self._volume += interval.value
            self._last_use = interval.ts
        elif self._since is not None and interval.ts - self._last_use > HOLD_S:
            self._since, self._volume = None, 0.0
        if self._since is None or self._volume < MIN_VOLUME:
            return NOTHING
        return [
            Finding(
                kind="inactive_usage",
                started_at=self._since,
                score=min(1.0, 0.6 + self._volume / 500),
                severity="high" if self._volume >= 100 else "medium",
                evidence=(
                    f"{self._volume:,.0f} gal used since the first use on an inactive "
                    "account: someone is using water at a closed account (an unregistered "
                    "move-in?) or an empty house has a leak"
                ),
                details={"volume": round(self._volume, 1)},
            )
        ]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self._since, self._last_use, self._volume)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._since, self._last_use, self._volume = state
