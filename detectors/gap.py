"""Gap: expected intervals missing.

Reads of a meter arrive on a grid (every hour, every 15 minutes). When a read arrives after a
run of at least `MIN_GAP_S` of missing grid points, a `gap` flag opens over the missing span;
when every missing read has arrived late, the flag closes. A meter that falls silent
altogether is reported by `meterwatch audit` (silent meters) until it reports again.

>>> tracker = GapTracker()
>>> tracker.on_time(3600, 3600, None)
[]
>>> tracker.on_time(4 * 3600, 3600, 3600)  # two hours missing: too short to flag
[]
>>> [c.action for c in tracker.on_time(6 * 3600, 3600, 3600)]
['open']
>>> [[c.action for c in tracker.late(t * 3600)] for t in (2, 3, 4)]
[['update'], ['update'], ['update']]
>>> [(c.action, c.started_at, c.ended_at) for c in tracker.late(5 * 3600)]
[('close', 7200, 18000)]
"""

from __future__ import annotations

from typing import Any

from detectors.lifecycle import FlagChange

MIN_GAP_S = 3 * 3600  # shorter holes are mostly reads that arrive a little out of order
MAX_OPEN = 8  # open gaps remembered per meter; older ones stay open in the database


def _change(
    action: str, first: int, last: int, grid: int, missing: int, revision: int
) -> FlagChange:
    count = (last - first) // grid + 1
    hours = (last - first + grid) / 3600
    arrived = count - missing
    return FlagChange(
        action=action,
        kind="gap",
        started_at=first,
        ended_at=last if action == "close" else None,
        detected_at=last + grid,
        severity="low" if hours < 24 else "medium",
        score=min(1.0, 0.5 + hours / 48),
        evidence=(
            f"{count} expected reads missing ({hours:,.1f} hours); "
            + (
                "all have since arrived"
                if missing == 0
                else f"{arrived} arrived late so far"
                if arrived
                else "none has arrived yet: ask the head-end to resend, or estimate before billing"
            )
        ),
        revision=revision,
        details={"expected": count, "missing": missing},
    )


class GapTracker:
    """The open gaps of one meter: (first missing ts, last missing ts, grid, still missing,
    revision)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: list[list[int]] = []

    def on_time(self, ts: int, grid: int, previous: int | None) -> list[FlagChange]:
        """A read newer than every other: opens a gap if grid points before it are missing."""
        if previous is None or grid <= 0 or ts - previous - grid < MIN_GAP_S:
            return []
        first, last = previous + grid, ts - grid
        missing = (last - first) // grid + 1
        self._open.append([first, last, grid, missing, 1])
        if len(self._open) > MAX_OPEN:
            self._open.pop(0)
        return [_change("open", first, last, grid, missing, 1)]

    def late(self, ts: int) -> list[FlagChange]:
        """A late read (first delivery of its interval): fills a gap it falls in."""
        for gap in self._open:
            first, last, grid, missing, revision = gap
            if first <= ts <= last and (ts - first) % grid == 0:
                gap[3], gap[4] = missing - 1, revision + 1
                if gap[3] == 0:
                    self._open.remove(gap)
                    return [_change("close", first, last, grid, 0, revision + 1)]
                return [_change("update", first, last, grid, gap[3], revision + 1)]
        return []

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(tuple(g) for g in self._open)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._open = [list(g) for g in state]
