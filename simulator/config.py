"""What a simulated head-end looks like: the one configuration object of the simulator.

`SimulationConfig` says how many meters, how long, how often they read, how many of them go
wrong and how, and how badly the delivery is mangled. It is plain data: every field has a
default that gives a realistic month of hourly water reads, and the whole object is written
into `answer_key.json` so that a scenario can be reproduced from its answer key alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: The flag kinds of the SPEC that the simulator can inject, in the order the SPEC lists them.
ANOMALY_KINDS: tuple[str, ...] = (
    "leak",
    "burst",
    "stopped_meter",
    "reverse_flow",
    "spike",
    "gap",
    "rollover",
    "inactive_usage",
    "stuck_reading",
    "usage_anomaly",
)

#: How the affected meters are shared among the kinds (normalised; a kind weighted 0 is off).
DEFAULT_ANOMALY_WEIGHTS: Mapping[str, float] = {
    "leak": 0.27,
    "burst": 0.08,
    "stopped_meter": 0.08,
    "reverse_flow": 0.08,
    "spike": 0.10,
    "gap": 0.10,
    "rollover": 0.06,
    "inactive_usage": 0.05,
    "stuck_reading": 0.08,
    "usage_anomaly": 0.10,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _default_weights() -> dict[str, float]:
    return dict(DEFAULT_ANOMALY_WEIGHTS)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes a simulated scenario; the same config and seed give the same files.

    Counts left at `None` scale with `meters` (see `Simulation.population`, which reports the
    values actually used). Fractions are shares of meters (population, anomalies) or of read
    rows (delivery defects).

    >>> SimulationConfig(meters=50, days=10, seed=3).intervals
    240
    """

    # --- size and time --------------------------------------------------------------------------
    # Service points, each with one meter at the start of the window. Meter exchanges, retired
    # meters and unknown meters come on top of these.
    meters: int = 200
    # Length of the simulated window (days; fractions allowed).
    days: float = 30.0
    # Interval length (minutes); must divide a day.
    interval_minutes: int = 60
    # Seed of every random choice.
    seed: int = 7
    # First instant of the window (tz-aware, on an interval boundary, as head-ends read on the
    # clock: :00, :15, ...). None: midnight UTC `days` ago, which differs from one day to the
    # next; give it for reproducible files.
    start: datetime | None = None
    # The utility's time zone (IANA name): daily patterns follow its clock, and some meters
    # report timestamps with its offset.
    timezone: str = "America/Chicago"

    # --- anomalies ------------------------------------------------------------------------------
    # Share of the eligible meters that get one labelled anomaly (the rest stay clean, so that
    # precision can be measured).
    anomaly_fraction: float = 0.2
    # Relative frequency of each anomaly kind (keys from ANOMALY_KINDS).
    anomaly_weights: Mapping[str, float] = field(default_factory=_default_weights)
    # Clean history every anomaly gets before it starts (days), so per-meter models can learn.
    anomaly_earliest_start_days: float = 7.0
    # Latest start of an anomaly (days into the window). None: as late as its kind allows. The
    # live demo sets it low so that every anomaly shows within the first simulated days.
    anomaly_latest_start_days: float | None = None
    # Share of leaks that are intermittent (a toilet flapper) rather than continuous.
    intermittent_leak_share: float = 0.3
    # Share of leaks that are fixed within the window (the rest are still leaking at its end).
    fixed_leak_share: float = 0.5
    # Share of gaps whose missing reads arrive late, at the end of the file.
    late_gap_share: float = 0.3

    # --- population -----------------------------------------------------------------------------
    # Share of meters that send cumulative register readings instead of interval deltas.
    register_fraction: float = 0.2
    # Share of meters that report in cubic feet instead of gallons.
    ft3_fraction: float = 0.1
    # Share of accounts that are inactive with a vacant property (meter reads zero).
    vacant_fraction: float = 0.02
    # Share of reads the head-end marks estimated (quality `E`).
    estimated_fraction: float = 0.01
    # Meter exchanges during the window (old meter closed, new meter at the same service point).
    exchanges: int | None = None
    # Move-outs/move-ins: the meter passes from one account to another without overlap.
    moves: int | None = None
    # Move-outs/move-ins where the CIS lets both accounts cover the meter for a while.
    ambiguous_overlaps: int | None = None
    # Meters retired before the window that the head-end still reads a few times.
    retired_meters: int | None = None
    # Meters the head-end reads but the CIS does not know.
    unknown_meters: int | None = None
    # Reads of unknown meters, all unknown meters together (before duplication).
    unknown_meter_reads: int | None = None

    # --- delivery defects (shares of rows) ------------------------------------------------------
    # Rows delivered twice (half right after the first delivery, half later in the file).
    duplicate_fraction: float = 0.03
    # Share of duplicates whose timestamp is written with another offset (same instant).
    reformatted_duplicate_share: float = 0.2
    # Rows delivered one to three days late.
    late_fraction: float = 0.01
    # Rows delivered a few intervals out of order.
    shuffle_fraction: float = 0.02
    # Extra malformed rows (a corrupted copy of a real row), with a known reason each.
    malformed_fraction: float = 0.005

    def __post_init__(self) -> None:
        if self.meters < 1:
            raise ValueError(f"meters={self.meters}: simulate at least one meter")
        if not self.days > 0:
            raise ValueError(f"days={self.days}: the window must be longer than zero days")
        if self.interval_minutes < 1 or 1440 % self.interval_minutes:
            raise ValueError(
                f"interval_minutes={self.interval_minutes}: use a divisor of a day, such as 15 "
                "or 60"
            )
        if self.start is not None:
            if self.start.tzinfo is None or self.start.utcoffset() is None:
                raise ValueError(
                    f"start={self.start.isoformat()} has no offset: give a tz-aware datetime, "
                    "for example datetime(2026, 3, 1, tzinfo=UTC)"
                )
            if (self.start - _EPOCH) % timedelta(minutes=self.interval_minutes):
                raise ValueError(
                    f"start={self.start.isoformat()} is not on a {self.interval_minutes}-minute "
                    "boundary: floor it, for example with SimulationConfig.floor_to_interval()"
                )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {self.timezone!r}: use an IANA name such as 'America/Chicago'"
            ) from exc
        unknown = set(self.anomaly_weights) - set(ANOMALY_KINDS)
        if unknown:
            raise ValueError(
                f"anomaly_weights has unknown kinds {sorted(unknown)}: use {list(ANOMALY_KINDS)}"
            )
        if any(w < 0 or not math.isfinite(w) for w in self.anomaly_weights.values()):
            raise ValueError("anomaly_weights must be finite and not negative")
        for f in fields(self):
            if f.name.endswith(("_fraction", "_share")):
                value = getattr(self, f.name)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{f.name}={value}: a share lies between 0 and 1")
        for name in (
            "exchanges",
            "moves",
            "ambiguous_overlaps",
            "retired_meters",
            "unknown_meters",
            "unknown_meter_reads",
        ):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}={value}: give a count of at least 0 (or None)")
        if self.anomaly_earliest_start_days < 0:
            raise ValueError("anomaly_earliest_start_days must not be negative")

    @staticmethod
    def floor_to_interval(t: datetime, interval_minutes: int = 60) -> datetime:
        """`t` rounded down to an interval boundary (boundaries are counted from midnight UTC).

        >>> SimulationConfig.floor_to_interval(datetime(2026, 3, 1, 14, 7, 31, tzinfo=UTC), 15)
        datetime.datetime(2026, 3, 1, 14, 0, tzinfo=datetime.timezone.utc)
        """
        return t - (t - _EPOCH) % timedelta(minutes=interval_minutes)

    @classmethod
    def live(
        cls,
        meters: int = 300,
        history_days: float = 3.0,
        now: datetime | None = None,
        **overrides: Any,
    ) -> SimulationConfig:
        """A config for the live demo: the window starts `history_days` before `now` (floored
        to the interval) and runs a day past it, and every anomaly starts within the first
        simulated day, so the first flags show soon after the accelerated clock starts.

        >>> cfg = SimulationConfig.live(now=datetime(2026, 3, 4, 9, 30, tzinfo=UTC))
        >>> cfg.start.isoformat(), cfg.days, cfg.anomaly_latest_start_days
        ('2026-03-01T09:00:00+00:00', 4.0, 1.0)
        """
        interval = int(overrides.get("interval_minutes", 60))
        now = now or datetime.now(UTC)
        start = cls.floor_to_interval(now - timedelta(days=history_days), interval)
        values: dict[str, Any] = {
            "meters": meters,
            "start": start,
            "days": history_days + 1.0,
            "anomaly_earliest_start_days": min(0.25, history_days / 4),
            "anomaly_latest_start_days": min(1.0, history_days / 2),
        }
        values.update(overrides)
        return cls(**values)

    @property
    def intervals_per_day(self) -> int:
        return 1440 // self.interval_minutes

    @property
    def intervals(self) -> int:
        """Number of intervals in the window (read timestamps per meter)."""
        return max(1, round(self.days * self.intervals_per_day))

    def resolved_start(self, now: datetime | None = None) -> datetime:
        """The window's first instant: `start`, or midnight UTC `days` before `now`."""
        if self.start is not None:
            return self.start
        now = now or datetime.now(UTC)
        midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(minutes=self.intervals * self.interval_minutes)

    def as_json(self) -> dict[str, Any]:
        """The config as JSON-ready values (datetimes as ISO 8601)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out
