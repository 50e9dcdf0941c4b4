"""Flag lifecycle: turn a detector's per-interval findings into flag changes.

A flag is opened once when its condition first holds, extended while it holds, and closed
(`ended_at`) at the last interval where it held, as soon as an interval arrives where it does
not. A condition that comes back after closing opens a new flag with a new start. While a flag
is open the tracker re-emits it only when its severity changes or every `refresh_s` of data
time, so that a week-long leak is not rewritten at every interval.

>>> from detectors.base import Finding
>>> tracker = FlagTracker()
>>> leak = Finding("leak", started_at=0, score=0.7, severity="medium", evidence="flow")
>>> [c.action for c in tracker.observe(3600, {"leak": leak}, ("leak",))]
['open']
>>> tracker.observe(7200, {"leak": leak}, ("leak",))
[]
>>> closed = tracker.observe(10800, {}, ("leak",))
>>> closed[0].action, closed[0].started_at, closed[0].ended_at
('close', 0, 7200)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detectors.base import Finding


@dataclass(slots=True)
class FlagChange:
    """One write to a flag: `action` is `open`, `update` or `close`.

    `detected_at` is the data time at which the evidence first became sufficient; `revision`
    counts the detector updates behind this write, so that a replayed older write never
    overwrites a newer one.
    """

    action: str
    kind: str
    started_at: int
    ended_at: int | None
    detected_at: int
    severity: str
    score: float
    evidence: str
    revision: int
    details: dict[str, Any] = field(default_factory=dict)


class _Open:
    """An open flag: where it started, when it was detected, and its latest finding."""

    __slots__ = ("detected_at", "last", "last_emit", "last_ts", "revision", "started_at")

    def __init__(
        self,
        started_at: int,
        detected_at: int,
        last_ts: int,
        revision: int,
        last_emit: int,
        last: Finding,
    ) -> None:
        self.started_at = started_at
        self.detected_at = detected_at
        self.last_ts = last_ts
        self.revision = revision
        self.last_emit = last_emit
        self.last = last


class FlagTracker:
    """The open flags of one meter, by kind."""

    __slots__ = ("_open", "refresh_s")

    def __init__(self, refresh_s: int = 3 * 3600) -> None:
        self.refresh_s = refresh_s
        self._open: dict[str, _Open] = {}

    def observe(
        self, ts: int, findings: Mapping[str, Finding], kinds: Iterable[str]
    ) -> list[FlagChange]:
        """Apply the findings seen at data time `ts` for the detector kinds `kinds`."""
        changes: list[FlagChange] = []
        for kind in kinds:
            finding = findings.get(kind)
            current = self._open.get(kind)
            if finding is None:
                if current is not None:
                    changes.append(self._close(kind, current, current.last_ts))
                continue
            if current is None:
                current = _Open(finding.started_at, ts, ts, 1, ts, finding)
                if finding.ended_at is None:
                    self._open[kind] = current
                    changes.append(self._change("open", kind, current, None))
                else:  # complete as soon as seen: open and close in one write
                    changes.append(self._change("close", kind, current, finding.ended_at))
                continue
            severity_changed = finding.severity != current.last.severity
            current.revision += 1
            current.last_ts = ts
            current.last = finding
            if finding.ended_at is not None:
                changes.append(self._close(kind, current, finding.ended_at))
            elif severity_changed or ts - current.last_emit >= self.refresh_s:
                current.last_emit = ts
                changes.append(self._change("update", kind, current, None))
        return changes

    def close_all(self) -> list[FlagChange]:
        """Close every open flag at its last active interval (the meter changed hands)."""
        return [self._close(kind, o, o.last_ts) for kind, o in list(self._open.items())]

    @property
    def open_kinds(self) -> tuple[str, ...]:
        return tuple(self._open)

    def _close(self, kind: str, current: _Open, ended_at: int) -> FlagChange:
        self._open.pop(kind, None)
        current.revision += 1
        return self._change("close", kind, current, ended_at)

    @staticmethod
    def _change(action: str, kind: str, current: _Open, ended_at: int | None) -> FlagChange:
        last = current.last
        return FlagChange(
            action=action,
            kind=kind,
            started_at=current.started_at,
            ended_at=ended_at,
            detected_at=current.detected_at,
            severity=last.severity,
            score=last.score,
            evidence=last.evidence,
            revision=current.revision,
            details=last.details,
        )

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.refresh_s,
            tuple(
                (
                    kind,
                    o.started_at,
                    o.detected_at,
                    o.last_ts,
                    o.revision,
                    o.last_emit,
                    o.last.started_at,
                    o.last.score,
                    o.last.severity,
                    o.last.evidence,
                    tuple(o.last.details.items()),
                )
                for kind, o in self._open.items()
            ),
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.refresh_s, opened = state
        self._open = {
            kind: _Open(s, d, t, r, e, Finding(kind, fs, score, sev, ev, dict(details)))
            for kind, s, d, t, r, e, fs, score, sev, ev, details in opened
        }
