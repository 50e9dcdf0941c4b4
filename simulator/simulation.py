"""The simulated AMI head-end and CIS: who the customers are, which meter is where, what every
meter reads, and what was deliberately broken (the labels).

Everything is decided when a `Simulation` is built, from the config's seed: the population,
the meter assignments and every anomaly with its parameters. The reads themselves are not
stored. Each service point's day of usage comes from its own random stream (see
`simulator.usage`), and each anomaly is a rule applied on top of it. So any stretch of reads
can be generated on demand, in any order, and it is always the same: `clean_reads()` streams
the whole window and `reads_between()` feeds a live demo a few minutes at a time.

The interval with end timestamp `ts_k = start + k * interval` is "interval k" (k = 1 .. n);
a day block `d` holds intervals `d * per_day + 1 .. (d + 1) * per_day`.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from simulator import names
from simulator.config import ANOMALY_KINDS, SimulationConfig
from simulator.usage import (
    COMMERCIAL,
    GALLONS_PER_FT3,
    IRRIGATION,
    MULTIFAMILY,
    RESIDENTIAL,
    ROUND_THE_CLOCK,
    VACANT,
    UsageProfile,
    day_usage,
    random_profile,
)

#: Columns of the SPEC's files, in order.
ACCOUNT_COLUMNS = (
    "account_id",
    "customer_name",
    "email",
    "phone",
    "status",
    "customer_class",
    "rate_plan",
    "cycle_day",
    "daily_alert",
    "period_alert",
    "sms_opt_in",
    "email_opt_in",
)
METER_COLUMNS = ("meter_id", "service_point_id", "account_id", "valid_from", "valid_to")
READ_COLUMNS = ("meter_id", "ts", "value", "unit", "kind", "quality")

# Shares of service points by usage pattern (the CIS knows round-the-clock users as commercial).
CLASS_SHARES: tuple[tuple[str, float], ...] = (
    (RESIDENTIAL, 0.78),
    (MULTIFAMILY, 0.07),
    (COMMERCIAL, 0.08),
    (ROUND_THE_CLOCK, 0.02),
    (IRRIGATION, 0.05),
)
RATE_PLANS = {
    RESIDENTIAL: "RES-TIERED",
    MULTIFAMILY: "MF-STANDARD",
    COMMERCIAL: "COM-STANDARD",
    IRRIGATION: "IRR-SEASONAL",
}

# The order in which kinds pick their meters: the choosiest first, so that they still find one.
_ALLOCATION_ORDER = (
    "rollover",
    "inactive_usage",
    "stopped_meter",
    "spike",
    "reverse_flow",
    "stuck_reading",
    "usage_anomaly",
    "leak",
    "burst",
    "gap",
)
# Hours of an anomaly that must fit into the window after its start for it to be seen at all.
_MIN_VISIBLE_HOURS = {
    "leak": 24,
    "burst": 2,
    "stopped_meter": 48,
    "reverse_flow": 1,
    "spike": 1,
    "gap": 3,
    "rollover": 1,
    "inactive_usage": 24,
    "stuck_reading": 24,
    "usage_anomaly": 40,
}
# Local hours (start of interval) in which a usage anomaly raises use.
_DAYTIME = range(7, 22)
# Largest interval the simulator ever reports as a real reading (gal). The pipeline rejects
# 1,000,000 as absurd; real spikes must stay well clear of that.
_MAX_SPIKE_GAL = 400_000.0


def iso_utc(t: datetime) -> str:
    """`t` as ISO 8601 in UTC with a `Z`, the form the answer key uses throughout."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Label:
    """One injected anomaly: the answer a detector should find.

    `start` and `end` are the timestamps (interval ends) of the first and last affected read,
    both inclusive; `end` is None when the anomaly is still going on at the end of the window.
    `details` holds the kind's parameters (rates in gal/h whatever unit the meter reports in).
    """

    meter_id: str
    account_id: str
    kind: str
    start: datetime
    end: datetime | None
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "meter_id": self.meter_id,
            "account_id": self.account_id,
            "kind": self.kind,
            "start": iso_utc(self.start),
            "end": iso_utc(self.end) if self.end is not None else None,
            "details": dict(self.details),
        }


@dataclass
class _Site:
    """A service point, the account on it, and how water is used there."""

    index: int
    service_point_id: str
    account_id: str  # empty for a meter the CIS does not know
    customer_class: str  # as the CIS has it
    profile: UsageProfile
    status: str = "active"


@dataclass(frozen=True)
class _Register:
    """A cumulative register: counts of `unit_gal` gallons, wrapping at `counts`."""

    unit_gal: float
    counts: int
    decimals: int  # 0: whole units; 1: tenths (the register's last dial)
    start_gal: float

    @property
    def capacity_gal(self) -> float:
        return self.counts * self.unit_gal

    def text(self, cumulative_gal: float) -> str:
        count = int(cumulative_gal / self.unit_gal) % self.counts
        if self.decimals:
            return f"{count // 10}.{count % 10}"
        return str(count)

    @property
    def max_text(self) -> str:
        top = self.counts - 1
        return f"{top // 10}.{top % 10}" if self.decimals else str(top)


@dataclass
class _Anomaly:
    """How one anomaly changes a meter's intervals `start_k .. end_k` (None: never ends)."""

    kind: str
    start_k: int
    end_k: int | None
    details: dict[str, Any]
    per_interval: float = 0.0  # leak flow, stuck value or spike value (gal per interval)
    on: int = 0  # intermittent leak: intervals on, out of every `cycle`
    cycle: int = 0
    factor: float = 1.0  # usage anomaly
    values: tuple[float, ...] = ()  # burst and reverse flow, interval by interval (gal)
    late: bool = False  # gap: the missing reads arrive at the end of the file


