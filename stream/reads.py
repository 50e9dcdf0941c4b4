"""The interval-read contract: what a delivery looks like, and how it is parsed and validated.

A *delivery* is one row as it arrived: a CSV row, a JSON line, or a Redis Stream entry, with
the name of where it came from (`stream_key/entry_id`, `file:line`). The delivery name makes
every write the dataflow does idempotent: a replay after a crash re-delivers the same names.

`parse_delivery` turns a delivery into a `Reading` or a `Rejected` with a reason a person can
act on. Nothing is dropped silently.

>>> d = Delivery("f:2", 2, {"meter_id": "M1", "ts": "2026-03-01T14:15:00-05:00", "value": "3.5"})
>>> r = parse_delivery(d)
>>> r.meter_id, r.ts.isoformat(), r.value, r.unit, r.kind
('M1', '2026-03-01T19:15:00+00:00', 3.5, 'gal', 'interval')
>>> print(parse_delivery(Delivery("f:3", 3, {"meter_id": "M1", "ts": "2026-03-01T14:15:00",
...                                    "value": "1"})).reason)  # doctest: +NORMALIZE_WHITESPACE
timestamp '2026-03-01T14:15:00' has no UTC offset: add one,
e.g. '2026-03-01T14:15:00Z' or '2026-03-01T14:15:00-05:00'
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterwatch.settings import Settings, get_settings

READ_COLUMNS = ("meter_id", "ts", "value", "unit", "kind", "quality")

# Reported unit → (base unit, factor to the base unit). Water is kept in US gallons, electricity
# in kWh; the reported unit is stored beside the converted value.
UNITS: dict[str, tuple[str, float]] = {
    "gal": ("gal", 1.0),
    "ft3": ("gal", 7.480_519_480_5),
    "m3": ("gal", 264.172_052_358),
    "kWh": ("kWh", 1.0),
}
_UNIT_NAMES = {name.lower(): name for name in UNITS}
KINDS = ("interval", "register")
MAX_METER_ID = 64
MAX_QUALITY = 32
MAX_REGISTER = 1e12
# A decimal number as head-ends write it: ASCII digits, optional sign, point and exponent.
# (Python's float() also takes '1_000' and non-ASCII digits, which no head-end means.)
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
# How much of a bad field a reason quotes (characters).
QUOTED = 40


@dataclass(slots=True)
class Delivery:
    """One row as it arrived. `name` is unique per delivery (`<source>/<position>`), `seq` its
    running number in its source (for progress), `fields` the contract's columns as given,
    `raw` the row's original text when the source has it (CSV and JSON lines)."""

    name: str
    seq: int
    fields: Mapping[str, Any]
    raw: str | None = None
    source: str = ""
    position: str = ""
    # Set by a source that could not even decode the row (bad JSON): the reason to reject it.
    error: str | None = None
    # A CSV row's values as read, when `raw` was not built: its text is needed only for the
    # rare rejected row, and rebuilding it for every row took a third of reading a file.
    values: list[str] | None = None


@dataclass(slots=True)
class Reading:
    """A well-formed read. `ts` is the end of the interval, in UTC; `epoch` the same in
    seconds. `value` is in the reported unit (an interval delta, or a cumulative register);
    `factor` converts it to the base unit `unit`."""

    meter_id: str
    ts: datetime
    epoch: int
    value: float
    reported_unit: str
    unit: str
    factor: float
    kind: str
    quality: str | None
    delivery: Delivery


@dataclass(slots=True)
class Rejected:
    """A delivery that is not a read, with the reason and its raw payload."""

    delivery: Delivery
    reason: str
    raw: str
    meter_id: str | None


