"""Billing: periods from the cycle day, tier arithmetic, the rates CSV import (and its command),
and billing cycles: readiness and closing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from api_fixtures import RATES_CSV, Api, access_url, api, write_rates
from typer.testing import CliRunner

from billing.periods import period_containing, period_starting, recent_periods
from billing.rates import UnknownRatePlan, import_rates, price_usage
from billing.tiers import RatePlan, Tier, check_tiers, price

__all__ = ["access_url", "api"]

PLAN = RatePlan(
    "RES",
    "Residential",
    "USD",
    Decimal("12.00"),
    "gal",
    (
        Tier(Decimal(0), Decimal(5000), Decimal("0.004")),
        Tier(Decimal(5000), Decimal(10000), Decimal("0.006")),
        Tier(Decimal(10000), None, Decimal("0.01")),
    ),
)


@pytest.mark.parametrize(
    ("day", "cycle_day", "start", "end"),
    [
        (date(2026, 3, 15), 15, date(2026, 3, 15), date(2026, 4, 15)),
        (date(2026, 3, 14), 15, date(2026, 2, 15), date(2026, 3, 15)),
        (date(2026, 1, 5), 20, date(2025, 12, 20), date(2026, 1, 20)),
        (date(2026, 2, 28), 31, date(2026, 2, 28), date(2026, 3, 31)),
        (date(2024, 2, 29), 30, date(2024, 2, 29), date(2024, 3, 30)),
    ],
)
def test_periods(day: date, cycle_day: int, start: date, end: date) -> None:
    period = period_containing(day, cycle_day)
    assert (period.start, period.end) == (start, end)
    assert period_starting(start, cycle_day) == period


def test_recent_periods_and_bad_starts() -> None:
    assert [p.start for p in recent_periods(date(2026, 1, 10), 31, 3)] == [
        date(2025, 12, 31),
        date(2025, 11, 30),
        date(2025, 10, 31),
    ]
    with pytest.raises(ValueError, match="starts on 2026-03-15"):
        period_starting(date(2026, 3, 20), 15)
    with pytest.raises(ValueError, match="use 1-31"):
        period_containing(date(2026, 3, 20), 0)


def test_tiers_line_by_line() -> None:
    bill = price(PLAN, 12_345.6789, period_days=31)
    assert [(line.quantity, line.amount) for line in bill.lines] == [
        (Decimal(1), Decimal("12.00")),
        (Decimal("5000.000"), Decimal("20.00")),
        (Decimal("5000.000"), Decimal("30.00")),
        (Decimal("2345.679"), Decimal("23.46")),
    ]
    assert bill.total == Decimal("85.46") and bill.proration == 1 and bill.notes == ()


def test_short_period_is_prorated_and_negative_usage_priced_as_zero() -> None:
    bill = price(PLAN, 3000, period_days=15)  # a move-in half way
    assert bill.proration == Decimal("0.5")
    assert [line.amount for line in bill.lines] == [
        Decimal("6.00"),
        Decimal("10.00"),  # 2,500 gal at 0.004 (tier 1 halved)
        Decimal("3.00"),  # 500 gal at 0.006
        Decimal("0.00"),
    ]
    assert bill.lines[1].description == "Tier 1: 0 to 2,500 gal at 0.004 USD/gal"
    assert "prorated by 15/30" in bill.notes[0]
    negative = price(PLAN, -5)
    assert negative.total == Decimal("12.00")
    assert "reverse flow" in negative.notes[0]


def test_check_tiers_names_each_gap() -> None:
    assert check_tiers(PLAN.tiers) == []
    problems = check_tiers(
        [Tier(Decimal(10), Decimal(20), Decimal(1)), Tier(Decimal(30), Decimal(40), Decimal(1))]
    )
    assert problems == [
        "the first tier starts at 10: start it at 0",
        "the tier from 10 ends at 20 but the next starts at 30: make them meet",
        "the last tier ends at 40: leave its tier_to empty so that every usage is priced",
    ]


def test_import_rates_is_validated_and_idempotent(database_url: str, tmp_path: Path) -> None:
    bad = write_rates(
        tmp_path,
        "rate_plan,description,currency,fixed_charge,tier_from,tier_to,price_per_unit,unit\n"
        "RES,Residential,usd,12,0,5000,0.004,gal\n"
        "RES,Residential,USD,13,5000,,0.006,gal\n"
        "IRR,Irrigation,USD,5,0,,lots,m3\n",
    )
    with psycopg.connect(database_url) as conn:
        report = import_rates(conn, bad, actor="tests")
        assert report.problems == [
            "rates.csv row 2: currency 'usd' is not an ISO 4217 code: write it like USD",
            "rates.csv row 3: currency, fixed_charge of plan 'RES' differ from row 2: a plan's "
            "own columns must be the same on all its rows",
            "rates.csv row 4: unit 'm3' is not gal or kWh",
            "rates.csv row 4: price_per_unit 'lots' is not a number: write it like 12.50",
            "rates.csv, plan 'IRR' (from row 4): a rate plan needs at least one tier",
        ]
        assert conn.execute("SELECT count(*) FROM rate_plans").fetchone() == (0,)
        good = write_rates(tmp_path)
        first = import_rates(conn, good, actor="tests")
        assert (first.created, first.updated, first.unchanged) == (["RES", "COM"], [], [])
        again = import_rates(conn, good, actor="tests")
        assert (again.created, again.updated, again.unchanged) == ([], [], ["RES", "COM"])
        changed = write_rates(tmp_path, RATES_CSV.replace("0.006", "0.007"))
        assert import_rates(conn, changed, actor="tests").updated == ["RES"]
        bill = price_usage(conn, "RES", 6000, 30)
        assert bill.total == Decimal("12.00") + Decimal("20.00") + Decimal("7.00")
        with pytest.raises(UnknownRatePlan, match="meterwatch import-rates"):
            price_usage(conn, "NOPE", 1, 30)
        audits = conn.execute(
            "SELECT actor, details FROM audit_log WHERE action = 'import_rates' ORDER BY audit_id"
        ).fetchall()
    assert audits == [
        ("tests", {"created": ["RES", "COM"], "updated": []}),
        ("tests", {"created": [], "updated": ["RES"]}),
    ]


def test_import_rates_command(
    database_url: str, tmp_path: Path, make_settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meterwatch.cli import app as cli  # the whole command line, bench commands included
    from meterwatch.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(cli, ["import-rates", str(write_rates(tmp_path))])
        assert result.exit_code == 0, result.output
        assert "created: RES, COM" in result.output
        bad = write_rates(tmp_path, "rate_plan,description\nRES,x\n")
        result = runner.invoke(cli, ["import-rates", str(bad)])
        assert result.exit_code == 1
        assert "row 1: missing column(s) currency" in result.output
    finally:
        get_settings.cache_clear()


def test_cycle_readiness_and_close(api: Api) -> None:
    headers = api.as_role("billing")
    cycles = api.client.get("/v1/billing-cycles", headers=headers)
    assert cycles.status_code == 200
    assert {(c["cycle_day"], c["accounts"]) for c in cycles.json()} == {(1, 2), (15, 1)}
    readiness = api.client.get("/v1/billing-cycles/1/2026-02-01", headers=headers).json()
    assert readiness["ready"] is False
    # the open leak of A1 and the confirmed spike of A2 overlap February (Chicago)
    assert readiness["blocking_by_kind"] == [
        {"kind": "leak", "flags": 1},
        {"kind": "spike", "flags": 1},
    ]
    refused = api.client.post("/v1/billing-cycles/1/2026-02-01/close", json={}, headers=headers)
    assert refused.status_code == 409
    assert "2 unresolved flag(s)" in refused.json()["detail"]
    operator = api.client.post(
        "/v1/billing-cycles/1/2026-02-01/close",
        json={"override": True, "reason": "meter shop confirmed"},
        headers=api.as_role("operator"),
    )
    assert operator.status_code == 403
    closed = api.client.post(
        "/v1/billing-cycles/1/2026-02-01/close",
        json={"override": True, "reason": "leak confirmed with the customer, bill as read"},
        headers=headers,
    )
    assert closed.status_code == 200, closed.text
    assert (closed.json()["overridden"], closed.json()["blocking_flags"]) == (True, 2)
    again = api.client.post("/v1/billing-cycles/1/2026-02-01/close", json={}, headers=headers)
    assert again.status_code == 409 and "was closed by bill.billing" in again.json()["detail"]
    not_yet = api.client.post("/v1/billing-cycles/1/2099-01-01/close", json={}, headers=headers)
    assert not_yet.status_code == 409 and "runs until 2099-02-01" in not_yet.json()["detail"]
    clean = api.client.post("/v1/billing-cycles/15/2025-12-15/close", json={}, headers=headers)
    assert clean.status_code == 200 and clean.json()["overridden"] is False
    assert api.client.get("/v1/billing-cycles/15/2026-03-01", headers=headers).status_code == 404
    with psycopg.connect(api.url) as conn:
        audit = conn.execute(
            "SELECT actor, entity_id, reason FROM audit_log WHERE action = 'close_billing_cycle' "
            "ORDER BY audit_id"
        ).fetchall()
    assert audit == [
        ("bill.billing", "1/2026-02-01", "leak confirmed with the customer, bill as read"),
        ("bill.billing", "15/2025-12-15", None),
    ]


def test_rate_plans_listing(api: Api) -> None:
    plans = api.client.get("/v1/rate-plans", headers=api.as_role("operator")).json()
    assert [p["rate_plan"] for p in plans] == ["COM", "RES"]
    assert plans[1]["tiers"][1] == {"tier_from": "5000.000", "tier_to": None,
                                    "price_per_unit": "0.006000"}  # fmt: skip
