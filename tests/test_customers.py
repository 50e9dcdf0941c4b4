"""Self-service (/v1/me): usage history by hour, day and month with last year beside, the CSV
download, alert rules, alerts, leaks with their cost, and declaring expected use."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg
from api_fixtures import Api, access_url, api

from api.usage import default_window, ensure_rollup

__all__ = ["access_url", "api"]


def add_reads(api: Api, rows: list[tuple[str, datetime, float, str | None]]) -> None:
    with psycopg.connect(api.url) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, quality, account_id,
                                  service_point_id)
               VALUES (%s, %s, %s, 'gal', %s, 'A1', 'S1')""",
            rows,
        )


def test_usage_by_day_with_last_year_beside(api: Api) -> None:
    chicago_noon = datetime(2025, 6, 10, 17, tzinfo=UTC)  # 12:00 CDT
    add_reads(
        api,
        [
            ("M1", chicago_noon, 10.0, None),
            ("M1", chicago_noon + timedelta(hours=1), 5.0, "E"),
            ("M1", chicago_noon.replace(year=2024), 7.0, None),
            # 00:00 local on 11 June ends an interval of 10 June
            ("M1", datetime(2025, 6, 11, 5, tzinfo=UTC), 1.0, None),
        ],
    )
    response = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"resolution": "day", "start": "2025-06-09", "end": "2025-06-12"},
        headers=api.as_role("customer"),
    )
    assert response.status_code == 200, response.text
    history = response.json()
    assert history["timezone"] == "America/Chicago"
    (series,) = history["series"]
    assert series["unit"] == "gal"
    assert [(b["start"], b["usage"], b["reads"], b["estimated_reads"], b["last_year_usage"])
            for b in series["buckets"]] == [
        ("2025-06-09T00:00:00-05:00", None, 0, 0, None),
        ("2025-06-10T00:00:00-05:00", 16.0, 3, 1, 7.0),
        ("2025-06-11T00:00:00-05:00", None, 0, 0, None),
    ]  # fmt: skip


def test_usage_by_hour_and_month_and_csv(api: Api) -> None:
    # summer time ends at 07:00 UTC (2 am CDT becomes 1 am CST): reads ending 07:00 and 08:00
    # UTC both cover a 1 am hour, the one ending 09:00 covers 2 am
    base = datetime(2025, 11, 2, 6, tzinfo=UTC)
    add_reads(api, [("M1", base + timedelta(hours=h), 1.0, None) for h in range(1, 4)])
    headers = api.as_role("customer")
    hourly = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"resolution": "hour", "start": "2025-11-02", "end": "2025-11-03"},
        headers=headers,
    ).json()
    buckets = hourly["series"][0]["buckets"]
    assert len(buckets) == 24  # local wall-clock hours: the repeated 1 am is one bucket
    assert [(b["start"][11:19], b["usage"]) for b in buckets[:3]] == [
        ("00:00:00", None),
        ("01:00:00", 2.0),
        ("02:00:00", 1.0),
    ]
    monthly = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"resolution": "month", "start": "2025-10-01", "end": "2026-04-01"},
        headers=headers,
    ).json()
    months = {b["start"][:7]: b["usage"] for b in monthly["series"][0]["buckets"]}
    assert months["2025-11"] == 3.0
    assert months["2026-02"] == 5.0  # the sample's 1 March UTC reads are February in Chicago
    download = api.client.get(
        "/v1/me/accounts/A1/usage.csv",
        params={"resolution": "month", "start": "2025-10-01", "end": "2026-04-01"},
        headers=headers,
    )
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert rows[1] == {
        "unit": "gal",
        "start": "2025-11-01T00:00:00-05:00",
        "usage": "3.0",
        "reads": "3",
        "estimated_reads": "0",
        "last_year_usage": "",
    }


