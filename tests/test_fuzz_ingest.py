"""Bad input, property-based: thousands of random and hostile payloads (wrong types, huge
numbers, NaN and infinities, unicode, bytes that are not UTF-8, injection strings, oversized and
missing fields, impossible offsets) through the parser, through the Redis Stream into a real
`meterwatch run`, and through POST /v1/reads. Every payload is either stored (as a read, an
exception-queue read or a duplicate) or rejected with a reason; the counts add up to what was
sent; the dataflow never dies, the API never answers 5xx, and nothing in the database is
corrupt (no read that is not finite, every rejected row with its raw payload as it came)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from api_fixtures import Api, access_url
from conftest import SERVERS
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipeline_fixtures import StreamFlow, run_file

from api.main import create_app
from meterwatch.settings import Settings
from stream.publish import stream_entry
from stream.reads import READ_COLUMNS, Reading, Rejected, parse_delivery, reset_limits
from stream.sources import stream_delivery

__all__ = ["access_url"]

# The seeded database's meters (tests/test_reports.py seed_sample), assigned from 2025-01-01.
KNOWN_METERS = ["M1", "M2", "M3", "E1"]
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "M1\x00",
    "'; DROP TABLE reads; --",
    "' OR '1'='1",
    "Robert'); DELETE FROM flags;--",
    "$(rm -rf /)",
    "${jndi:ldap://127.0.0.1/a}",
    "<script>alert(1)</script>",
    "%s%s%s%n",
    "\\N",
    "\\.",
    "\r\n",
    'a,b\n"c',
    "\u202eM1",
    "💧🚿",
    "Ｍ１",
    "null",
    "None",
    "true",
    "NaN",
    "nan",
    "-inf",
    "Infinity",
    "1e309",
    "-1e309",
    "9" * 400,
    "1" * 5000,
    "1_000",
    "١٢",
    "0x10",
    "1,5",
    "+",
    ".",
    "1e",
    "-0",
    "4.9e-324",
    "1e6",
    "1000001",
    "2026-03-01T14:15:00",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+01:00",
    "2025-06-01T00:00:00+23:59",
    "2099-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "2025-06-01 00:00:00+00:00",
    "gal",
    "GAL",
    "kwh",
    "m3",
    "ft3",
    "litre",
    "register",
    "interval",
    "REGISTER",
    "x" * 70,
    "q" * 200_000,
]
HOURS_2025 = [datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(24 * 60)]
OFFSETS = ["Z", "+00:00", "-05:00", "+05:30", "-23:59"]


def iso(at: datetime, offset: str) -> str:
    if offset == "Z":
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = 1 if offset[0] == "+" else -1
    delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])) * sign
    return (at + delta).replace(tzinfo=None).isoformat() + offset


hostile = st.one_of(
    st.sampled_from(HOSTILE_TEXT),
    st.text(max_size=30),
    st.text(st.characters(codec="utf-8"), min_size=60, max_size=300),
)
plausible_ts = st.builds(iso, st.sampled_from(HOURS_2025), st.sampled_from(OFFSETS))
plausible_value = st.one_of(
    st.floats(-50, 5000, allow_nan=False).map(lambda v: f"{v:.3f}"),
    st.integers(0, 10**6).map(str),
)
# One field of a row: usually plausible, often hostile.
text_fields = {
    "meter_id": st.one_of(st.sampled_from([*KNOWN_METERS, "UNKNOWN-7"]), hostile),
    "ts": st.one_of(plausible_ts, hostile),
    "value": st.one_of(plausible_value, hostile),
    "unit": st.one_of(st.sampled_from(["gal", "ft3", "m3", "kWh", "GAL"]), hostile),
    "kind": st.one_of(st.sampled_from(["interval", "register"]), hostile),
    "quality": st.one_of(st.sampled_from(["A", "E", "X" * 33]), hostile),
}


@st.composite
def text_rows(draw: st.DrawFn) -> dict[str, str]:
    """A row of text fields: some missing, some extra, any of them hostile."""
    row: dict[str, str] = {}
    for name, strategy in text_fields.items():
        required = name in ("meter_id", "ts", "value")
        if draw(st.floats(0, 1)) < (0.93 if required else 0.4):
            row[name] = draw(strategy)
    if draw(st.booleans()) and draw(st.booleans()):
        row[draw(st.sampled_from(["decode_error", "raw", "extra", "", "value "]))] = draw(hostile)
    return row


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        hostile,
        st.sampled_from(["\ud800", "M1\udfff", "\udbff\udc00"]),  # JSON can spell lone surrogates
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@st.composite
def json_rows(draw: st.DrawFn) -> Any:
    """A row as a head-end might POST it: the text row with some fields of the wrong JSON
    type, or not an object at all."""
    if draw(st.integers(0, 20)) == 0:
        return draw(json_values)
    row: dict[str, Any] = dict(draw(text_rows()))
    for name in list(row):
        if draw(st.integers(0, 4)) == 0:
            row[name] = draw(json_values)
    if "value" in row and draw(st.integers(0, 3)) == 0:
        row["value"] = draw(st.one_of(st.floats(), st.integers(-(10**30), 10**30)))
    return row


@st.composite
def stream_fields_bytes(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A Redis Stream entry as any publisher could XADD it: text fields, or raw bytes."""
    row = {k.encode(): v.encode() for k, v in draw(text_rows()).items()}
    if draw(st.integers(0, 6)) == 0:
        row[draw(st.sampled_from([b"value", b"meter_id", b"ts", b"\xff\xfe"]))] = draw(
            st.binary(max_size=20)
        )
    return row or {b"raw": b""}


