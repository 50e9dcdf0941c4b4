"""Green Button "Download My Data": an account's interval reads as a NAESB REQ.21 ESPI Atom feed.

The feed (Atom, RFC 4287) holds, for each service point and commodity of the account, one entry
per ESPI resource, linked the way Green Button files are (`self`, `up`, `related`):

- `UsagePoint` (ServiceCategory kind 2 water, 0 electricity), related to its MeterReadings and
  to the one `LocalTimeParameters` (the utility's time zone: standard offset, DST offset and
  DST rules in ESPI's bit-encoded DstRuleType);
- one `MeterReading` per meter that served it (a meter exchange gives two), related to its
  `ReadingType` and its IntervalBlocks;
- `ReadingType`: delta data (accumulationBehaviour 4), forward flow, the interval length, and
  the unit — water is commodity 9 (potable water) in US gallons (uom 128) with
  powerOfTenMultiplier -3 (values in thousandths of a gallon), electricity commodity 1 in Wh
  (uom 72); defaultQuality 0 (valid);
- one `IntervalBlock` per local day, with an `IntervalReading` per read: its timePeriod (start
  and duration, seconds since the epoch), integer value, and a `ReadingQuality` when the read is
  not plainly valid (8 for an estimated read, 16 for another head-end code).

Elements follow the order and cardinality of espi.xsd (version 4.0): `tests/test_green_button`
checks the structure against them. Reads without a value (a first register) are left out.
"""

from __future__ import annotations

import calendar
import itertools
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from statistics import median
from zoneinfo import ZoneInfo

import psycopg
from lxml import etree

from api.queries import AccountRow, AssignmentRow, CustomerRow, assignments
from billing.periods import local_midnight
from billing.preview import is_estimated

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
MEDIA_TYPE = "application/atom+xml"

SERVICE_KIND = {"gal": 2, "kWh": 0}  # ServiceKind: water, electricity
COMMODITY = {"gal": 9, "kWh": 1}  # CommodityKind: potableWater, electricity SecondaryMetered
UOM = {"gal": 128, "kWh": 72}  # UnitSymbolKind: US gallon, Wh
POWER_OF_TEN = {"gal": -3, "kWh": 0}
SCALE = {"gal": 1000, "kWh": 1000}  # stored unit → Int48 value (mgal, Wh)
ACCUMULATION_DELTA = 4
FLOW_FORWARD = 1
KIND_ENERGY = 12
QUALITY_ESTIMATED = 8
QUALITY_OTHER = 16
VALID_CODES = frozenset({"", "A", "ACTUAL", "V", "VALID", "OK", "G", "GOOD"})
# Rule value meaning "no daylight saving time" (DstRuleType).
NO_DST_RULE = "FFFFFFFF"


def _a(tag: str) -> str:
    return f"{{{ATOM}}}{tag}"


def _e(tag: str) -> str:
    return f"{{{ESPI}}}{tag}"


def _sub(parent: etree._Element, tag: str, text: object | None = None) -> etree._Element:
    element = etree.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


# --- the utility's time zone ------------------------------------------------------------------


@dataclass(frozen=True)
class LocalTime:
    tz_offset_s: int
    dst_offset_s: int
    dst_start_rule: str
    dst_end_rule: str


def _rule(local: datetime) -> str:
    """ESPI DstRuleType for a transition at local wall time `local`: month (bits 28-31),
    operator (25-27: 2-5 = first to fourth weekday of the month, 6 = last), weekday (17-19,
    Monday = 1), hour (12-16) and seconds past the hour (0-11)."""
    days_in_month = calendar.monthrange(local.year, local.month)[1]
    occurrence = (local.day - 1) // 7 + 1
    operator = 6 if local.day + 7 > days_in_month else occurrence + 1
    value = (
        (local.month << 28)
        | (operator << 25)
        | (local.isoweekday() << 17)
        | (local.hour << 12)
        | (local.minute * 60 + local.second)
    )
    return f"{value:08X}"


def local_time_parameters(tz: tzinfo, year: int) -> LocalTime:
    """Standard offset, DST offset and DST start/end rules of `tz` in `year`."""
    jan = datetime(year, 1, 1, 12, tzinfo=tz).utcoffset() or timedelta(0)
    jul = datetime(year, 7, 1, 12, tzinfo=tz).utcoffset() or timedelta(0)
    standard, summer = min(jan, jul), max(jan, jul)
    if standard == summer:
        return LocalTime(int(standard.total_seconds()), 0, NO_DST_RULE, NO_DST_RULE)
    start_rule = end_rule = NO_DST_RULE
    moment = datetime(year, 1, 1, tzinfo=UTC)
    before = moment.astimezone(tz).utcoffset()
    while moment.year == year:
        after_moment = moment + timedelta(minutes=30)
        after = after_moment.astimezone(tz).utcoffset()
        if after != before and before is not None and after is not None:
            # the wall clock the change happens at, read on the clock in force before it
            wall = (after_moment + before).replace(tzinfo=None)
            if after > before:
                start_rule = _rule(wall)
            else:
                end_rule = _rule(wall)
        before = after
        moment = after_moment
    return LocalTime(
        int(standard.total_seconds()),
        int((summer - standard).total_seconds()),
        start_rule,
        end_rule,
    )