@dataclass
class _Device:
    """A meter as the head-end knows it, and how it reports."""

    index: int
    meter_id: str
    site: _Site
    kind: str  # interval | register
    unit: str  # gal | ft3
    unit_text: str  # what the unit column says ("" means the default, gal)
    kind_text: str
    ts_style: int  # 0: ...Z, 1: ...+00:00, 2: the utility's local offset
    quality: str  # the head-end's usual quality code ("" or "A")
    first_k: int  # intervals first_k .. last_k are measured (None: open-ended)
    last_k: int | None
    extra_ks: frozenset[int] = frozenset()  # reads outside that span (stragglers, bench tests)
    register: _Register | None = None
    anomaly: _Anomaly | None = None
    in_cis: bool = True
    role: str = "regular"

    def measures(self, k: int) -> bool:
        return self.first_k <= k and (self.last_k is None or k <= self.last_k)

    def reports(self, k: int) -> bool:
        return self.measures(k) or k in self.extra_ks


def _fmt_gal(v: float) -> str:
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def _fmt_ft3(v: float) -> str:
    text = f"{v / GALLONS_PER_FT3:.2f}"
    return "0.00" if text == "-0.00" else text


def _allocate(total: int, weights: Sequence[float], minimum: int) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder), giving every positively
    weighted share at least `minimum` when there is enough to go round."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    exact = [total * w / weight_sum for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, w in enumerate(weights) if w > 0]
    if minimum and total >= minimum * len(wanted):
        for i in wanted:
            while counts[i] < minimum:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


