"""Scoring flags against a simulation's answer key: per kind recall, precision and detection
delay (data time), as `meterwatch bench detect` reports them.

A flag matches a label when it is on the same meter, of the same kind, and its span overlaps
the label's span (allowing a flag to start up to `lead_s` before the label: evidence can begin
with an unrelated event just before the anomaly). A label is detected when some flag matches
it; its delay is the first matching flag's `detected_at` minus the label's start. A flag that
matches no label is a false alarm.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


class FlagLike(Protocol):
    meter_id: str
    kind: str
    started_at: int
    ended_at: int | None
    detected_at: int


@dataclass
class KindScore:
    kind: str
    labels: int = 0
    detected: int = 0
    flags: int = 0
    true_flags: int = 0
    delays_h: list[float] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.detected / self.labels if self.labels else None

    @property
    def precision(self) -> float | None:
        return self.true_flags / self.flags if self.flags else None

    @property
    def f1(self) -> float | None:
        r, p = self.recall, self.precision
        if r is None or p is None or r + p == 0:
            return None
        return 2 * r * p / (r + p)

    @property
    def median_delay_h(self) -> float | None:
        return statistics.median(self.delays_h) if self.delays_h else None


def _epoch(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


def score_flags(
    labels: Sequence[dict[str, Any]],
    flags: Iterable[FlagLike],
    *,
    kinds: Iterable[str] | None = None,
    lead_s: int = 24 * 3600,
    interval_s: int = 3600,
) -> dict[str, KindScore]:
    """Per-kind scores of `flags` against the answer key's `labels["anomalies"]`."""
    by_meter: dict[tuple[str, str], list[tuple[float, float]]] = {}
    scores: dict[str, KindScore] = {k: KindScore(k) for k in (kinds or ())}
    spans = []
    for label in labels:
        start = _epoch(label["start"])
        end = _epoch(label["end"])
        assert start is not None
        span = (start - interval_s, (end if end is not None else float("inf")) + interval_s)
        spans.append((label, span))
        by_meter.setdefault((label["meter_id"], label["kind"]), []).append(span)
        scores.setdefault(label["kind"], KindScore(label["kind"])).labels += 1

    flag_list = list(flags)
    for flag in flag_list:
        score = scores.setdefault(flag.kind, KindScore(flag.kind))
        score.flags += 1
        end = float("inf") if flag.ended_at is None else flag.ended_at
        if any(
            flag.started_at - lead_s <= hi and end >= lo
            for lo, hi in by_meter.get((flag.meter_id, flag.kind), ())
        ):
            score.true_flags += 1

    for label, (lo, hi) in spans:
        matches = [
            f
            for f in flag_list
            if f.meter_id == label["meter_id"]
            and f.kind == label["kind"]
            and f.started_at - lead_s <= hi
            and (float("inf") if f.ended_at is None else f.ended_at) >= lo
        ]
        if matches:
            score = scores[label["kind"]]
            score.detected += 1
            first = min(f.detected_at for f in matches)
            score.delays_h.append(max(0.0, (first - (lo + interval_s)) / 3600))
    return scores