# --- the feed ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    ts: datetime
    value: float
    quality: str | None


def _meter_reads(
    conn: psycopg.Connection,
    account_id: str,
    meter_id: str,
    since: datetime,
    until: datetime,
) -> dict[str, list[_Read]]:
    """The meter's reads for the account in (since, until], by base unit, oldest first."""
    rows = conn.execute(
        """SELECT CASE WHEN reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END, ts, value, quality
             FROM reads WHERE account_id = %s AND meter_id = %s AND ts > %s AND ts <= %s
              AND value IS NOT NULL
            ORDER BY ts""",
        (account_id, meter_id, since, until),
    ).fetchall()
    found: dict[str, list[_Read]] = defaultdict(list)
    for unit, ts, value, quality in rows:
        found[unit].append(_Read(ts, value, quality))
    return found


def _interval_s(reads: list[_Read]) -> int:
    gaps = [int((b.ts - a.ts).total_seconds()) for a, b in itertools.pairwise(reads)]
    positive = [g for g in gaps if g > 0]
    return int(median(positive)) if positive else 3600


class _Feed:
    def __init__(self, base: str, feed_id: str, title: str, now: datetime) -> None:
        self.base = base.rstrip("/")
        self.now = _rfc3339(now)
        self.root = etree.Element(_a("feed"), nsmap={None: ATOM, "espi": ESPI})
        _sub(self.root, _a("id"), f"urn:uuid:{feed_id}")
        _sub(self.root, _a("title"), title)
        _sub(self.root, _a("updated"), self.now)
        link = _sub(self.root, _a("link"))
        link.set("rel", "self")
        link.set("href", f"{self.base}/UsagePoint")

    def entry(
        self, key: str, title: str, self_href: str, up_href: str, related: list[str]
    ) -> etree._Element:
        """Add an entry; returns its content element, to put the ESPI resource in."""
        entry = _sub(self.root, _a("entry"))
        _sub(entry, _a("id"), f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, key)}")
        for rel, href in [("self", self_href), ("up", up_href)] + [("related", r) for r in related]:
            link = _sub(entry, _a("link"))
            link.set("rel", rel)
            link.set("href", f"{self.base}/{href}")
        _sub(entry, _a("title"), title)
        content = _sub(entry, _a("content"))
        _sub(entry, _a("published"), self.now)
        _sub(entry, _a("updated"), self.now)
        return content