class Simulation:
    """A deterministic simulated head-end and CIS for one `SimulationConfig`.

    >>> from datetime import datetime, UTC
    >>> sim = Simulation(SimulationConfig(meters=20, days=2, seed=1,
    ...                                   start=datetime(2026, 3, 1, tzinfo=UTC)))
    >>> first = next(sim.clean_reads())
    >>> sorted(first) == sorted(READ_COLUMNS)
    True
    >>> first["ts"] in ("2026-03-01T01:00:00Z", "2026-03-01T01:00:00+00:00",
    ...                 "2026-02-28T19:00:00-06:00")
    True
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.start = config.resolved_start()
        self.interval = timedelta(minutes=config.interval_minutes)
        self.per_day = config.intervals_per_day
        self.intervals = config.intervals
        self.end = self.start + self.intervals * self.interval
        self.tz = ZoneInfo(config.timezone)
        self._hours = config.interval_minutes / 60.0
        self._slot_cache: dict[int, list[tuple[int, int]]] = {}
        self._ts_cache: dict[int, tuple[str, str, str]] = {}
        self._day_cache: dict[int, tuple[int, list[tuple[str, str] | None]]] = {}
        self._prefix: dict[int, list[float]] = {}
        self._sites: list[_Site] = []
        self._devices: list[_Device] = []
        self._accounts: list[dict[str, str]] = []
        self._assignments: list[dict[str, str]] = []
        self._labels: list[Label] = []
        self._gaps_made = 0
        #: Counts actually used for the `None` fields of the config, and what came out.
        self.population: dict[str, Any] = {}
        #: Where the exception reads come from (exchanges, moves, overlaps, retired, unknown).
        self.exceptions: dict[str, list[dict[str, Any]]] = {
            "exchanges": [],
            "moves": [],
            "ambiguous_overlaps": [],
            "retired_meters": [],
            "unknown_meters": [],
        }
        self._build(random.Random(config.seed))

    # --- the public face ----------------------------------------------------------------------

    def accounts(self) -> list[dict[str, str]]:
        """Rows of accounts.csv, ordered by account_id."""
        return [dict(row) for row in self._accounts]

    def meter_assignments(self) -> list[dict[str, str]]:
        """Rows of meters.csv, ordered by meter_id and valid_from."""
        return [dict(row) for row in self._assignments]

    def labels(self) -> list[Label]:
        """Every injected anomaly, ordered by start."""
        return list(self._labels)

    def clean_reads(self) -> Iterator[dict[str, str]]:
        """Every read the head-end sends in the window, once each, in time order, well formed.

        The labelled anomalies are in (a gap's reads are missing; see `late_reads`), and so
        are the reads no bill may take: unknown meters, retired meters, bench tests of a meter
        not yet installed, and a meter that two accounts claim at once. Delivery defects
        (duplicates, disorder, malformed rows) are not: `write_scenario` adds those.
        """
        for _k, _dev, row in self.indexed_reads(1, self.intervals):
            yield dict(zip(READ_COLUMNS, row, strict=True))

    def reads_between(self, t0: datetime, t1: datetime) -> Iterator[dict[str, str]]:
        """The clean reads with `t0 < ts <= t1`, in time order (cheap for short spans).

        Consistent with `clean_reads()`: reading the window in consecutive spans gives the same
        rows. Past the end of the window the meters keep reporting (anomalies still going on
        go on), so a live demo can run on after its simulated clock has caught up.
        """
        k_lo = max(1, (t0 - self.start) // self.interval + 1)
        k_hi = (t1 - self.start) // self.interval
        for _k, _dev, row in self.indexed_reads(k_lo, k_hi):
            yield dict(zip(READ_COLUMNS, row, strict=True))

    def late_reads(self) -> Iterator[dict[str, str]]:
        """The reads of gaps labelled `late`: missing from `clean_reads`, delivered afterwards."""
        for _k, _dev, row in self.indexed_late_reads():
            yield dict(zip(READ_COLUMNS, row, strict=True))

    def ts_of(self, k: int) -> datetime:
        """End of interval k (UTC)."""
        return (self.start + k * self.interval).astimezone(UTC)

    def round_the_clock_meters(self) -> list[str]:
        """Meters of hotels, hospitals and the like: flow in every interval, and not leaks."""
        return [d.meter_id for d in self._devices if d.site.profile.pattern == ROUND_THE_CLOCK]

    def register_meters(self) -> list[dict[str, Any]]:
        """Every meter that sends register readings, with its register's size."""
        return [
            {
                "meter_id": d.meter_id,
                "unit": d.unit,
                "register_max": d.register.max_text,
                "resolution": "0.1" if d.register.decimals else "1",
            }
            for d in self._devices
            if d.register is not None
        ]

    def meter_info(self) -> dict[str, dict[str, Any]]:
        """Per meter: usage pattern, CIS class, account, how it reports, whether it is clean."""
        return {
            d.meter_id: {
                "pattern": d.site.profile.pattern,
                "customer_class": d.site.customer_class,
                "account_id": d.site.account_id or None,
                "service_point_id": d.site.service_point_id if d.in_cis else None,
                "kind": d.kind,
                "unit": d.unit,
                "role": d.role,
                "anomaly": d.anomaly.kind if d.anomaly is not None else None,
            }
            for d in self._devices
        }

    def expected_clean_rows(self) -> int:
        """How many rows `clean_reads()` yields (for progress bars)."""
        total = 0
        n = self.intervals
        for d in self._devices:
            last = n if d.last_k is None else min(n, d.last_k)
            total += max(0, last - max(1, d.first_k) + 1)
            total += sum(1 for k in d.extra_ks if 1 <= k <= n and not d.measures(k))
            a = d.anomaly
            if a is not None and a.kind == "gap":
                end = a.end_k if a.end_k is not None else n
                total -= max(0, min(end, n) - a.start_k + 1)
        return total

    # --- reads ---------------------------------------------------------------------------------

    def indexed_reads(self, k_lo: int, k_hi: int) -> Iterator[tuple[int, int, tuple[str, ...]]]:
        """(k, device index, row tuple) for intervals k_lo..k_hi (inclusive), in time order and,
        within an interval, in meter order. What `clean_reads` and `reads_between` are made of;
        `write_scenario` uses k as the read's identity."""
        if k_hi < k_lo:
            return
        per_day = self.per_day
        for day in range((k_lo - 1) // per_day, (k_hi - 1) // per_day + 1):
            k0 = day * per_day + 1
            i_lo = max(k_lo, k0) - k0
            i_hi = min(k_hi, k0 + per_day - 1) - k0
            active = [
                (dev, self._day_rows_cached(dev, day))
                for dev in self._devices
                if self._reports_between(dev, k0 + i_lo, k0 + i_hi)
            ]
            for i in range(i_lo, i_hi + 1):
                k = k0 + i
                stamps = self.ts_texts(k)
                for dev, rows in active:
                    cell = rows[i]
                    if cell is not None:
                        yield (
                            k,
                            dev.index,
                            (
                                dev.meter_id,
                                stamps[dev.ts_style],
                                cell[0],
                                dev.unit_text,
                                dev.kind_text,
                                cell[1],
                            ),
                        )

    def indexed_late_reads(self) -> Iterator[tuple[int, int, tuple[str, ...]]]:
        """(k, device index, row tuple) of the reads of late gaps."""
        for dev in self._devices:
            a = dev.anomaly
            if a is None or a.kind != "gap" or not a.late or a.end_k is None:
                continue
            for day in range((a.start_k - 1) // self.per_day, (a.end_k - 1) // self.per_day + 1):
                rows = self._day_rows(dev, day, include_gap=True)
                k0 = day * self.per_day + 1
                for i, cell in enumerate(rows):
                    k = k0 + i
                    if cell is not None and a.start_k <= k <= a.end_k:
                        stamps = self.ts_texts(k)
                        row = (
                            dev.meter_id,
                            stamps[dev.ts_style],
                            cell[0],
                            dev.unit_text,
                            dev.kind_text,
                            cell[1],
                        )
                        yield k, dev.index, row

    def _reports_between(self, dev: _Device, k_lo: int, k_hi: int) -> bool:
        if dev.first_k <= k_hi and (dev.last_k is None or dev.last_k >= k_lo):
            return True
        return any(k_lo <= k <= k_hi for k in dev.extra_ks)

    def _day_rows_cached(self, dev: _Device, day: int) -> list[tuple[str, str] | None]:
        # One day per meter is enough: the stream moves forward, and a live demo asks for the
        # same day many times before moving on.
        hit = self._day_cache.get(dev.index)
        if hit is not None and hit[0] == day:
            return hit[1]
        rows = self._day_rows(dev, day)
        self._day_cache[dev.index] = (day, rows)
        return rows

    def _day_rows(
        self, dev: _Device, day: int, include_gap: bool = False
    ) -> list[tuple[str, str] | None]:
        """(value text, quality) for each interval of the day that the meter reports, or None."""
        per_day = self.per_day
        k0 = day * per_day + 1
        metered = self._metered(dev, day)
        rows: list[tuple[str, str] | None] = [None] * per_day
        gap = dev.anomaly if dev.anomaly is not None and dev.anomaly.kind == "gap" else None
        gap_lo, gap_hi = (gap.start_k, gap.end_k or 0) if gap and not include_gap else (0, -1)
        reports = dev.reports
        quality = self._qualities(dev, day)
        reg = dev.register
        if reg is not None:
            cum = self._register_start(dev, day)
            for i, v in enumerate(metered):
                cum += v
                k = k0 + i
                if reports(k) and not gap_lo <= k <= gap_hi:
                    rows[i] = (reg.text(cum), quality[i])
            prefix = self._prefix[dev.index]
            if len(prefix) == day + 1:
                prefix.append(cum)
        else:
            fmt = _fmt_ft3 if dev.unit == "ft3" else _fmt_gal
            for i, v in enumerate(metered):
                k = k0 + i
                if reports(k) and not gap_lo <= k <= gap_hi:
                    rows[i] = (fmt(v), quality[i])
        return rows

    def _register_start(self, dev: _Device, day: int) -> float:
        """The register (gal, unwrapped) at the start of day block `day`."""
        assert dev.register is not None
        prefix = self._prefix.setdefault(dev.index, [dev.register.start_gal])
        while len(prefix) <= day:
            cum = prefix[-1]
            # Added one by one, in the same order as `_day_rows`, so both give the same floats.
            for v in self._metered(dev, len(prefix) - 1):
                cum += v
            prefix.append(cum)
        return prefix[day]

    def _metered(self, dev: _Device, day: int) -> list[float]:
        """What the meter registers in each interval of the day (gal): the true use with the
        anomaly applied, and zero outside the span the meter is installed."""
        per_day = self.per_day
        k0 = day * per_day + 1
        k_end = k0 + per_day - 1
        if k_end < dev.first_k or (dev.last_k is not None and k0 > dev.last_k):
            return [0.0] * per_day
        slots = self._slots(day)
        values = day_usage(dev.site.profile, day, slots, self._hours)
        if dev.anomaly is not None:
            self._apply(dev.anomaly, k0, values, slots)
        if k0 < dev.first_k or (dev.last_k is not None and k_end > dev.last_k):
            for i in range(per_day):
                if not dev.measures(k0 + i):
                    values[i] = 0.0
        return values

    def _apply(
        self, a: _Anomaly, k0: int, values: list[float], slots: Sequence[tuple[int, int]]
    ) -> None:
        k_last = k0 + len(values) - 1
        if a.kind == "inactive_usage":
            # Vacant until someone starts using water without an account.
            for k in range(k0, min(a.start_k - 1, k_last) + 1):
                values[k - k0] = 0.0
            return
        lo = max(a.start_k, k0)
        hi = k_last if a.end_k is None else min(a.end_k, k_last)
        if lo > hi:
            return
        kind = a.kind
        for k in range(lo, hi + 1):
            i = k - k0
            if kind == "leak":
                if not a.cycle or (k - a.start_k) % a.cycle < a.on:
                    values[i] += a.per_interval
            elif kind == "burst":
                values[i] += a.values[k - a.start_k]
            elif kind == "reverse_flow":
                values[i] = a.values[k - a.start_k]
            elif kind in ("stopped_meter", "stuck_reading", "spike"):
                values[i] = a.per_interval
            elif kind == "usage_anomaly" and slots[i][0] in _DAYTIME:
                values[i] *= a.factor
            # gap and rollover leave the consumption alone

    def _slots(self, day: int) -> list[tuple[int, int]]:
        """Local (hour, weekday) at the start of each interval of day block `day`."""
        slots = self._slot_cache.get(day)
        if slots is None:
            first = self.start + day * self.per_day * self.interval
            slots = []
            for i in range(self.per_day):
                local = (first + i * self.interval).astimezone(self.tz)
                slots.append((local.hour, local.weekday()))
            self._slot_cache[day] = slots
        return slots

    def ts_texts(self, k: int) -> tuple[str, str, str]:
        """The end of interval k written three ways: `Z`, `+00:00`, and the local offset."""
        stamps = self._ts_cache.get(k)
        if stamps is None:
            t = self.start + k * self.interval
            utc = t.astimezone(UTC)
            plain = utc.isoformat()
            stamps = (plain.replace("+00:00", "Z"), plain, t.astimezone(self.tz).isoformat())
            self._ts_cache[k] = stamps
        return stamps

    def _qualities(self, dev: _Device, day: int) -> list[str]:
        """The quality code of each interval of the day: the meter's usual one, now and then
        `E` (estimated). A random stream of its own per meter and day, so that it does not
        depend on the order in which days are generated."""
        rnd = random.Random((self.config.seed << 52) ^ (dev.index << 24) ^ day).random
        p = self.config.estimated_fraction
        usual = dev.quality
        return ["E" if rnd() < p else usual for _ in range(self.per_day)]

    # --- building the world -------------------------------------------------------------------

    def _build(self, rng: random.Random) -> None:
        cfg = self.config
        n_sites = cfg.meters
        n = self.intervals
        pop = self.population

        # Defaults for the counts left at None: a few of each in a mid-sized scenario, none of
        # the mid-window changes in a window too short to hold them.
        short = n < 2 * self.per_day
        defaults = {
            "exchanges": max(1, n_sites // 100) if n_sites >= 20 else 0,
            "moves": 1 if n_sites >= 50 else 0,
            "ambiguous_overlaps": 1 if n_sites >= 20 else 0,
            "retired_meters": 1 + n_sites // 500 if n_sites >= 10 else 0,
            "unknown_meters": 3 if n_sites >= 30 else (1 if n_sites >= 5 else 0),
        }
        for name, default in defaults.items():
            value = getattr(cfg, name)
            pop[name] = default if value is None else value
            if short and name in ("exchanges", "moves", "ambiguous_overlaps"):
                pop[name] = 0
        reads = cfg.unknown_meter_reads
        pop["unknown_meter_reads"] = (
            0
            if pop["unknown_meters"] == 0
            else (max(24, round(0.001 * n_sites * n)) if reads is None else reads)
        )

        # Service points, each with its account and usage pattern.
        patterns = [p for p, _ in CLASS_SHARES]
        counts = _allocate(
            n_sites, [s for _, s in CLASS_SHARES], 1 if n_sites >= 4 * len(CLASS_SHARES) else 0
        )
        site_patterns = [p for p, c in zip(patterns, counts, strict=True) for _ in range(c)]
        rng.shuffle(site_patterns)
        for i, pattern in enumerate(site_patterns):
            self._sites.append(
                _Site(
                    index=i,
                    service_point_id=f"SP{i + 1:06d}",
                    account_id=f"{i + 1:07d}",
                    customer_class=COMMERCIAL if pattern == ROUND_THE_CLOCK else pattern,
                    profile=random_profile(pattern, rng),
                )
            )
        residential = [s.index for s in self._sites if s.profile.pattern == RESIDENTIAL]
        rng.shuffle(residential)
        n_vacant = round(cfg.vacant_fraction * n_sites)
        if n_vacant == 0 and cfg.vacant_fraction > 0 and n_sites >= 50:
            n_vacant = 1
        vacant = residential[:n_vacant]
        for i in vacant:
            site = self._sites[i]
            site.profile = UsageProfile(VACANT, site.profile.seed)
            site.status = "inactive"
        pop["vacant"] = len(vacant)

        # One meter per service point; how it reports.
        registers = set(
            rng.sample(
                [s.index for s in self._sites if s.profile.pattern != ROUND_THE_CLOCK],
                min(
                    round(cfg.register_fraction * n_sites),
                    sum(1 for s in self._sites if s.profile.pattern != ROUND_THE_CLOCK),
                ),
            )
        )
        in_ft3 = set(rng.sample(range(n_sites), round(cfg.ft3_fraction * n_sites)))
        for site in self._sites:
            self._add_device(
                rng,
                site,
                kind="register" if site.index in registers else "interval",
                unit="ft3" if site.index in in_ft3 else "gal",
            )

        # Service points whose history changes in the window; no anomalies go there.
        special = residential[n_vacant:]
        taken = 0

        def take(count: int) -> list[int]:
            nonlocal taken
            chosen = special[taken : taken + count]
            taken += len(chosen)
            return chosen

        for i in take(pop["exchanges"]):
            self._exchange(rng, self._devices[i])
        for i in take(pop["moves"]):
            self._move(rng, self._sites[i], overlap=False)
        for i in take(pop["ambiguous_overlaps"]):
            self._move(rng, self._sites[i], overlap=True)
        pop["exchanges"] = len(self.exceptions["exchanges"])
        pop["moves"] = len(self.exceptions["moves"])
        pop["ambiguous_overlaps"] = len(self.exceptions["ambiguous_overlaps"])
        for _ in range(pop["retired_meters"]):
            self._retired(rng)
        reads_left = pop["unknown_meter_reads"]
        for j in range(pop["unknown_meters"]):
            share = reads_left // (pop["unknown_meters"] - j)
            reads_left -= share
            self._unknown(rng, j, share)
        pop["unknown_meter_reads"] = sum(e["reads"] for e in self.exceptions["unknown_meters"])

        changed = set(special[:taken])
        # The first `n_sites` devices are the service points' own meters, in site order.
        pool = [
            s.index
            for s in self._sites[:n_sites]
            if s.index not in changed and s.profile.pattern not in (VACANT, ROUND_THE_CLOCK)
        ]
        pop["anomalies_wanted"] = round(cfg.anomaly_fraction * len(pool))
        self._inject(rng, pool, pop["anomalies_wanted"])
        self._finish_rows(rng)
        pop["sites"] = n_sites
        pop["meters_in_cis"] = sum(1 for d in self._devices if d.in_cis)
        pop["devices"] = len(self._devices)
        pop["register_meters"] = sum(1 for d in self._devices if d.register is not None)
        pop["ft3_meters"] = sum(1 for d in self._devices if d.unit == "ft3")
        pop["by_pattern"] = {
            p: sum(1 for s in self._sites[:n_sites] if s.profile.pattern == p)
            for p in [*patterns, VACANT]
        }
        pop["anomalies"] = {
            kind: sum(1 for label in self._labels if label.kind == kind) for kind in ANOMALY_KINDS
        }

    def _add_device(
        self,
        rng: random.Random,
        site: _Site,
        kind: str,
        unit: str,
        first_k: int = 1,
        last_k: int | None = None,
        extra_ks: frozenset[int] = frozenset(),
        in_cis: bool = True,
        role: str = "regular",
        meter_id: str | None = None,
    ) -> _Device:
        index = len(self._devices)
        register = None
        if kind == "register":
            register = self._new_register(rng, site.profile, unit)
        device = _Device(
            index=index,
            meter_id=meter_id or f"{20_000_000 + index:09d}",
            site=site,
            kind=kind,
            unit=unit,
            unit_text="ft3" if unit == "ft3" else rng.choice(("gal", "gal", "")),
            kind_text="register" if kind == "register" else rng.choice(("interval", "")),
            ts_style=rng.choices((0, 1, 2), weights=(0.55, 0.25, 0.2))[0],
            quality=rng.choice(("", "A")),
            first_k=first_k,
            last_k=last_k,
            extra_ks=extra_ks,
            register=register,
            in_cis=in_cis,
            role=role,
        )
        self._devices.append(device)
        return device

    def _new_register(
        self, rng: random.Random, profile: UsageProfile, unit: str, small: bool = False
    ) -> _Register:
        if unit == "ft3":
            # Tenths of a cubic foot, up to 99,999.9 ft3 (or 9,999.9 on a small register).
            unit_gal, counts, decimals = GALLONS_PER_FT3 / 10, 100_000 if small else 1_000_000, 1
        else:
            unit_gal, counts, decimals = 1.0, 100_000 if small else 1_000_000, 0
        capacity = counts * unit_gal
        weekly_water = profile.water_gal_per_hour * profile.water_hours * len(profile.water_days)
        expected = (profile.daily_gal + weekly_water / 7) * (self.intervals / self.per_day + 1)
        # Far enough from the top that an unlabelled wrap cannot happen in the window.
        room = capacity - 3 * expected
        start = rng.uniform(0.0, room) if room > 0 else 0.0
        return _Register(unit_gal, counts, decimals, start)

    def _pick_k(self, rng: random.Random, lo: int, hi: int) -> int:
        lo = max(1, lo)
        hi = max(lo, min(hi, self.intervals))
        return rng.randint(lo, hi)

    def _local(self, k: int) -> str:
        return (self.start + k * self.interval).astimezone(self.tz).isoformat()

    def _history_start(self, rng: random.Random, days_back: tuple[int, int]) -> str:
        # CIS dates are local midnights, some months or years back.
        local = (self.start - timedelta(days=rng.randint(*days_back))).astimezone(self.tz)
        midnight = datetime(local.year, local.month, local.day, tzinfo=self.tz)
        return midnight.isoformat()

    def _exchange(self, rng: random.Random, old: _Device) -> None:
        n, per_day = self.intervals, self.per_day
        kx = self._pick_k(rng, per_day, n - per_day // 2)
        # Crews exchange meters in working hours.
        while not 9 <= self._slot_of(kx)[0] <= 15 and kx < n - 1:
            kx += 1
        old.last_k = kx - 1
        old.role = "exchanged_out"
        # The head-end keeps reading the old meter for a few intervals (from the exchange on,
        # which is at or after its valid_to), and read the new one on the bench before.
        old.extra_ks = frozenset(k for k in (kx, kx + 1, kx + 2) if k <= n)
        bench = frozenset(k for k in (kx - 2, kx - 1) if k >= 1)
        new = self._add_device(
            rng,
            old.site,
            kind="interval",
            unit="gal",
            first_k=kx,
            extra_ks=bench,
            role="exchanged_in",
        )
        self.exceptions["exchanges"].append(
            {
                "service_point_id": old.site.service_point_id,
                "account_id": old.site.account_id,
                "old_meter_id": old.meter_id,
                "new_meter_id": new.meter_id,
                "at": iso_utc(self.ts_of(kx)),
                "valid_to_local": self._local(kx),
                "retired_reads": len(old.extra_ks),
                "not_yet_installed_reads": len(bench),
            }
        )

    def _move(self, rng: random.Random, site: _Site, overlap: bool) -> None:
        n, per_day = self.intervals, self.per_day
        k_in = self._pick_k(rng, per_day, n - 2 * per_day)
        k_out = min(n + 1, k_in + rng.randint(per_day // 2, 2 * per_day)) if overlap else k_in
        key = "ambiguous_overlaps" if overlap else "moves"
        self.exceptions[key].append(
            {
                "meter_id": self._devices[site.index].meter_id,
                "service_point_id": site.service_point_id,
                "old_account_id": site.account_id,
                "new_account_id": "",  # filled in by _finish_rows
                "new_from": iso_utc(self.ts_of(k_in)),
                "old_to": iso_utc(self.ts_of(k_out)),
                "ambiguous_reads": max(0, min(k_out, n + 1) - k_in) if overlap else 0,
                "_k_in": k_in,
                "_k_out": k_out,
            }
        )
        self._devices[site.index].role = "overlap" if overlap else "moved"

    def _retired(self, rng: random.Random) -> None:
        index = len(self._sites)
        site = _Site(
            index,
            f"SP{index + 1:06d}",
            f"{index + 1:07d}",
            RESIDENTIAL,
            UsageProfile(VACANT, rng.getrandbits(48)),
            status="inactive",
        )
        self._sites.append(site)
        count = rng.randint(3, 8)
        first = self._pick_k(rng, 1, min(self.intervals, 2 * self.per_day) - count + 1)
        reads = frozenset(k for k in range(first, first + count) if k <= self.intervals)
        dev = self._add_device(
            rng, site, "interval", "gal", first_k=0, last_k=0, extra_ks=reads, role="retired"
        )
        self.exceptions["retired_meters"].append(
            {
                "meter_id": dev.meter_id,
                "service_point_id": site.service_point_id,
                "account_id": site.account_id,
                "valid_to": "",  # filled in by _finish_rows
                "reads": len(reads),
            }
        )

    def _unknown(self, rng: random.Random, j: int, reads: int) -> None:
        index = len(self._sites)
        site = _Site(index, "", "", RESIDENTIAL, random_profile(RESIDENTIAL, rng), status="unknown")
        self._sites.append(site)
        length = min(reads, self.intervals)
        first = self._pick_k(rng, 1, self.intervals - length + 1)
        dev = self._add_device(
            rng,
            site,
            "interval",
            "gal",
            first_k=first,
            last_k=first + length - 1,
            in_cis=False,
            role="unknown",
            meter_id=f"{90_000_000 + j:09d}",
        )
        self.exceptions["unknown_meters"].append(
            {
                "meter_id": dev.meter_id,
                "first_ts": iso_utc(self.ts_of(first)),
                "last_ts": iso_utc(self.ts_of(first + length - 1)),
                "reads": length,
            }
        )

    # --- anomalies -----------------------------------------------------------------------------

    def _start_range(self, kind: str) -> tuple[int, int] | None:
        cfg, n, per_day = self.config, self.intervals, self.per_day
        lo = max(2, math.ceil(cfg.anomaly_earliest_start_days * per_day) + 1)
        visible = max(1, math.ceil(_MIN_VISIBLE_HOURS[kind] / self._hours))
        hi = n - visible + 1
        if cfg.anomaly_latest_start_days is not None:
            hi = min(hi, math.floor(cfg.anomaly_latest_start_days * per_day) + 1)
        if lo > n:
            return None
        return lo, max(lo, min(hi, n))

    def _inject(self, rng: random.Random, pool: list[int], wanted: int) -> None:
        weights = [self.config.anomaly_weights.get(kind, 0.0) for kind in ANOMALY_KINDS]
        counts = dict(zip(ANOMALY_KINDS, _allocate(wanted, weights, 1), strict=True))
        free = set(pool)
        devices = self._devices

        def eligible(kind: str, d: _Device) -> bool:
            pattern = d.site.profile.pattern
            interval = d.register is None
            if kind == "rollover":
                return not interval and pattern == RESIDENTIAL
            if kind == "inactive_usage":
                return pattern == RESIDENTIAL
            if kind in ("stopped_meter", "spike"):
                return interval and pattern in (RESIDENTIAL, MULTIFAMILY, COMMERCIAL)
            if kind == "reverse_flow":
                return interval
            if kind == "stuck_reading":
                # Where every day has use: a business's register rests all Sunday anyway.
                return pattern in (RESIDENTIAL, MULTIFAMILY)
            if kind == "usage_anomaly":
                return pattern == COMMERCIAL or (
                    pattern == RESIDENTIAL and not d.site.profile.has_water_schedule
                )
            if kind == "leak":
                return pattern in (RESIDENTIAL, COMMERCIAL)
            return True  # burst, gap

        skipped: dict[str, int] = {}
        for kind in _ALLOCATION_ORDER:
            candidates = [i for i in pool if eligible(kind, devices[i])]
            rng.shuffle(candidates)
            if kind == "stuck_reading":
                # Alternate the two ways a reading sticks: a frozen register, a repeated value.
                by_kind = [
                    [i for i in candidates if devices[i].register is not None],
                    [i for i in candidates if devices[i].register is None],
                ]
                pairs = itertools.zip_longest(*by_kind, fillvalue=-1)
                candidates = [i for pair in pairs for i in pair if i >= 0]
            placed = 0
            for i in candidates:
                if placed == counts[kind]:
                    break
                if i not in free:
                    continue
                label = self._make_anomaly(rng, kind, devices[i])
                if label is None:
                    continue
                free.discard(i)
                self._labels.append(label)
                placed += 1
            if placed < counts[kind]:
                skipped[kind] = counts[kind] - placed
        self._labels.sort(key=lambda lb: (lb.start, lb.meter_id))
        self.population["anomalies_skipped"] = skipped

    def _make_anomaly(self, rng: random.Random, kind: str, dev: _Device) -> Label | None:
        window = self._start_range(kind)
        if window is None:
            return None
        n, hours, per_day = self.intervals, self._hours, self.per_day

        def span(h: float) -> int:
            return max(1, round(h / hours))  # hours -> intervals

        start = rng.randint(*window)
        profile = dev.site.profile
        a: _Anomaly
        if kind == "leak":
            intermittent = rng.random() < self.config.intermittent_leak_share
            if intermittent:
                rate = rng.uniform(1.0, 8.0)
                on_h, off_h = rng.randint(1, 4), rng.randint(1, 3)
                on, cycle = span(on_h), span(on_h) + span(off_h)
                details: dict[str, Any] = {
                    "pattern": "intermittent",
                    "rate_gal_per_hour": round(rate, 3),
                    "on_hours": on_h,
                    "off_hours": off_h,
                }
            else:
                rate = math.exp(rng.uniform(math.log(0.5), math.log(10.0)))
                on, cycle = 0, 0
                details = {"pattern": "continuous", "rate_gal_per_hour": round(rate, 3)}
            fixed = rng.random() < self.config.fixed_leak_share
            end = start + span(rng.randint(24, 120)) - 1 if fixed else None
            details["fixed"] = end is not None and end <= n
            a = _Anomaly(kind, start, end, details, per_interval=rate * hours, on=on, cycle=cycle)
        elif kind == "burst":
            rate = rng.uniform(100.0, 600.0)
            length = span(rng.randint(2, 8))
            values = tuple(rate * hours * rng.uniform(0.9, 1.1) for _ in range(length))
            details = {"rate_gal_per_hour": round(rate, 1), "hours": round(length * hours, 2)}
            a = _Anomaly(kind, start, start + length - 1, details, values=values)
        elif kind == "stopped_meter":
            # At least four days at a business, so that working days fall into the stop.
            shortest = 96 if profile.pattern == COMMERCIAL else 48
            end = None if rng.random() < 0.3 else start + span(rng.randint(shortest, 144)) - 1
            a = _Anomaly(kind, start, end, {}, per_interval=0.0)
        elif kind == "reverse_flow":
            rate = rng.uniform(1.0, 15.0)
            length = span(rng.randint(1, 6))
            values = tuple(-rate * hours * rng.uniform(0.7, 1.3) for _ in range(length))
            details = {"rate_gal_per_hour": round(rate, 2), "hours": round(length * hours, 2)}
            a = _Anomaly(kind, start, start + length - 1, details, values=values)
        elif kind == "spike":
            normal_max = max(1.0, self._max_metered(dev))
            factor = rng.uniform(20.0, 100.0)
            value = min(_MAX_SPIKE_GAL, round(factor * normal_max, 1))
            details = {
                "value_gal": value,
                "normal_max_gal": round(normal_max, 1),
                "factor": round(value / normal_max, 1),
            }
            a = _Anomaly(kind, start, start, details, per_interval=value)
        elif kind == "gap":
            end = min(n, start + span(rng.randint(3, 36)) - 1)
            # Spread late gaps evenly (the first gap is late whenever the share is not 0), so
            # that even a small scenario has one.
            share, i = self.config.late_gap_share, self._gaps_made
            late = math.ceil((i + 1) * share) > math.ceil(i * share)
            self._gaps_made += 1
            a = _Anomaly(kind, start, end, {"late": late, "intervals": end - start + 1}, late=late)
        elif kind == "rollover":
            return self._rollover(rng, dev, window)
        elif kind == "inactive_usage":
            dev.site.status = "inactive"
            a = _Anomaly(kind, start, None, {})
        elif kind == "stuck_reading":
            length = span(rng.randint(24, 96))
            if dev.register is not None:
                a = _Anomaly(kind, start, start + length - 1, {"variant": "register"})
            else:
                value = max(0.5, round(profile.daily_gal / 24 * hours, 1))
                a = _Anomaly(
                    kind, start, start + length - 1, {"variant": "interval"}, per_interval=value
                )
        elif kind == "usage_anomaly":
            # Two days of raised daytime use, starting with the first interval of 07:00 local;
            # for a business, two working days (raising a closed Sunday shows nothing).
            def morning(k: int) -> bool:
                hour, weekday = self._slot_of(k)
                if profile.pattern == COMMERCIAL and weekday > 3:
                    return False
                return hour == _DAYTIME.start and self._slot_of(k - 1)[0] != hour

            k = start
            while not morning(k):
                k += 1
            if k > n:
                return None
            end = k + per_day + (len(_DAYTIME) * per_day) // 24 - 1
            factor = rng.uniform(2.0, 4.0)
            details = {"factor": round(factor, 2), "local_hours": "07:00-22:00"}
            a = _Anomaly(kind, k, end, details, factor=factor)
        else:
            raise ValueError(f"unknown anomaly kind {kind!r}")
        dev.anomaly = a
        return self._label(dev, a)

    def _slot_of(self, k: int) -> tuple[int, int]:
        day, i = divmod(k - 1, self.per_day)
        return self._slots(day)[i]

    def _max_metered(self, dev: _Device) -> float:
        days = range((self.intervals - 1) // self.per_day + 1)
        return max(max(self._metered(dev, day)) for day in days)

    def _rollover(self, rng: random.Random, dev: _Device, window: tuple[int, int]) -> Label | None:
        n = self.intervals
        deltas: list[float] = []
        for day in range((n - 1) // self.per_day + 1):
            deltas.extend(self._metered(dev, day))
        deltas = deltas[:n]
        total = sum(deltas)
        assert dev.register is not None
        small = self._new_register(rng, dev.site.profile, dev.unit, small=True)
        capacity = small.capacity_gal
        if total >= 0.8 * capacity:
            capacity = dev.register.capacity_gal
            small = dev.register
        # Wrap in an interval with clear use, so the reading before is near the top and the
        # reading after just past zero.
        lo, hi = window
        candidates = [k for k in range(lo, hi + 1) if deltas[k - 1] >= 3 * small.unit_gal]
        if not candidates:
            return None
        k_wrap = rng.choice(candidates)
        used = 0.0
        for v in deltas[:k_wrap]:
            used += v
        start_gal = capacity - used + deltas[k_wrap - 1] / 2
        if start_gal < 0 or start_gal + total >= 2 * capacity:
            return None
        dev.register = _Register(small.unit_gal, small.counts, small.decimals, start_gal)
        self._prefix.pop(dev.index, None)
        self._day_cache.pop(dev.index, None)
        a = _Anomaly("rollover", k_wrap, k_wrap, {})
        dev.anomaly = a
        before = self._reading(dev, k_wrap - 1)
        after = self._reading(dev, k_wrap)
        a.details.update(
            {
                "register_before": before,
                "register_after": after,
                "register_max": small.max_text,
            }
        )
        return self._label(dev, a)

    def _reading(self, dev: _Device, k: int) -> str:
        day, i = divmod(k - 1, self.per_day)
        cell = self._day_rows(dev, day, include_gap=True)[i]
        assert cell is not None, f"meter {dev.meter_id} does not report interval {k}"
        return cell[0]

    def _label(self, dev: _Device, a: _Anomaly) -> Label:
        start_k = a.start_k
        if a.kind == "inactive_usage":
            start_k = self._first_use(dev, a.start_k)
        if a.kind == "stuck_reading":
            a.details["value"] = self._reading(dev, a.start_k)
        end = None if a.end_k is None or a.end_k > self.intervals else self.ts_of(a.end_k)
        details = dict(a.details)
        details["meter_unit"] = dev.unit
        details["meter_kind"] = dev.kind
        return Label(dev.meter_id, dev.site.account_id, a.kind, self.ts_of(start_k), end, details)

    def _first_use(self, dev: _Device, from_k: int) -> int:
        """First interval from `from_k` on whose read shows consumption."""
        previous = self._reading(dev, from_k - 1) if from_k > 1 else None
        for k in range(from_k, self.intervals + 1):
            text = self._reading(dev, k)
            moved = text != previous if dev.register is not None else float(text) > 0
            if moved:
                return k
            previous = text
        return from_k

    # --- CIS rows -----------------------------------------------------------------------------

    def _finish_rows(self, rng: random.Random) -> None:
        accounts: dict[str, dict[str, str]] = {}
        next_account = len(self._sites)
        for site in self._sites:
            if site.account_id:
                accounts[site.account_id] = self._account_row(
                    rng, site, site.account_id, site.status
                )
        rows: list[dict[str, str]] = []
        for dev in self._devices:
            if not dev.in_cis:
                continue
            site = dev.site
            if dev.role == "retired":
                valid_from = self._history_start(rng, (1200, 3000))
                valid_to = self._history_start(rng, (10, 300))
                for e in self.exceptions["retired_meters"]:
                    if e["meter_id"] == dev.meter_id:
                        e["valid_to"] = valid_to
            elif dev.role == "exchanged_in":
                valid_from, valid_to = self._local(dev.first_k), ""
            else:
                valid_from = self._history_start(rng, (60, 2500))
                valid_to = ""
                if dev.role == "exchanged_out" and dev.last_k is not None:
                    valid_to = self._local(dev.last_k + 1)
            rows.append(self._assignment(dev, site.account_id, valid_from, valid_to))
        for key in ("moves", "ambiguous_overlaps"):
            for e in self.exceptions[key]:
                dev = next(d for d in self._devices if d.meter_id == e["meter_id"])
                next_account += 1
                new_id = f"{next_account:07d}"
                e["new_account_id"] = new_id
                # The old account stays active: its final bill is still to come.
                accounts[new_id] = self._account_row(rng, dev.site, new_id, "active")
                old_row = next(r for r in rows if r["meter_id"] == dev.meter_id)
                old_row["valid_to"] = self._local(e.pop("_k_out"))
                rows.append(self._assignment(dev, new_id, self._local(e.pop("_k_in")), ""))
        self._accounts = [accounts[key] for key in sorted(accounts)]
        self._assignments = sorted(
            rows,
            key=lambda r: (r["meter_id"], datetime.fromisoformat(r["valid_from"])),
        )

    @staticmethod
    def _assignment(
        dev: _Device, account_id: str, valid_from: str, valid_to: str
    ) -> dict[str, str]:
        return {
            "meter_id": dev.meter_id,
            "service_point_id": dev.site.service_point_id,
            "account_id": account_id,
            "valid_from": valid_from,
            "valid_to": valid_to,
        }

    def _account_row(
        self, rng: random.Random, site: _Site, account_id: str, status: str
    ) -> dict[str, str]:
        pattern = site.profile.pattern
        cis_class = site.customer_class
        name = names.customer_name(cis_class, pattern == ROUND_THE_CLOCK, rng)
        serial = int(account_id)
        email = names.email_for(name, serial, rng) if rng.random() < 0.9 else ""
        phone = names.phone_for(rng) if rng.random() < 0.85 else ""
        # Bulk-enrolled default thresholds, a few times an ordinary day's use (gal).
        p = site.profile
        weekly_water = p.water_gal_per_hour * p.water_hours * len(p.water_days)
        typical = max(p.daily_gal + weekly_water / 7, 150.0)
        daily_alert = ""
        period_alert = ""
        if rng.random() < 0.7:
            daily_alert = str(int(math.ceil(typical * 3 / 50) * 50))
            period_alert = str(int(math.ceil(typical * 45 / 500) * 500))
        return {
            "account_id": account_id,
            "customer_name": name,
            "email": email,
            "phone": phone,
            "status": status,
            "customer_class": cis_class,
            "rate_plan": RATE_PLANS[cis_class],
            "cycle_day": str(rng.randint(1, 28)),
            "daily_alert": daily_alert,
            "period_alert": period_alert,
            "sms_opt_in": "true" if phone and rng.random() < 0.4 else "false",
            "email_opt_in": "true" if email and rng.random() < 0.6 else "false",
        }


__all__ = [
    "ACCOUNT_COLUMNS",
    "METER_COLUMNS",
    "READ_COLUMNS",
    "Label",
    "Simulation",
    "iso_utc",
]
