"""The words of alerts (alerts.messages), the periods they count over (alerts.periods) and what
usage costs (alerts.pricing): every SMS fits one GSM-7 segment with realistic numbers and
links, and says the numbers, what to check and where to look."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from alerts_fixtures import add_account, alerts_of, run_reads, write_reads

from alerts.messages import AlertFacts, email_text, gsm7_length, sms_segments, sms_text
from alerts.periods import billing_period, read_day
from alerts.pricing import Tariffs, flat_price, project_bill, usage_reaching
from meterwatch.settings import Settings

LINK = "https://springfieldwater.org/usage"  # a typical portal link
LONG_LINK = "https://myaccount.springfieldutilities.org/usage"  # 48 characters

EXAMPLES = {
    "daily": dict(usage=12_345.6, threshold=5_000.0, cost=123.45, day=date(2026, 9, 30)),
    "period": dict(
        usage=123_456.0, threshold=100_000.0, cost=1_234.5,
        period_start=date(2026, 8, 28), period_end=date(2026, 9, 27),
    ),
    "projected_bill": dict(
        usage=45_678.0, projected_amount=1_234.56, bill_threshold=999.99,
        period_start=date(2026, 8, 28), period_end=date(2026, 9, 27),
    ),
    "leak": dict(meter_id="WTR-000123456", leak_rate=12.34, hours=123.0, volume_lost=4_321.0,
                 cost=43.21),
    "burst": dict(meter_id="WTR-000123456", leak_rate=1_234.5, hours=5.0, volume_lost=6_000.0),
}  # fmt: skip


def facts(rule: str, **overrides: object) -> AlertFacts:
    values: dict[str, object] = dict(
        rule=rule, utility="Springfield Water", customer="Ada Lovelace",
        account_id="0012345678", unit="gal", currency="USD", link=LINK, **EXAMPLES[rule],
    )  # fmt: skip
    values.update(overrides)
    return AlertFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", list(EXAMPLES))
@pytest.mark.parametrize("late", [False, True])
def test_every_sms_fits_one_gsm7_segment_with_numbers_and_link(rule: str, late: bool) -> None:
    text = sms_text(facts(rule, late=late))
    assert gsm7_length(text) is not None and gsm7_length(text) <= 160, text  # type: ignore[operator]
    assert sms_segments(text) == 1
    assert text.startswith("Springfield Water:") and text.endswith(LINK)
    for said in NUMBERS[rule] + ADVICE[rule]:
        assert said in text, (said, text)


NUMBERS = {
    "daily": ["12,346 gal", "5,000 gal", "$123"],
    "period": ["123,456 gal", "100,000 gal", "Aug 28-Sep 27", "$1,234"],
    "projected_bill": ["$1,235", "$1,000", "45,678 gal"],
    "leak": ["12.3 gal/h", "123 h", "WTR-000123456", "$43"],
    "burst": ["1,234 gal/h", "5 h", "WTR-000123456"],
}
ADVICE = {
    "daily": ["Check toilets, taps, irrigation"],
    "period": ["See your use"],
    "projected_bill": ["Ways to save"],
    "leak": ["Check toilets, taps, irrigation"],
    "burst": ["Shut your main valve"],
}


@pytest.mark.parametrize("rule", list(EXAMPLES))
def test_a_long_name_and_link_still_fit_keeping_numbers_and_link(rule: str) -> None:
    text = sms_text(facts(rule, utility="Springfield Water & Power", link=LONG_LINK))
    assert sms_segments(text) == 1, text
    assert text.endswith(LONG_LINK)
    for said in NUMBERS[rule][:2]:
        assert said in text, (said, text)


def test_sms_keeps_the_link_when_nothing_fits_and_stays_gsm7() -> None:
    long_link = "https://example.org/" + "u" * 150
    text = sms_text(facts("daily", link=long_link))
    assert text.endswith(long_link) and sms_segments(text) == 2
    # A name with a character GSM-7 lacks must not turn the SMS into UCS-2 (70 a segment).
    text = sms_text(facts("leak", utility="Wodociągi Łódź"))
    assert gsm7_length(text) is not None and sms_segments(text) == 1


def test_gsm7_lengths() -> None:
    assert gsm7_length("Zürich £5 é") == 11
    assert gsm7_length("{€}") == 6  # the extension table takes two septets each
    assert gsm7_length("emoji 💧") is None
    assert sms_segments("💧" * 35) == 1  # UCS-2 counts UTF-16 units: a drop takes two
    assert sms_segments("💧" * 70) == 3


@pytest.mark.parametrize("rule", list(EXAMPLES))
def test_email_says_what_how_much_what_to_check_and_where(rule: str) -> None:
    subject, body = email_text(facts(rule))
    assert subject.startswith("Springfield Water: ")
    assert body.startswith("Hello Ada Lovelace,")
    assert "What to check:" in body and f"See your usage hour by hour: {LINK}" in body
    assert "stop these alerts" in body  # how to opt out
    assert "0012345678" in body


def test_electric_accounts_get_electric_advice() -> None:
    text = sms_text(facts("daily", unit="kWh", usage=85.0, threshold=60.0, cost=12.75))
    assert "85.0 kWh" not in text and "85 kWh" in text and "heating" in text
    assert "Heating and cooling" in email_text(facts("daily", unit="kWh"))[1]


def test_read_days_follow_interval_ends_and_daylight_saving() -> None:
    chicago = ZoneInfo("America/Chicago")
    # 8 March 2026: clocks go forward; the local day is 23 hours long.
    assert read_day(datetime(2026, 3, 9, 5, 0, tzinfo=UTC), chicago) == date(2026, 3, 8)
    assert read_day(datetime(2026, 3, 9, 5, 0, 1, tzinfo=UTC), chicago) == date(2026, 3, 9)
    assert read_day(datetime(2026, 3, 8, 6, 0, tzinfo=UTC), chicago) == date(2026, 3, 7)


def test_billing_periods_agree_with_the_billing_package() -> None:
    periods = pytest.importorskip("billing.periods")
    rng = random.Random(5)
    for _ in range(2000):
        day = date(2024, 1, 1) + timedelta(days=rng.randrange(1100))
        cycle_day = rng.randint(1, 31)
        ours = billing_period(day, cycle_day)
        theirs = periods.period_containing(day, cycle_day)
        assert (ours.start, ours.end + timedelta(days=1)) == (theirs.start, theirs.end)


def test_projection_and_price_functions() -> None:
    price = flat_price(0.004, fixed_charge=12.0)
    projection = project_bill(1000.0, elapsed=0.25, price=price)
    assert projection.projected_usage == 4000.0 and round(projection.amount, 2) == 28.0
    assert abs(usage_reaching(price, 28.0) - 4000.0) < 0.01
    assert usage_reaching(price, 10.0) == 0.0  # the fixed charge alone reaches it
    with pytest.raises(ValueError):
        project_bill(1.0, elapsed=0, price=price)


def test_projected_bill_uses_the_rate_plan_of_the_billing_package(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Where issue 5's rate plans are imported, the projected bill is priced with the plan's
    fixed charge and tiers instead of the flat price."""
    pytest.importorskip("billing.rates")
    settings = make_settings(database_url=database_url, alert_price_per_gal=0.01)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO rate_plans (rate_plan, currency, fixed_charge, unit) "
            "VALUES ('RES-W', 'USD', 12.00, 'gal')"
        )
        conn.execute(
            "INSERT INTO rate_tiers (rate_plan, tier_from, tier_to, price_per_unit) VALUES "
            "('RES-W', 0, 5000, 0.004), ('RES-W', 5000, NULL, 0.006)"
        )
        add_account(conn, "T1", meters=["MT1"], bill=40, rate_plan="RES-W")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    reads = [("MT1", start + timedelta(hours=h), 25.0) for h in range(1, 24 * 10)]
    run_reads(settings, write_reads(tmp_path / "reads.csv", reads))
    [alert] = alerts_of(database_url, account_id="T1")
    # 600 gal a day over a 31-day period: 18,600 gal. Flat 0.01 would be $186 from day 1;
    # the plan says 12 + 5,000 × 0.004 + 13,600 × 0.006 = $113.60.
    assert alert["details"]["tariff"] == "rate plan RES-W"
    projected = alert["details"]["projected_usage"]
    tiers = Decimal(12) + Decimal(5000) * Decimal("0.004")
    tiers += (Decimal(str(projected)) - 5000) * Decimal("0.006")
    assert abs(alert["details"]["projected_amount"] - float(tiers)) < 0.02
    assert Tariffs({"gal": 0.01}, 0.0, "USD").flat("gal").source.startswith("flat 0.01 USD/gal")
