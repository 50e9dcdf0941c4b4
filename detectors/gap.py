"""Gap: expected intervals missing.

Reads of a meter arrive on a grid (every hour, every 15 minutes). When a read arrives after a
run of missing grid points, the hole waits `GRACE_INTERVALS` more on-time reads: head-ends
deliver a few reads out of order, and those fill it. If a run of at least `MIN_GAP_S` is still
missing then, a `gap` flag opens over the missing span (detected at that later read); when
every missing read has arrived late, the flag closes. A meter that falls silent altogether is
reported by `meterwatch audit` (silent meters) until it reports again.

>>> tracker = GapTracker()
>>> tracker.on_time(3600, 3600, None)
[]
>>> tracker.on_time(4 * 3600, 3600, 3600)  # two hours missing: too short to flag
[]
>>> tracker.on_time(8 * 3600, 3600, 4 * 3600)  # 5, 6 and 7 missing: wait for stragglers
[]
>>> tracker.late(6 * 3600)  # one arrives a little late: two-hour runs are left
[]
>>> [tracker.on_time(t * 3600, 3600, (t - 1) * 3600) for t in (9, 10, 11)]
[[], [], []]
>>> tracker.on_time(15 * 3600, 3600, 11 * 3600)  # 12, 13 and 14 missing
[]
>>> [c.action for t in (16, 17, 18) for c in tracker.on_time(t * 3600, 3600, (t - 1) * 3600)]
['open']
>>> [[c.action for c in tracker.late(t * 3600)] for t in (12, 13)]
[['update'], ['update']]
>>> [(c.action, c.started_at, c.ended_at) for c in tracker.late(14 * 3600)]
[('close', 43200, 50400)]
"""

from __future__ import annotations

from typing import Any

from detectors.lifecycle import FlagChange

MIN_GAP_S = 3 * 3600  # shorter holes are mostly reads that arrive a little out of order
# On-time reads a hole waits for stragglers before it is judged: head-ends re-order reads by
# up to a few intervals.
GRACE_INTERVALS = 3
MAX_OPEN = 8  # open gaps remembered per meter; older ones stay open in the database


def _change(
    action: str,
    first: int,
    last: int,
    grid: int,
    missing: int,
    revision: int,
    detected_at: int,
) -> FlagChange:
    count = (last - first) // grid + 1
    hours = (last - first + grid) / 3600
    arrived = count - missing
    return FlagChange(
        action=action,
        kind="gap",
        started_at=first,
        ended_at=last if action == "close" else None,
        detected_at=detected_at,
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


def _longest_run(mask: int) -> int:
    """The longest run of set bits in `mask`."""
    longest = 0
    while mask:
        mask &= mask << 1
        longest += 1
    return longest


class GapTracker:
    """The gaps of one meter: holes waiting for stragglers (first missing ts, grid, bit mask
    of the grid points still missing, on-time ts at which the hole is judged), and open gaps
    (first missing ts, last missing ts, grid, still missing, revision, detected at)."""

    __slots__ = ("_open", "_pending")

    def __init__(self) -> None:
        self._open: list[list[int]] = []
        self._pending: list[list[int]] = []

    def on_time(self, ts: int, grid: int, previous: int | None) -> list[FlagChange]:
        """A read newer than every other: judges the holes whose grace has passed, and starts
        a hole if grid points before it are missing."""
        changes = self._judge(ts) if self._pending else []
        if previous is None or grid <= 0 or ts - previous - grid < MIN_GAP_S:
            return changes
        count = (ts - previous) // grid - 1
        self._pending.append([previous + grid, grid, (1 << count) - 1, ts + GRACE_INTERVALS * grid])
        if len(self._pending) > MAX_OPEN:
            self._pending.pop(0)
        return changes

    def _judge(self, ts: int) -> list[FlagChange]:
        changes = []
        for hole in [h for h in self._pending if h[3] <= ts]:
            self._pending.remove(hole)
            start, grid, mask, _ = hole
            if _longest_run(mask) * grid < MIN_GAP_S:
                continue
            low = (mask & -mask).bit_length() - 1
            first, last = start + low * grid, start + (mask.bit_length() - 1) * grid
            missing = mask.bit_count()
            self._open.append([first, last, grid, missing, 1, ts])
            if len(self._open) > MAX_OPEN:
                self._open.pop(0)
            changes.append(_change("open", first, last, grid, missing, 1, ts))
        return changes

    def late(self, ts: int) -> list[FlagChange]:
        """A late read (first delivery of its interval): fills a hole or a gap it falls in."""
        for hole in self._pending:
            start, grid, mask, _ = hole
            bit = (ts - start) // grid
            if ts >= start and (ts - start) % grid == 0 and mask >> bit & 1:
                hole[2] = mask & ~(1 << bit)
                if hole[2] == 0:
                    self._pending.remove(hole)
                return []
        for gap in self._open:
            first, last, grid, missing, revision, detected = gap
            if first <= ts <= last and (ts - first) % grid == 0:
                gap[3], gap[4] = missing - 1, revision + 1
                if gap[3] == 0:
                    self._open.remove(gap)
                    return [_change("close", first, last, grid, 0, revision + 1, detected)]
                return [_change("update", first, last, grid, gap[3], revision + 1, detected)]
        return []

    def __getstate__(self) -> tuple[Any, ...]:
        return (tuple(tuple(g) for g in self._open), tuple(tuple(h) for h in self._pending))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        opened, pending = state
        self._open = [list(g) for g in opened]
        self._pending = [list(h) for h in pending]
