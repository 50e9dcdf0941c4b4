"""The staff side of the API: the single account view, contacts, flag review and the audit
trail, against real TimescaleDB through FastAPI's TestClient."""

from __future__ import annotations

from decimal import Decimal

import psycopg
from api_fixtures import Api, access_url, api

__all__ = ["access_url", "api"]


def flag_id(api: Api, meter: str, kind: str) -> int:
    with psycopg.connect(api.url) as conn:
        row = conn.execute(
            "SELECT flag_id FROM flags WHERE meter_id = %s AND kind = %s", (meter, kind)
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_account_view_has_everything_in_one_call(api: Api) -> None:
    with psycopg.connect(api.url) as conn:
        # a meter exchange on S2: M2 left on 2026-02-01, M9 took over
        conn.execute("INSERT INTO meters VALUES ('M9')")
        conn.execute(
            "UPDATE meter_assignments SET valid_to = '2026-02-01T00:00Z' WHERE meter_id = 'M2'"
        )
        conn.execute(
            """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from)
               VALUES ('M9', 'S2', 'A2', '2026-02-01T00:00Z')"""
        )
        conn.execute(
            "UPDATE reads SET quality = 'E' WHERE meter_id = 'M2' AND ts = %s",
            ("2026-03-01T01:00Z",),
        )
        alert = conn.execute(
            "SELECT alert_id FROM alerts WHERE account_id = 'A2' AND rule = 'daily'"
        )
        (alert_id,) = alert.fetchone() or (0,)
        conn.execute(
            """INSERT INTO alert_deliveries (alert_id, channel, destination, provider_id, status,
                                             error)
               VALUES (%s, 'sms', '+15550100', NULL, 'failed', 'carrier timeout'),
                      (%s, 'sms', '+15550100', 'SM123', 'sent', NULL)""",
            (alert_id, alert_id),
        )
    headers = api.as_role("billing")
    contact = api.client.post(
        "/v1/accounts/A2/contacts",
        json={"channel": "phone", "summary": "customer asked about the March bill"},
        headers=headers,
    )
    assert contact.status_code == 201, contact.text
    assert contact.json()["actor"] == "bill.billing"

    response = api.client.get("/v1/accounts/A2", params={"periods": 2}, headers=headers)
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["customer"]["customer_id"] == "C2"
    assert view["account"]["rate_plan"] == "COM"
    points = {p["service_point_id"]: p for p in view["service_points"]}
    assert [m["meter_id"] for m in points["S2"]["meters"]] == ["M2", "M9"]
    assert points["S2"]["meters"][0]["valid_to"] == "2026-02-01T00:00:00Z"
    reads = view["recent_reads"]
    assert {r["meter_id"] for r in reads} == {"M2", "E1"}
    estimated = [r for r in reads if r["estimated"]]
    assert [(r["meter_id"], r["ts"], r["quality"]) for r in estimated] == [
        ("M2", "2026-03-01T01:00:00Z", "E")
    ]
    electric = next(r for r in reads if r["meter_id"] == "E1")
    assert (electric["unit"], electric["reported_unit"]) == ("kWh", "kWh")
    assert {f["kind"] for f in view["flags"]} == {"spike", "leak"}
    assert all("evidence" in f and "details" in f for f in view["flags"])
    assert len(view["bills"]) == 2
    assert view["bills"][0]["period_start"] > view["bills"][1]["period_start"]
    (daily,) = [a for a in view["alerts"] if a["rule"] == "daily"]
    assert [(d["status"], d["error"]) for d in daily["deliveries"]] == [
        ("failed", "carrier timeout"),
        ("sent", None),
    ]
    assert [c["summary"] for c in view["contacts"]] == ["customer asked about the March bill"]
    assert [a["action"] for a in view["audit"]] == ["add_contact"]


def test_account_view_of_an_unknown_account_is_404(api: Api) -> None:
    response = api.client.get("/v1/accounts/NOPE", headers=api.as_role("operator"))
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no account 'NOPE'")


def test_bill_preview_shows_the_tier_arithmetic(api: Api) -> None:
    with psycopg.connect(api.url) as conn:
        conn.execute(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, quality, account_id,
                                  service_point_id)
               VALUES ('M1', '2026-03-10T12:00Z', 6000, 'gal', NULL, 'A1', 'S1'),
                      ('M1', '2026-03-10T13:00Z', 245, 'gal', 'E', 'A1', 'S1'),
                      ('M1', '2026-03-10T14:00Z', -2, 'gal', NULL, 'A1', 'S1')"""
        )
    response = api.client.get(
        "/v1/accounts/A1/bill-preview",
        params={"period_start": "2026-03-01"},
        headers=api.as_role("operator"),
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert (preview["period_start"], preview["period_end"]) == ("2026-03-01", "2026-04-01")
    # local midnight in Chicago (UTC-6 before DST starts on 8 March)
    assert preview["starts_at"] == "2026-03-01T06:00:00Z"
    (usage,) = preview["usage"]
    # 5 sample reads of 1 gal are on 1 March UTC, i.e. still February in Chicago: not counted
    assert usage["reads"] == 3 and usage["usage"] == 6243.0
    assert (usage["estimated_reads"], usage["estimated_usage"]) == (1, 245.0)
    assert usage["reverse_flow"] == -2.0
    bill = preview["bill"]
    assert [(line["description"], line["amount"]) for line in bill["lines"]] == [
        ("Fixed charge", "12.00"),
        ("Tier 1: 0 to 5,000 gal at 0.004 USD/gal", "20.00"),
        ("Tier 2: above 5,000 gal at 0.006 USD/gal", "7.46"),
    ]
    assert Decimal(bill["total"]) == Decimal("39.46")
    assert any("1 estimated read(s), 245.000 gal, are billed" in n for n in preview["notes"])
    assert any("2.000 gal of reverse flow" in n for n in preview["notes"])


def test_bill_preview_names_a_missing_rate_plan(api: Api) -> None:
    response = api.client.get("/v1/accounts/A3/bill-preview", headers=api.as_role("admin"))
    assert response.status_code == 200
    assert response.json()["bill"] is None
    assert "no rate plan" in response.json()["not_priced"]
    bad = api.client.get(
        "/v1/accounts/A3/bill-preview",
        params={"period_start": "2026-03-01"},
        headers=api.as_role("admin"),
    )
    assert bad.status_code == 422
    assert "starts on 2026-02-15" in bad.json()["detail"]


def test_flag_review_with_reason_and_audit(api: Api) -> None:
    leak = flag_id(api, "M1", "leak")
    headers = api.as_role("operator")
    response = api.client.post(
        f"/v1/flags/{leak}/review",
        json={"status": "dismissed", "reason": "evaporative cooler", "expected_use": True},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    flag = response.json()
    assert (flag["status"], flag["expected_use"], flag["status_by"]) == (
        "dismissed",
        True,
        "olga.operator",
    )
    with psycopg.connect(api.url) as conn:
        audit = conn.execute(
            "SELECT actor, action, reason, details FROM audit_log WHERE entity = 'flag'"
        ).fetchall()
    assert audit == [
        (
            "olga.operator",
            "review_flag",
            "evaporative cooler",
            {"account_id": "A1", "from": "open", "to": "dismissed", "expected_use": True},
        )
    ]
    wrong = api.client.post(
        f"/v1/flags/{leak}/review",
        json={"status": "confirmed", "reason": "real leak", "expected_use": True},
        headers=headers,
    )
    assert wrong.status_code == 422
    assert "expected_use goes with status dismissed" in wrong.json()["detail"]
    assert (
        api.client.post(
            "/v1/flags/999999/review",
            json={"status": "resolved", "reason": "fixed"},
            headers=headers,
        ).status_code
        == 404
    )


def test_bulk_review_and_filters(api: Api) -> None:
    headers = api.as_role("billing")
    listed = api.client.get("/v1/flags", params={"status": "open"}, headers=headers).json()
    assert [f["kind"] for f in listed] == ["leak"]
    cycle = api.client.get(
        "/v1/flags", params={"cycle_day": 1, "period_start": "2026-02-01"}, headers=headers
    ).json()
    # cycle day 1 is A1 and A2; February (Chicago) holds every flag of theirs
    assert sorted(f["kind"] for f in cycle) == ["leak", "leak", "spike"]
    ids = [f["flag_id"] for f in cycle]
    response = api.client.post(
        "/v1/flags/review",
        json={"flag_ids": [*ids, 424242], "status": "resolved", "reason": "fixed on site"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": sorted(ids), "missing": [424242]}
    assert api.client.get("/v1/flags", params={"status": "open"}, headers=headers).json() == []
    half = api.client.get("/v1/flags", params={"period_start": "2026-02-01"}, headers=headers)
    assert half.status_code == 422