# --- the parser ---------------------------------------------------------------------------


def check_outcome(result: Reading | Rejected) -> None:
    """What any parse must give: a sane read, or a reason and a storable raw payload."""
    if isinstance(result, Rejected):
        assert result.reason and isinstance(result.reason, str)
        for text in (result.reason, result.raw, result.meter_id or ""):
            assert "\x00" not in text
            text.encode("utf-8")  # PostgreSQL can store it
        return
    assert math.isfinite(result.value)
    assert result.meter_id and len(result.meter_id) <= 64 and result.meter_id.isprintable()
    assert datetime(2000, 1, 1, tzinfo=UTC) <= result.ts
    assert result.ts.tzinfo is UTC and result.epoch == int(result.ts.timestamp())
    assert result.reported_unit in ("gal", "ft3", "m3", "kWh")
    assert result.kind in ("interval", "register")
    assert result.quality is None or (len(result.quality) <= 32 and result.quality.isprintable())


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(text_rows())
def test_parser_reads_or_rejects_any_text_row(row: dict[str, str]) -> None:
    check_outcome(parse_delivery(stream_delivery("k", "1-0", 1, stream_entry(row))))


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(stream_fields_bytes())
def test_parser_reads_or_rejects_any_stream_entry(fields: dict[bytes, bytes]) -> None:
    result = parse_delivery(stream_delivery("k", "1-0", 1, fields))
    check_outcome(result)
    undecodable = any(_not_utf8(b) for pair in fields.items() for b in pair)
    if undecodable:
        assert isinstance(result, Rejected) and "is not UTF-8" in result.reason
    elif isinstance(result, Rejected) and b"decode_error" not in fields:
        # the raw payload is the entry as it came, field for field
        sent = {k.decode(): v.decode() for k, v in fields.items()}
        if "\x00" not in json.dumps(sent, ensure_ascii=False):
            assert json.loads(result.raw) == sent


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- both ingest paths, into the database ---------------------------------------------------


@pytest.fixture
def ingest(
    access_url: tuple[str, dict[str, int]],
    make_settings: Callable[..., Settings],
    stream_key: str,
) -> Iterator[Api]:
    url, ids = access_url
    settings = make_settings(database_url=url, redis_url=SERVERS.redis_url, reads_stream=stream_key)
    reset_limits()
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, url, ids)
    reset_limits()