def green_button_feed(
    conn: psycopg.Connection,
    account: AccountRow,
    customer: CustomerRow,
    start: date,
    end: date,
    tz_name: str,
    base_url: str,
    *,
    now: datetime | None = None,
) -> bytes:
    """The account's reads over local dates [start, end) as a Green Button Atom feed (UTF-8
    XML bytes). `base_url` prefixes the resource links."""
    tz = ZoneInfo(tz_name)
    now = now or datetime.now(UTC)
    since, until = local_midnight(start, tz), local_midnight(end, tz)
    base = f"{base_url.rstrip('/')}/espi/1_1/resource/RetailCustomer/{customer.customer_id}"
    feed = _Feed(
        base,
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"meterwatch:{account.account_id}:{start}:{end}")),
        f"Green Button usage of account {account.account_id} ({start} to {end})",
        now,
    )
    by_point: dict[str, list[AssignmentRow]] = defaultdict(list)
    for assignment in assignments(conn, account.account_id):
        by_point[assignment.service_point_id].append(assignment)
    time_href = "LocalTimeParameters/1"
    point_number = 0
    for point_id, history in by_point.items():
        meters = {a.meter_id: None for a in history}  # in order of service, no repeats
        reads_by_unit: dict[str, list[tuple[str, list[_Read]]]] = defaultdict(list)
        for meter_id in meters:
            for unit, reads in _meter_reads(
                conn, account.account_id, meter_id, since, until
            ).items():
                reads_by_unit[unit].append((meter_id, reads))
        for unit, meter_reads in sorted(reads_by_unit.items()):
            point_number += 1
            point = f"UsagePoint/{point_number}"
            readings_href = f"{point}/MeterReading"
            content = feed.entry(
                f"meterwatch:{account.account_id}:{point_id}:{unit}",
                f"Service point {point_id} ({'water' if unit == 'gal' else 'electricity'})",
                point,
                "UsagePoint",
                [readings_href, time_href],
            )
            usage_point = _sub(content, _e("UsagePoint"))
            category = _sub(usage_point, _e("ServiceCategory"))
            _sub(category, _e("kind"), SERVICE_KIND[unit])
            _sub(usage_point, _e("status"), 1 if account.status == "active" else 0)
            for reading_number, (meter_id, reads) in enumerate(meter_reads, start=1):
                _meter_reading(
                    feed, account, point_id, point, reading_number, meter_id, unit, reads, tz
                )
    _local_time_entry(feed, tz, tz_name, now.astimezone(tz).year, time_href)
    return bytes(
        etree.tostring(feed.root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    )


def _meter_reading(
    feed: _Feed,
    account: AccountRow,
    point_id: str,
    point: str,
    number: int,
    meter_id: str,
    unit: str,
    reads: list[_Read],
    tz: tzinfo,
) -> None:
    key = f"meterwatch:{account.account_id}:{point_id}:{unit}:{meter_id}"
    reading = f"{point}/MeterReading/{number}"
    reading_type = f"ReadingType/{point.replace('/', '-')}-{number}"
    blocks_href = f"{reading}/IntervalBlock"
    content = feed.entry(
        key, f"Meter {meter_id}", reading, f"{point}/MeterReading", [blocks_href, reading_type]
    )
    _sub(content, _e("MeterReading"))
    interval = _interval_s(reads)
    content = feed.entry(
        f"{key}:type", f"{meter_id} interval {unit}", reading_type, "ReadingType", []
    )
    rt = _sub(content, _e("ReadingType"))
    _sub(rt, _e("accumulationBehaviour"), ACCUMULATION_DELTA)
    _sub(rt, _e("commodity"), COMMODITY[unit])
    _sub(rt, _e("defaultQuality"), 0)
    _sub(rt, _e("flowDirection"), FLOW_FORWARD)
    _sub(rt, _e("intervalLength"), interval)
    if unit == "kWh":
        _sub(rt, _e("kind"), KIND_ENERGY)
    _sub(rt, _e("powerOfTenMultiplier"), POWER_OF_TEN[unit])
    _sub(rt, _e("uom"), UOM[unit])
    by_day: dict[date, list[_Read]] = defaultdict(list)
    for read in reads:
        # the interval's start decides its day, as for the usage history
        by_day[(read.ts - timedelta(microseconds=1)).astimezone(tz).date()].append(read)
    for block_number, day in enumerate(sorted(by_day), start=1):
        day_start = local_midnight(day, tz)
        day_end = local_midnight(day + timedelta(days=1), tz)
        content = feed.entry(
            f"{key}:{day.isoformat()}",
            f"{meter_id} on {day.isoformat()}",
            f"{blocks_href}/{block_number}",
            blocks_href,
            [],
        )
        block = _sub(content, _e("IntervalBlock"))
        span = _sub(block, _e("interval"))
        _sub(span, _e("duration"), int((day_end - day_start).total_seconds()))
        _sub(span, _e("start"), _epoch(day_start))
        for read in by_day[day]:
            item = _sub(block, _e("IntervalReading"))
            code = (read.quality or "").strip().upper()
            if is_estimated(read.quality):
                _sub(_sub(item, _e("ReadingQuality")), _e("quality"), QUALITY_ESTIMATED)
            elif code not in VALID_CODES:
                _sub(_sub(item, _e("ReadingQuality")), _e("quality"), QUALITY_OTHER)
            period = _sub(item, _e("timePeriod"))
            _sub(period, _e("duration"), interval)
            _sub(period, _e("start"), _epoch(read.ts) - interval)
            _sub(item, _e("value"), round(read.value * SCALE[unit]))


def _local_time_entry(feed: _Feed, tz: tzinfo, tz_name: str, year: int, href: str) -> None:
    params = local_time_parameters(tz, year)
    content = feed.entry(
        f"meterwatch:local-time:{tz_name}",
        f"Local time ({tz_name})",
        href,
        "LocalTimeParameters",
        [],
    )
    local = _sub(content, _e("LocalTimeParameters"))
    _sub(local, _e("dstEndRule"), params.dst_end_rule)
    _sub(local, _e("dstOffset"), params.dst_offset_s)
    _sub(local, _e("dstStartRule"), params.dst_start_rule)
    _sub(local, _e("tzOffset"), params.tz_offset_s)