class _Limits:
    """Plausibility bounds, computed once per process from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.max_abs = settings.max_abs_interval_value
        self.max_future_s = settings.max_future_hours * 3600.0
        self.min_epoch = datetime.fromisoformat(settings.min_read_date).replace(tzinfo=UTC)


_limits: _Limits | None = None


def _get_limits() -> _Limits:
    global _limits
    if _limits is None:
        _limits = _Limits(get_settings())
    return _limits


def reset_limits() -> None:
    """Forget cached limits (after the settings changed, in tests)."""
    global _limits
    _limits = None
    _valid_ts.clear()


def raw_payload(delivery: Delivery) -> str:
    """The delivery as it arrived, for the rejected-reads table."""
    if delivery.raw is not None:
        text = delivery.raw
    elif delivery.values is not None:
        text = csv_line(delivery.values)
    else:
        try:
            text = json.dumps(dict(delivery.fields), ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(dict(delivery.fields))
    return storable_text(text)


def storable_text(text: str) -> str:
    """`text` as PostgreSQL can store it: NUL and lone UTF-16 surrogates (which JSON can carry
    but UTF-8 cannot) become visible escapes instead of failing the whole batch."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def csv_line(values: list[str]) -> str:
    """One CSV row as text, quoted as a spreadsheet would write it."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


class _Invalid(ValueError):
    pass


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if type(value) is str:  # nearly always (CSV, Redis): the rest is for JSON values
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def parse_delivery(delivery: Delivery) -> Reading | Rejected:
    """Validate one delivery against the reads contract."""
    fields = delivery.fields
    if delivery.error is not None:
        return Rejected(delivery, storable_text(delivery.error), raw_payload(delivery), None)
    meter_id = _text(fields, "meter_id")
    try:
        if not meter_id:
            raise _Invalid("meter_id is missing: every read needs the meter's serial")
        if len(meter_id) > MAX_METER_ID:
            raise _Invalid(
                f"meter_id is {len(meter_id)} characters long; meter serials are at most "
                f"{MAX_METER_ID}"
            )
        if not meter_id.isprintable():
            raise _Invalid(f"meter_id {meter_id!r} contains control characters")
        limits = _get_limits()
        ts_text = _text(fields, "ts")
        known = _valid_ts.get(ts_text)
        if known is None:
            ts = _parse_ts(ts_text, limits)
            known = (ts, int(ts.timestamp()))
            if len(_valid_ts) >= _VALID_TS_KEPT:
                _valid_ts.clear()
            _valid_ts[ts_text] = known
        ts, epoch = known
        unit_text = _text(fields, "unit") or "gal"
        reported_unit = _UNIT_NAMES.get(unit_text.lower())
        if reported_unit is None:
            raise _Invalid(f"unknown unit {unit_text[:QUOTED]!r}: use gal, ft3, m3 or kWh")
        unit, factor = UNITS[reported_unit]
        kind = _text(fields, "kind").lower() or "interval"
        if kind not in KINDS:
            raise _Invalid(f"unknown kind {kind[:QUOTED]!r}: use interval or register")
        value = _parse_value(_text(fields, "value"), kind, factor, unit, limits)
        quality = _text(fields, "quality") or None
        if quality is not None and (len(quality) > MAX_QUALITY or not quality.isprintable()):
            raise _Invalid(f"quality code must be at most {MAX_QUALITY} printable characters")
    except _Invalid as exc:
        shown_id = meter_id[:MAX_METER_ID] if meter_id.isprintable() else None
        return Rejected(delivery, str(exc), raw_payload(delivery), shown_id or None)
    return Reading(
        meter_id,
        ts,
        epoch,
        value,
        reported_unit,
        unit,
        factor,
        kind,
        quality,
        delivery,
    )


# Timestamp texts already found valid, and what they parsed to. A head-end delivers every
# meter's read for one interval together, so the same text comes thousands of times in a row.
# Only valid ones are kept, and a valid one stays valid: the earliest plausible date is fixed,
# and "too far in the future" only lets more through as the clock moves on.
_valid_ts: dict[str, tuple[datetime, int]] = {}
_VALID_TS_KEPT = 4096


def _parse_ts(text: str, limits: _Limits) -> datetime:
    if not text:
        raise _Invalid("ts is missing: give the end of the interval in ISO 8601 with an offset")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(
            f"timestamp {text[:60]!r} is not ISO 8601: use e.g. '2026-03-01T14:15:00-05:00'"
        ) from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise _Invalid(
            f"timestamp {text!r} has no UTC offset: add one, e.g. '{text}Z' or '{text}-05:00'"
        )
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise _Invalid(f"timestamp {text!r} is out of range: implausible") from None
    if ts < limits.min_epoch:
        raise _Invalid(f"timestamp {text!r} is before {limits.min_epoch.date()}: implausible")
    if ts.timestamp() > time.time() + limits.max_future_s:
        raise _Invalid(f"timestamp {text!r} is in the future: implausible for a meter read")
    return ts


def _parse_value(text: str, kind: str, factor: float, unit: str, limits: _Limits) -> float:
    if not text:
        raise _Invalid("value is missing: give the interval's consumption as a number")
    try:
        value = float(text)
    except ValueError:
        raise _Invalid(f"value {text[:QUOTED]!r} is not a number") from None
    if not math.isfinite(value):
        raise _Invalid(f"value {text[:QUOTED]!r} is not a finite number")
    # The common case, digits with at most one point, without the regular expression.
    plain = text.isascii() and text.replace(".", "", 1).isdigit()
    if not plain and not _DECIMAL.fullmatch(text):
        raise _Invalid(
            f"value {text[:QUOTED]!r} is not a number as a decimal: write e.g. 1500 or 3.25"
        )
    if kind == "register":
        if value < 0:
            raise _Invalid(
                f"register {_quoted(text)} is negative: a register reading counts up from 0"
            )
        if value > MAX_REGISTER:
            raise _Invalid(f"register {_quoted(text)} is beyond any meter's dial: implausible")
    elif abs(value * factor) > limits.max_abs:
        raise _Invalid(
            f"value {_quoted(text)} is beyond what any service meter measures in one interval "
            f"(more than {limits.max_abs:,.0f} {unit}): implausible"
        )
    return value


def _quoted(text: str) -> str:
    return f"{text[:QUOTED]!r}{'…' if len(text) > QUOTED else ''}"