def table_counts(url: str) -> Counter[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM reads), (SELECT count(*) FROM rejected_reads),
                      (SELECT count(*) FROM unmatched_reads),
                      (SELECT count(*) FROM duplicate_reads)"""
        ).fetchone()
    assert row is not None
    return Counter(dict(zip(("stored", "rejected", "unmatched", "duplicates"), row, strict=True)))


def csv_body(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(READ_COLUMNS), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.mark.slow
def test_hostile_payloads_through_the_stream_and_the_api_are_stored_or_rejected(
    ingest: Api, redis_client: redis.Redis, stream_key: str, tmp_path: Path
) -> None:
    url = ingest.url
    before = table_counts(url)
    raw_client = redis.Redis.from_url(SERVERS.redis_url)  # bytes in, as any publisher may send
    # delivery name → what the dataflow's own parser says of it, for every entry sent
    expected: dict[str, Reading | Rejected] = {}

    @settings(max_examples=250, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(stream_fields_bytes(), min_size=1, max_size=8))
    def publish_entries(entries: list[dict[bytes, bytes]]) -> None:
        for fields in entries:
            entry_id = raw_client.xadd(stream_key, fields).decode()  # type: ignore[arg-type, union-attr]
            expected[f"{stream_key}/{entry_id}"] = parse_delivery(
                stream_delivery(stream_key, entry_id, 0, fields)
            )

    headers = {**ingest.as_role("headend")}
    statuses: Counter[int] = Counter()
    api_invalid = 0
    api_published = 0

    @settings(max_examples=250, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(json_rows(), max_size=8), st.booleans())
    def post_reads(rows: list[Any], as_csv: bool) -> None:
        nonlocal api_invalid, api_published
        if as_csv:
            texts = [r for r in rows if isinstance(r, dict)]
            texts = [{k: v for k, v in r.items() if isinstance(v, str)} for r in texts]
            body = csv_body(texts).encode("utf-8", "surrogatepass")
            content_type = "text/csv"
        else:
            body = json.dumps(rows, allow_nan=True).encode()
            content_type = "application/json"
        response = ingest.client.post(
            "/v1/reads", content=body, headers={**headers, "Content-Type": content_type}
        )
        statuses[response.status_code] += 1
        assert response.status_code < 500, response.text
        if response.status_code == 202:
            answer = response.json()
            api_invalid += answer["invalid"]
            api_published += answer["published"]
        else:
            assert response.status_code in (413, 422), response.text
            assert response.json()["detail"]

    # A few of every outcome for certain, besides whatever hypothesis draws.
    fixed = [
        {b"meter_id": b"M1", b"ts": b"2025-05-01T01:00:00Z", b"value": b"1.5"},
        {b"meter_id": b"M1", b"ts": b"2025-05-01T01:00:00Z", b"value": b"1.5"},
        {b"meter_id": b"UNKNOWN-7", b"ts": b"2025-05-01T01:00:00-05:00", b"value": b"2"},
        {
            b"meter_id": b"M2",
            b"ts": b"2025-05-01T02:00:00Z",
            b"value": b"100",
            b"kind": b"register",
        },
    ]
    for fields in fixed:
        entry_id = raw_client.xadd(stream_key, fields).decode()  # type: ignore[arg-type, union-attr]
        expected[f"{stream_key}/{entry_id}"] = parse_delivery(
            stream_delivery(stream_key, entry_id, 0, fields)
        )
    publish_entries()
    post_reads()
    sent = raw_client.xlen(stream_key)
    raw_client.close()
    assert sent == len(expected) + api_published
    print(f"{len(expected)} entries XADDed, {api_published} published by the API, {statuses}")

    flow = StreamFlow(url, SERVERS.redis_url, stream_key, tmp_path / "flow")
    flow.start()
    try:
        flow.wait_for(url, stream_key, sent, timeout=300)
        assert flow.process is not None and flow.process.poll() is None, "the dataflow died"
    finally:
        flow.stop()

    counts = table_counts(url) - before
    assert counts.total() == sent, counts
    with psycopg.connect(url) as conn:
        rejected = {
            delivery: (reason, raw)
            for delivery, reason, raw in conn.execute(
                "SELECT delivery, reason, raw FROM rejected_reads WHERE delivery LIKE %s",
                (f"{stream_key}/%",),
            )
        }
        not_finite = conn.execute(
            """SELECT count(*) FROM reads WHERE value IN ('NaN', 'Infinity', '-Infinity')
                  OR register IN ('NaN', 'Infinity', '-Infinity')"""
        ).fetchone()
        stored_meters = {r[0] for r in conn.execute("SELECT DISTINCT meter_id FROM reads")}
    assert not_finite == (0,)
    assert stored_meters <= set(KNOWN_METERS)
    # every entry the parser rejects is in the table, with that reason and raw payload, and
    # nothing else of the XADDed ones is
    want = {
        name: (result.reason, result.raw)
        for name, result in expected.items()
        if isinstance(result, Rejected)
    }
    direct = {name: value for name, value in rejected.items() if name in expected}
    assert direct == want
    # what the API called invalid is what the dataflow rejected of its rows
    assert len(rejected) - len(direct) == api_invalid
    assert min(counts["stored"], counts["rejected"], counts["unmatched"], counts["duplicates"]) > 0


def test_a_reads_file_with_an_unreadable_row_rejects_it_and_goes_on(
    access_url: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    url, _ = access_url
    path = tmp_path / "reads.csv"
    path.write_text(
        "meter_id,ts,value\n"
        "M1,2025-05-01T01:00:00Z,1\n"
        f"M1,2025-05-01T02:00:00Z,{'9' * 200_000}\n"  # past the csv module's field limit
        "M1,2025-05-01T03:00:00Z,9999-12-31T23:59:59-23:59\n"
        "M1,9999-12-31T23:59:59-23:59,1\n"
        "M1,2025-05-01T04:00:00Z,3\n"
    )
    before = table_counts(url)
    run_file(url, path)
    assert table_counts(url) - before == Counter(stored=2, rejected=3)
    with psycopg.connect(url) as conn:
        reasons = [
            r[0] for r in conn.execute("SELECT reason FROM rejected_reads ORDER BY delivery")
        ]
    assert any("not readable CSV" in r for r in reasons)
    assert any("is out of range" in r for r in reasons)