def test_usage_windows_are_bounded(api: Api) -> None:
    headers = api.as_role("customer")
    too_long = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"start": "2020-01-01", "end": "2026-01-01"},
        headers=headers,
    )
    assert too_long.status_code == 422
    assert "at most 762 days" in too_long.json()["detail"]
    backwards = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"start": "2026-01-01", "end": "2025-01-01"},
        headers=headers,
    )
    assert backwards.status_code == 422
    assert api.client.get("/v1/me/accounts/A1/usage", headers=headers).status_code == 200
    assert default_window("month", date(2026, 3, 15)) == (date(2024, 4, 1), date(2026, 3, 16))
    assert default_window("day", date(2026, 3, 15)) == (date(2024, 3, 16), date(2026, 3, 16))


def test_another_customers_account_is_404(api: Api) -> None:
    headers = api.as_role("customer")
    for path in ("usage", "usage.csv", "green-button", "alerts", "leaks", "alert-settings"):
        response = api.client.get(f"/v1/me/accounts/A2/{path}", headers=headers)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "you have no account 'A2'"}
    mine = api.client.get("/v1/me/accounts", headers=headers).json()
    assert [a["account_id"] for a in mine] == ["A1"]


def test_alert_settings_read_and_change(api: Api) -> None:
    headers = api.as_role("customer")
    default = api.client.get("/v1/me/accounts/A1/alert-settings", headers=headers).json()
    assert default["leak_alerts"] is True and default["daily_threshold"] is None
    changed = api.client.patch(
        "/v1/me/accounts/A1/alert-settings",
        json={
            "daily_threshold": 400,
            "projected_bill_threshold": "80.00",
            "sms_opt_in": True,
            "quiet_start": "21:00",
            "quiet_end": "07:00",
        },
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["daily_threshold"], body["projected_bill_threshold"], body["sms_opt_in"]) == (
        400.0,
        "80.00",
        True,
    )
    half = api.client.patch(
        "/v1/me/accounts/A1/alert-settings", json={"quiet_end": None}, headers=headers
    )
    assert half.status_code == 422 and "both quiet_start and quiet_end" in half.json()["detail"]
    unknown = api.client.patch(
        "/v1/me/accounts/A1/alert-settings", json={"colour": "red"}, headers=headers
    )
    assert unknown.status_code == 422
    with psycopg.connect(api.url) as conn:
        (actor, action) = conn.execute(
            "SELECT actor, action FROM audit_log WHERE entity = 'alert_settings'"
        ).fetchone() or ("", "")
    assert (actor, action) == ("ada@example.com", "update_alert_settings")


def test_alerts_with_deliveries(api: Api) -> None:
    with psycopg.connect(api.url) as conn:
        conn.execute(
            """INSERT INTO alert_deliveries (alert_id, channel, destination, status)
               SELECT alert_id, 'email', 'ada@example.com', 'sent' FROM alerts
                WHERE account_id = 'A1'"""
        )
    alerts = api.client.get("/v1/me/accounts/A1/alerts", headers=api.as_role("customer")).json()
    assert [(a["rule"], [d["channel"] for d in a["deliveries"]]) for a in alerts] == [
        ("leak", ["email"])
    ]


def test_open_leak_with_its_cost(api: Api) -> None:
    with psycopg.connect(api.url) as conn:
        conn.execute(
            """UPDATE flags SET details = '{"leak_rate": 2.5, "volume_lost": 300}'
                WHERE meter_id = 'M1' AND kind = 'leak'"""
        )
    (leak,) = api.client.get("/v1/me/accounts/A1/leaks", headers=api.as_role("customer")).json()
    assert (leak["leak_rate"], leak["volume_lost"], leak["currency"]) == (2.5, 300.0, "USD")
    # this period has no reads yet: the 300 gal lost and 1,800 gal a month are tier 1 (0.004)
    assert Decimal(leak["cost_so_far"]) == Decimal("0.00")  # nothing used this period yet
    assert Decimal(leak["cost_per_30_days"]) == Decimal("7.20")
    assert leak["cost_note"] is None


