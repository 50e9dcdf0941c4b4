"""The Green Button export, checked against the published structure.

No PyPI package ships the NAESB ESPI schema (espi.xsd) and the schema is not ours to vendor, so
this module checks the feed the way the schema would, element by element: namespaces, the
element order and cardinality of each ESPI type used (the `xs:sequence` of espi.xsd version
4.0, including the `extension*` of Object and the `batchItemInfo?` of IdentifiedObject that
every resource inherits), the simple types (UInt8/16/32, Int16/48, TimeType, HexBinary32), the
enumerations meterwatch writes, and Atom's own rules (RFC 4287: one id, title and updated per
feed and entry, links with href).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from api_fixtures import Api, access_url, api
from lxml import etree

from api.green_button import local_time_parameters
from api.usage import default_window

__all__ = ["access_url", "api"]

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"

# (element, minOccurs, maxOccurs or None for unbounded), in schema order: each ESPI type's
# own sequence, after what it inherits from Object and IdentifiedObject.
OBJECT = [("extension", 0, None)]
IDENTIFIED = [*OBJECT, ("batchItemInfo", 0, 1)]
SEQUENCES: dict[str, list[tuple[str, int, int | None]]] = {
    "UsagePoint": [
        *IDENTIFIED,
        ("roleFlags", 0, 1),
        ("ServiceCategory", 0, 1),
        ("status", 0, 1),
        ("serviceDeliveryPoint", 0, 1),
        ("amiBillingReady", 0, 1),
        ("checkBilling", 0, 1),
        ("connectionState", 0, 1),
        ("estimatedLoad", 0, 1),
        ("grounded", 0, 1),
        ("isSdp", 0, 1),
        ("isVirtual", 0, 1),
        ("minimalUsageExpected", 0, 1),
        ("nominalServiceVoltage", 0, 1),
        ("outageRegion", 0, 1),
        ("phaseCode", 0, 1),
        ("ratedCurrent", 0, 1),
        ("ratedPower", 0, 1),
        ("readCycle", 0, 1),
        ("readRoute", 0, 1),
        ("serviceDeliveryRemark", 0, 1),
        ("servicePriority", 0, 1),
        ("pnodeRefs", 0, 1),
        ("aggregateNodeRefs", 0, 1),
    ],
    "ServiceCategory": [*OBJECT, ("kind", 1, 1)],
    "MeterReading": IDENTIFIED,
    "ReadingType": [
        *IDENTIFIED,
        ("accumulationBehaviour", 0, 1),
        ("commodity", 0, 1),
        ("consumptionTier", 0, 1),
        ("currency", 0, 1),
        ("dataQualifier", 0, 1),
        ("defaultQuality", 0, 1),
        ("flowDirection", 0, 1),
        ("intervalLength", 0, 1),
        ("kind", 0, 1),
        ("phase", 0, 1),
        ("powerOfTenMultiplier", 0, 1),
        ("timeAttribute", 0, 1),
        ("tou", 0, 1),
        ("uom", 0, 1),
        ("cpp", 0, 1),
        ("interharmonic", 0, 1),
        ("measuringPeriod", 0, 1),
        ("argument", 0, 1),
    ],
    "IntervalBlock": [*IDENTIFIED, ("interval", 0, 1), ("IntervalReading", 0, None)],
    "IntervalReading": [
        *OBJECT,
        ("cost", 0, 1),
        ("ReadingQuality", 0, None),
        ("timePeriod", 0, 1),
        ("value", 0, 1),
        ("consumptionTier", 0, 1),
        ("tou", 0, 1),
        ("cpp", 0, 1),
    ],
    "ReadingQuality": [*OBJECT, ("quality", 1, 1)],
    "DateTimeInterval": [*OBJECT, ("duration", 1, 1), ("start", 1, 1)],
    # the LocalTimeParameters element is of type TimeConfiguration
    "LocalTimeParameters": [
        *IDENTIFIED,
        ("dstEndRule", 1, 1),
        ("dstOffset", 1, 1),
        ("dstStartRule", 1, 1),
        ("tzOffset", 1, 1),
    ],
}
# child element → its complex type, where the element name is not the type name
ELEMENT_TYPE = {"interval": "DateTimeInterval", "timePeriod": "DateTimeInterval"}
# simple types: (pattern of the text, inclusive range or None)
INT = r"-?\d+"
SIMPLE = {
    "kind": (INT, (0, 65535)),
    "status": (INT, (0, 255)),
    "accumulationBehaviour": (INT, (0, 65535)),
    "commodity": (INT, (0, 65535)),
    "defaultQuality": (INT, (0, 65535)),
    "flowDirection": (INT, (0, 65535)),
    "intervalLength": (INT, (0, 2**32 - 1)),
    "powerOfTenMultiplier": (INT, (-32768, 32767)),
    "uom": (INT, (0, 65535)),
    "quality": (INT, (0, 65535)),
    "value": (INT, (-(2**47), 2**47)),
    "duration": (INT, (0, 2**32 - 1)),
    "start": (INT, (-(2**63), 2**63 - 1)),
    "dstOffset": (INT, (-(2**63), 2**63 - 1)),
    "tzOffset": (INT, (-(2**63), 2**63 - 1)),
    "dstEndRule": (r"[0-9A-Fa-f]{8}", None),
    "dstStartRule": (r"[0-9A-Fa-f]{8}", None),
}
# enumerations of the values meterwatch writes (espi.xsd)
ENUMS = {
    "commodity": {0, 1, 2, 9, 14},
    "accumulationBehaviour": {0, 1, 2, 3, 4, 6, 9, 10, 12, 13, 14},
    "powerOfTenMultiplier": {-12, -9, -6, -3, -2, -1, 0, 1, 2, 3, 6, 9, 12},
    "quality": {0, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19},
}


def local(element: etree._Element) -> str:
    return etree.QName(element).localname


def check_sequence(element: etree._Element, type_name: str, where: str) -> list[str]:
    """Problems with `element`'s children against the sequence of `type_name`, recursing into
    complex children."""
    problems = []
    model = SEQUENCES[type_name]
    children = [c for c in element if isinstance(c.tag, str)]
    for child in children:
        if etree.QName(child).namespace != ESPI:
            problems.append(f"{where}/{child.tag}: not in the ESPI namespace")
    names = [local(c) for c in children]
    position = 0
    for name, low, high in model:
        count = 0
        while position < len(names) and names[position] == name:
            count += 1
            position += 1
        if count < low:
            problems.append(f"{where}: {name} is required (minOccurs {low})")
        if high is not None and count > high:
            problems.append(f"{where}: {name} occurs {count} times (maxOccurs {high})")
    if position < len(names):
        problems.append(
            f"{where}: {names[position]} is out of order or not allowed here "
            f"(children: {', '.join(names)})"
        )
    for child in children:
        name = local(child)
        child_type = ELEMENT_TYPE.get(name, name)
        if child_type in SEQUENCES and child_type != "kind":
            problems += check_sequence(child, child_type, f"{where}/{name}")
        elif name in SIMPLE:
            pattern, bounds = SIMPLE[name]
            text = (child.text or "").strip()
            if not re.fullmatch(pattern, text):
                problems.append(f"{where}/{name}: {text!r} is not of its simple type")
            elif bounds is not None and not bounds[0] <= int(text) <= bounds[1]:
                problems.append(f"{where}/{name}: {text} is out of range")
            elif name in ENUMS and int(text) not in ENUMS[name]:
                problems.append(f"{where}/{name}: {text} is not in the enumeration")
    return problems


def check_feed(xml: bytes) -> tuple[list[str], dict[str, list[etree._Element]]]:
    """Every structural problem of a Green Button feed, and its resources by type."""
    root = etree.fromstring(xml)
    problems: list[str] = []
    resources: dict[str, list[etree._Element]] = {}
    if root.tag != f"{{{ATOM}}}feed":
        return [f"the root is {root.tag}, not an Atom feed"], resources
    entries = [(e, f"entry {i}") for i, e in enumerate(root.findall(f"{{{ATOM}}}entry"))]
    for holder, where in [(root, "feed"), *entries]:
        for required in ("id", "title", "updated"):
            found = holder.findall(f"{{{ATOM}}}{required}")
            if len(found) != 1:
                problems.append(f"{where}: {len(found)} atom:{required} (RFC 4287 wants one)")
        for link in holder.findall(f"{{{ATOM}}}link"):
            if not link.get("href"):
                problems.append(f"{where}: a link without href")
        if holder is root:
            continue
        contents = holder.findall(f"{{{ATOM}}}content")
        if len(contents) != 1 or len(contents[0]) != 1:
            problems.append(f"{where}: needs one content with one ESPI resource")
            continue
        resource = contents[0][0]
        name = local(resource)
        if etree.QName(resource).namespace != ESPI or name not in SEQUENCES:
            problems.append(f"{where}: {resource.tag} is not an ESPI resource")
            continue
        resources.setdefault(name, []).append(resource)
        problems += check_sequence(resource, name, name)
    return problems, resources


def test_the_checker_catches_what_the_schema_would() -> None:
    broken = f"""<feed xmlns="{ATOM}"><id>x</id><title>t</title><updated>u</updated>
      <entry><id>e</id><title>t</title><updated>u</updated><content>
        <IntervalReading xmlns="{ESPI}"><value>1.5</value><timePeriod><start>1</start>
        </timePeriod></IntervalReading></content></entry></feed>""".encode()
    problems, _ = check_feed(broken)
    assert "IntervalReading: timePeriod is out of order or not allowed here " in problems[0]
    assert any("'1.5' is not of its simple type" in p for p in problems)
    assert any("duration is required" in p for p in problems)


def test_green_button_export(api: Api) -> None:
    t0 = datetime(2026, 3, 10, 5, tzinfo=UTC)  # local midnight, Chicago (CDT since 8 March)
    with psycopg.connect(api.url) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, quality, account_id,
                                  service_point_id)
               VALUES (%s, %s, %s, 'gal', %s, 'A2', 'S2')""",
            [
                ("M2", t0 + timedelta(hours=h), 2.5 + h, "E" if h == 3 else None)
                for h in range(1, 30)
            ],
        )
        cur.execute(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id,
                                  service_point_id) VALUES ('E1', %s, 1.25, 'kWh', 'A2', 'S4')""",
            (t0 + timedelta(hours=2),),
        )
    response = api.client.get(
        "/v1/me/accounts/A2/green-button",
        params={"start": "2026-03-10", "end": "2026-03-12"},
        headers=api.headers("bo@example.com"),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/atom+xml")
    problems, resources = check_feed(response.content)
    assert problems == []
    assert {name: len(found) for name, found in resources.items()} == {
        "UsagePoint": 2,
        "MeterReading": 2,
        "ReadingType": 2,
        "IntervalBlock": 3,  # water: 10 and 11 March; electricity: 10 March
        "LocalTimeParameters": 1,
    }
    water = next(rt for rt in resources["ReadingType"] if rt.findtext(f"{{{ESPI}}}uom") == "128")
    assert water.findtext(f"{{{ESPI}}}commodity") == "9"
    assert water.findtext(f"{{{ESPI}}}powerOfTenMultiplier") == "-3"
    assert water.findtext(f"{{{ESPI}}}intervalLength") == "3600"
    kinds = sorted(u.findtext(f"{{{ESPI}}}ServiceCategory/{{{ESPI}}}kind") or ""
                   for u in resources["UsagePoint"])  # fmt: skip
    assert kinds == ["0", "2"]
    first_day = resources["IntervalBlock"][0]
    readings = first_day.findall(f"{{{ESPI}}}IntervalReading")
    assert len(readings) == 24  # reads ending 01:00 to 24:00 local: the intervals of the 10th
    assert first_day.findtext(f"{{{ESPI}}}interval/{{{ESPI}}}start") == str(int(t0.timestamp()))
    first = readings[0]
    assert first.findtext(f"{{{ESPI}}}value") == "3500"  # 3.5 gal in thousandths
    assert first.findtext(f"{{{ESPI}}}timePeriod/{{{ESPI}}}start") == str(int(t0.timestamp()))
    qualities = [r.findtext(f"{{{ESPI}}}ReadingQuality/{{{ESPI}}}quality") for r in readings]
    assert qualities[2] == "8" and qualities.count(None) == 23  # the estimated read
    (local_time,) = resources["LocalTimeParameters"]
    assert [c.text for c in local_time] == ["B40E2000", "3600", "360E2000", "-21600"]


@pytest.mark.parametrize(
    ("zone", "start", "end", "offset"),
    [
        ("America/Chicago", "360E2000", "B40E2000", -21600),  # 2nd Sunday Mar, 1st Sunday Nov
        ("Europe/Berlin", "3C0E2000", "AC0E3000", 3600),  # last Sunday Mar 2:00, Oct 3:00
        ("Australia/Sydney", "A40E2000", "440E3000", 36000),  # 1st Sunday Oct, 1st Sunday Apr
        ("Asia/Tokyo", "FFFFFFFF", "FFFFFFFF", 32400),
    ],
)
def test_dst_rules(zone: str, start: str, end: str, offset: int) -> None:
    params = local_time_parameters(ZoneInfo(zone), 2026)
    assert (params.dst_start_rule, params.dst_end_rule, params.tz_offset_s) == (
        start,
        end,
        offset,
    )


def test_green_button_window_defaults_to_24_months(api: Api) -> None:
    response = api.client.get("/v1/me/accounts/A1/green-button", headers=api.as_role("customer"))
    assert response.status_code == 200
    problems, resources = check_feed(response.content)
    assert problems == []
    start, end = default_window("day", datetime.now(ZoneInfo("America/Chicago")).date())
    assert f"{start}-{end}" in response.headers["content-disposition"]
    assert "LocalTimeParameters" in resources
