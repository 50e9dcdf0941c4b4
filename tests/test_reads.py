"""The reads contract: every malformed row is rejected with a reason that names the fix."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.reads import Delivery, Reading, Rejected, parse_delivery


def parse(**fields: object) -> Reading | Rejected:
    return parse_delivery(Delivery("test:1", 1, fields))


def test_a_valid_interval_read_is_parsed_in_utc_and_base_units() -> None:
    read = parse(
        meter_id=" M-1 ", ts="2026-03-01T14:15:00-05:00", value="2", unit="ft3", quality="A"
    )
    assert isinstance(read, Reading)
    assert read.meter_id == "M-1"
    assert read.ts.isoformat() == "2026-03-01T19:15:00+00:00"
    assert read.epoch == int(read.ts.timestamp())
    assert read.reported_unit == "ft3" and read.unit == "gal"
    assert math.isclose(read.value * read.factor, 14.961, rel_tol=1e-4)
    assert read.kind == "interval" and read.quality == "A"


def test_z_and_offsets_name_the_same_instant() -> None:
    a = parse(meter_id="M", ts="2026-03-01T19:15:00Z", value="1")
    b = parse(meter_id="M", ts="2026-03-01T14:15:00-05:00", value="1")
    assert isinstance(a, Reading) and isinstance(b, Reading)
    assert a.epoch == b.epoch


def test_units_and_kinds_are_case_insensitive_and_default() -> None:
    read = parse(meter_id="M", ts="2026-03-01T00:00:00Z", value="1", unit="KWH", kind="Register")
    assert isinstance(read, Reading)
    assert (read.reported_unit, read.unit, read.kind) == ("kWh", "kWh", "register")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"ts": "2026-03-01T00:00:00Z", "value": "1"}, "meter_id is missing"),
        ({"meter_id": "M", "value": "1"}, "ts is missing"),
        ({"meter_id": "M", "ts": "yesterday", "value": "1"}, "is not ISO 8601"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00", "value": "1"}, "has no UTC offset"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00Z"}, "value is missing"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "ten"}, "is not a number"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "NaN"}, "not a finite number"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "-inf"}, "not a finite number"),
        ({"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "5e9"}, "implausible"),
        (
            {"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "1", "unit": "litres"},
            "unknown unit 'litres': use gal, ft3, m3 or kWh",
        ),
        (
            {"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "1", "kind": "delta"},
            "unknown kind",
        ),
        ({"meter_id": "M", "ts": "1970-01-01T00:00:00Z", "value": "1"}, "implausible"),
        ({"meter_id": "M", "ts": "2999-01-01T00:00:00Z", "value": "1"}, "in the future"),
        (
            {"meter_id": "M", "ts": "2026-03-01T00:00:00Z", "value": "-5", "kind": "register"},
            "register '-5' is negative",
        ),
        ({"meter_id": "M" * 65, "ts": "2026-03-01T00:00:00Z", "value": "1"}, "at most 64"),
        ({"meter_id": "M\x00", "ts": "2026-03-01T00:00:00Z", "value": "1"}, "control characters"),
    ],
)
def test_malformed_reads_are_rejected_with_the_reason(fields: dict, reason: str) -> None:
    result = parse(**fields)
    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert "\x00" not in result.raw


def test_a_rejected_read_keeps_its_raw_payload() -> None:
    result = parse_delivery(Delivery("f:9", 9, {"meter_id": "M", "ts": "x"}, raw="M,x,,"))
    assert isinstance(result, Rejected)
    assert result.raw == "M,x,,"
    assert result.meter_id == "M"


@given(
    st.dictionaries(
        st.sampled_from(["meter_id", "ts", "value", "unit", "kind", "quality", "other"]),
        st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans()),
    )
)
def test_any_payload_is_either_a_reading_or_a_reason(fields: dict) -> None:
    result = parse(**fields)
    if isinstance(result, Rejected):
        assert result.reason and "\x00" not in result.raw
    else:
        assert math.isfinite(result.value) and result.ts.tzinfo is not None