def test_declare_expected_use(api: Api) -> None:
    headers = api.as_role("customer")
    flags = api.client.get("/v1/me/accounts/A1/flags", headers=headers).json()
    (leak,) = [f for f in flags if f["kind"] == "leak"]
    response = api.client.post(
        f"/v1/me/accounts/A1/flags/{leak['flag_id']}/expected-use",
        json={"description": "that's my evaporative cooler"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    flag = response.json()
    assert (flag["status"], flag["expected_use"], flag["status_by"]) == (
        "dismissed",
        True,
        "ada@example.com",
    )
    again = api.client.post(
        f"/v1/me/accounts/A1/flags/{leak['flag_id']}/expected-use",
        json={"description": "still the cooler"},
        headers=headers,
    )
    assert again.status_code == 409
    declared = api.client.post(
        "/v1/me/accounts/A1/declared-usage",
        json={
            "kind": "pool",
            "description": "pool top-up",
            "rate_gph": 120,
            "schedule": "Saturdays 6-9 am",
        },
        headers=headers,
    )
    assert declared.status_code == 201, declared.text
    wrong_meter = api.client.post(
        "/v1/me/accounts/A1/declared-usage",
        json={"meter_id": "M2", "kind": "pool", "description": "not my meter"},
        headers=headers,
    )
    assert wrong_meter.status_code == 422
    listed = api.client.get("/v1/me/accounts/A1/declared-usage", headers=headers).json()
    assert [(d["kind"], d["flag_id"] is not None) for d in listed] == [
        ("pool", False),
        ("other", True),
    ]
    other = api.client.get("/v1/me/accounts/A2/flags", headers=headers)
    assert other.status_code == 404
    with psycopg.connect(api.url) as conn:
        spike = conn.execute("SELECT flag_id FROM flags WHERE kind = 'spike'").fetchone()
    assert spike is not None
    foreign_flag = api.client.post(
        f"/v1/me/accounts/A1/flags/{spike[0]}/expected-use",
        json={"description": "not mine"},
        headers=headers,
    )
    assert foreign_flag.status_code == 404


def test_daily_rollup_follows_the_reads(api: Api) -> None:
    add_reads(
        api,
        [
            ("M1", datetime(2025, 6, 10, 17, tzinfo=UTC), 10.0, "E"),
            ("M1", datetime(2025, 6, 10, 18, tzinfo=UTC), 4.0, None),
            ("M1", datetime(2025, 6, 11, 5, tzinfo=UTC), 1.0, None),  # 00:00 CDT: the 10th
        ],
    )
    with psycopg.connect(api.url) as conn:
        conn.execute("UPDATE reads SET value = 6, quality = NULL WHERE ts = '2025-06-10T17:00Z'")
        conn.execute("DELETE FROM reads WHERE ts = '2025-06-10T18:00Z'")
        rollup = conn.execute(
            """SELECT day, usage, reads, estimated FROM usage_daily
                WHERE account_id = 'A1' AND day = '2025-06-10'"""
        ).fetchall()
        assert rollup == [(date(2025, 6, 10), 7.0, 2, 0)]
        raw = conn.execute(
            """SELECT ((ts - interval '1 microsecond') AT TIME ZONE 'America/Chicago')::date,
                      sum(value), count(*)
                 FROM reads GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        rolled = conn.execute(
            "SELECT day, sum(usage), sum(reads) FROM usage_daily GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert [(d, float(u or 0), n) for d, u, n in raw] == [
            (d, float(u), n) for d, u, n in rolled if n
        ]
        # a change of zone rebuilds it (the API does this at start-up)
        assert ensure_rollup(conn, "UTC") is True
        assert ensure_rollup(conn, "UTC") is False
        utc_days = conn.execute(
            """SELECT day FROM usage_daily WHERE account_id = 'A1'
                  AND day BETWEEN '2025-06-10' AND '2025-07-01' ORDER BY day"""
        ).fetchall()
    assert utc_days == [(date(2025, 6, 10),), (date(2025, 6, 11),)]
    # usage by day now comes from the reads (the rollup is in another zone): same answer
    by_day = api.client.get(
        "/v1/me/accounts/A1/usage",
        params={"start": "2025-06-10", "end": "2025-06-11"},
        headers=api.as_role("customer"),
    ).json()
    assert by_day["series"][0]["buckets"][0]["usage"] == 7.0
