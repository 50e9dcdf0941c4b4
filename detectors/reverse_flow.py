"""Reverse flow: the meter records negative consumption.

A backflow through a failed check valve, a meter installed backwards, or a register that ran
backwards. The flag holds while negative intervals keep coming, tolerating a few intervals of
ordinary use between them (`hold_s`), so one backflow episode is one flag.

>>> from detectors.base import Interval, MeterContext
>>> from detectors.profile import MeterProfile
>>> detector, ctx, profile = ReverseFlow(), MeterContext(), MeterProfile()
>>> detector.update(Interval(3600, 3600, 5.0), ctx, profile)  # nothing holds
()
>>> [f.kind for f in detector.update(Interval(7200, 3600, -2.5), ctx, profile)]
['reverse_flow']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from detectors.base import NOTHING, Detector, Facts, Finding, Interval, MeterContext, clamp01
from detectors.profile import MeterProfile


class ReverseFlow(Detector):
    """Flags negative interval consumption beyond `tolerance` (gal or kWh per interval)."""

    kinds: ClassVar[tuple[str, ...]] = ("reverse_flow",)

    def __init__(self, tolerance: float = 0.05, hold_s: int = 3 * 3600) -> None:
        self.tolerance = tolerance
        self.hold_s = hold_s
        self._started: int | None = None
        self._last_negative = 0
        self._volume = 0.0
        self._largest = 0.0

    def update(
        self,
        interval: Interval,
        context: MeterContext,
        profile: MeterProfile,
        at: Facts | None = None,
    ) -> Sequence[Finding]:
        if interval.value < -self.tolerance:
            if self._started is None:
                self._started = interval.ts - interval.seconds
                self._volume = self._largest = 0.0
            self._last_negative = interval.ts
            self._volume += -interval.value
            self._largest = max(self._largest, -interval.value)
        elif self._started is not None and interval.ts - self._last_negative > self.hold_s:
            self._started = None
        if self._started is None:
            return NOTHING
        volume = self._volume
        return [
            Finding(
                kind="reverse_flow",
                started_at=self._started,
                score=clamp01(0.5 + volume / 100.0),
                severity="high" if volume >= 50 else "medium",
                evidence=(
                    f"meter ran backwards: {volume:,.1f} recorded in reverse since the flow "
                    f"reversed, at most {self._largest:,.1f} in one interval; check for "
                    "backflow (failed check valve) or a meter installed backwards"
                ),
                details={"reverse_volume": round(volume, 3), "largest": round(self._largest, 3)},
            )
        ]

    def late(self, interval: Interval) -> Finding | None:
        """Judge a read that arrived after newer ones: negative is reverse flow, on its own."""
        if interval.value >= -self.tolerance:
            return None
        volume = -interval.value
        return Finding(
            kind="reverse_flow",
            started_at=interval.ts - interval.seconds,
            ended_at=interval.ts,
            score=clamp01(0.5 + volume / 100.0),
            severity="high" if volume >= 50 else "medium",
            evidence=(
                f"meter ran backwards: {volume:,.1f} recorded in reverse in one interval (a "
                "read that arrived late); check for backflow (failed check valve) or a meter "
                "installed backwards"
            ),
            details={"reverse_volume": round(volume, 3), "largest": round(volume, 3)},
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.tolerance,
            self.hold_s,
            self._started,
            self._last_negative,
            self._volume,
            self._largest,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (
            self.tolerance,
            self.hold_s,
            self._started,
            self._last_negative,
            self._volume,
            self._largest,
        ) = state
