"""The dashboard without a browser: pure figure, table and form builders, the API client and
the sign-in, sign-out and download routes against a real API. The browser tests are in
tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
import uvicorn
from api_fixtures import PASSWORD, access_url
from dash import html
from test_reports import seed_sample

from api.main import create_app
from api.schemas import (
    AlertSummaryPublic,
    BillLinePublic,
    BillPreviewPublic,
    BillPublic,
    CyclePublic,
    FlagDetailPublic,
    FlagPublic,
    LiveMetricsPublic,
    LivePublic,
    ReadTotalsPublic,
    StreamBacklogPublic,
    UnmatchedPublic,
    UsageBucketPublic,
    UsageByClassPublic,
    UsageHistoryPublic,
    UsagePointPublic,
    UsageSeriesPublic,
)
from api.usage import USAGE_CSV_COLUMNS
from dashboard import auth, data, figures
from dashboard.app import create_dash_app
from dashboard.pages import account, exceptions, portal, queues
from dashboard.pages import live as live_page
from meterwatch.settings import Settings

__all__ = ["access_url"]

UTC_ = ZoneInfo("UTC")
CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


# --- pure builders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45.4, "45 s"),
        (60, "1 min"),
        (200, "3 min 20 s"),
        (7200, "2 h"),
        (7500, "2 h 5 min"),
        (86_400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert figures.format_duration(seconds) == text


def test_format_numbers_with_units() -> None:
    assert figures.format_count(1234567) == "1,234,567"
    assert figures.format_rate(None) == "measuring…"
    assert figures.format_rate(1234.56) == "1,234.6 reads/s"
    assert figures.format_lag(None) == "no reads yet"
    assert figures.format_lag(90) == "1 min 30 s"
    assert figures.format_lag(-120) == "0 s (newest read is 2 min in the future)"
    assert figures.format_time(T0, CHICAGO) == "2026-02-28 18:00 CST"
    assert figures.format_time(None, CHICAGO) == figures.NO_VALUE


def metrics(**changes: object) -> LiveMetricsPublic:
    base = LiveMetricsPublic(
        as_of=T0 + timedelta(hours=2),
        newest_read_ts=T0 + timedelta(hours=1),
        lag_s=3600.0,
        reads_per_s=12.34,
        window_s=60,
        totals=ReadTotalsPublic(stored=12345, rejected=2, unmatched=3, duplicates=4),
        sources=[],
        backlog=[
            StreamBacklogPublic(
                stream="s", length=10, entries_added=10, last_id="2-0",
                committed_position="1-0", backlog=7, exact=True,
            )
        ],
    )  # fmt: skip
    return base.model_copy(update=changes)


def usage(*points: tuple[int, str, str, float]) -> UsageByClassPublic:
    return UsageByClassPublic(
        since=T0 - timedelta(hours=23),
        until=T0 + timedelta(hours=1),
        hours=24,
        bucket="1 hour",
        points=[
            UsagePointPublic(
                bucket=T0 + timedelta(hours=h), customer_class=c, unit=u, usage=v, reads=4
            )
            for h, c, u, v in points
        ],
    )


def flag(kind: str = "leak", ended: bool = False) -> FlagPublic:
    return FlagPublic(
        flag_id=1,
        meter_id="M1",
        account_id="A1",
        kind=kind,
        started_at=T0,
        ended_at=T0 + timedelta(hours=1) if ended else None,
        detected_at=T0 + timedelta(minutes=45),
        created_at=T0 + timedelta(days=1),
        severity="high",
        score=0.876,
        status="open",
        evidence="never below 1 gal per 15 min",
    )


def test_live_numbers() -> None:
    live = LivePublic(metrics=metrics(), usage=usage(), latest_flags=[])
    numbers = figures.live_numbers(live, UTC_)
    assert numbers == figures.LiveNumbers(
        reads_per_s="12.3 reads/s",
        lag="1 h",
        backlog="7 reads",
        backlog_hint="in 1 stream(s)",
        stored="12,345",
        rejected="2",
        unmatched="3",
        duplicates="4",
        as_of="Updated 2026-03-01 02:00 UTC; newest read 2026-03-01 01:00 UTC.",
    )
    assert figures.live_numbers(None, UTC_) == figures.LiveNumbers()


def test_backlog_texts() -> None:
    (stream,) = metrics().backlog or []
    estimated = metrics(backlog=[stream.model_copy(update={"backlog": 5000, "exact": False})])
    assert figures.format_backlog(estimated) == (
        "about 5,000 reads",
        "estimated: too long to count exactly",
    )
    without = metrics(backlog=None, backlog_note="no Redis configured (REDIS_URL is not set)")
    assert figures.format_backlog(without) == (
        "not measured",
        "no Redis configured (REDIS_URL is not set)",
    )


def test_usage_figure_stacks_classes_in_local_time() -> None:
    figure = figures.usage_figure(
        usage(
            (0, "commercial", "gal", 20.0),
            (0, "residential", "gal", 4.0),
            (1, "residential", "gal", 1.0),
        ),
        CHICAGO,
    )
    traces = {trace.name: trace for trace in figure.data}
    assert set(traces) == {"commercial", "residential"}
    residential = traces["residential"]
    assert list(residential.y) == [4.0, 1.0]
    # 2026-03-01 00:00 UTC is 18:00 the day before in Chicago; plotly gets the wall clock
    assert list(residential.x) == [datetime(2026, 2, 28, 18), datetime(2026, 2, 28, 19)]
    assert {trace.stackgroup for trace in figure.data} == {"gal"}
    assert figure.layout.yaxis.title.text == "gal per hour"
    assert figure.layout.xaxis.title.text == "Time (America/Chicago)"
    assert figure.layout.title.text == "Usage by customer class, last 24 h of reads"


def test_usage_figure_keeps_water_and_electricity_apart() -> None:
    figure = figures.usage_figure(
        usage((0, "commercial", "gal", 20.0), (0, "commercial", "kWh", 5.0)), UTC_
    )
    assert [(t.name, t.yaxis, t.stackgroup) for t in figure.data] == [
        ("commercial (gal)", "y", "gal"),
        ("commercial (kWh)", "y2", "kWh"),
    ]
    assert figure.layout.yaxis2.title.text == "kWh per hour"


def test_usage_figure_without_data() -> None:
    for empty in (None, usage()):
        figure = figures.usage_figure(empty, UTC_)
        assert len(figure.data) == 0
        assert [a.text for a in figure.layout.annotations] == ["No reads yet"]
    figure = figures.usage_figure(None, UTC_, empty_text="No data: the API did not answer")
    assert figure.layout.annotations[0].text == "No data: the API did not answer"


def test_flags_table() -> None:
    head, body = figures.flags_table([flag("stopped_meter"), flag(ended=True)], UTC_)
    assert [th.children for th in head.children.children] == list(figures.FLAG_COLUMNS)
    rows = [[td.children for td in tr.children] for tr in body.children]
    assert rows[0] == [
        "2026-03-01 00:45 UTC",
        "M1",
        "A1",
        "stopped meter",
        "high",
        "0.88",
        "2026-03-01 00:00 UTC → ongoing",
        "open",
        "never below 1 gal per 15 min",
    ]
    assert rows[1][6] == "2026-03-01 00:00 UTC → 2026-03-01 01:00 UTC"
    _, empty = figures.flags_table([], UTC_)
    assert isinstance(empty.children, html.Tr)
    assert empty.children.children.children == "No flags yet."


def test_page_render_shows_the_banner_only_on_trouble() -> None:
    trouble = live_page.render(data.LiveResult(error="API unreachable at http://x: refused"), UTC_)
    banner, hidden, reads_per_s = trouble[:3]
    assert (banner, hidden, reads_per_s) == ("API unreachable at http://x: refused", False, "—")
    figure = trouble[live_page.OUTPUTS.index(live_page.Output("live-usage", "figure"))]
    assert figure.layout.annotations[0].text == "No data: the API did not answer"
    ok = live_page.render(
        data.LiveResult(live=LivePublic(metrics=metrics(), usage=usage(), latest_flags=[])), UTC_
    )
    assert ok[:3] == ("", True, "12.3 reads/s")
    assert len(ok) == len(live_page.OUTPUTS)


# --- the API client against a real API --------------------------------------------------------


@contextmanager
def running_api(settings: Settings) -> Iterator[tuple[str, uvicorn.Server]]:
    """The real API under uvicorn in a thread, on a free port; yields its URL and server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def seeded_url(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        seed_sample(conn)
    return database_url


def test_fetch_live_from_the_real_api(
    seeded_url: str, make_settings: Callable[..., Settings]
) -> None:
    with running_api(make_settings(database_url=seeded_url)) as (url, _):
        result = data.fetch_live(url + "/", timeout_s=10, flags=2)
    assert result.error is None and result.live is not None
    assert result.live.metrics.totals.stored == 10
    assert [f.kind for f in result.live.latest_flags] == ["meter_tamper", "leak"]


def test_fetch_live_when_the_api_is_unreachable() -> None:
    result = data.fetch_live("http://127.0.0.1:1", timeout_s=2)
    assert result.live is None
    assert result.error is not None
    assert result.error.startswith("API unreachable at http://127.0.0.1:1: ")


def test_fetch_live_when_the_api_has_no_database(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere",
        api_db_startup_retries=0,
        api_db_timeout_s=1,
    )
    with running_api(settings) as (url, _):
        result = data.fetch_live(url, timeout_s=10)
    assert result.error is not None
    assert result.error.startswith(
        f"API at {url} answered 503: database unavailable at 127.0.0.1:1/nowhere"
    )


def test_client_says_not_found_and_signed_out(
    seeded_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=seeded_url)
    with running_api(settings) as (url, _):
        anonymous = data.Client(url, 10).account("A1")
        staff = data.Client(url, 10, data.api_credential(settings))
        missing = staff.account("NOPE")
        usage = staff.account_usage("A1", "hour", date(2026, 3, 1), date(2026, 3, 2))
    assert anonymous.value is None and anonymous.status == 401
    assert anonymous.error is not None and anonymous.error.startswith("signed out (not signed in")
    assert missing.not_found and missing.error == (
        "not found: no account 'NOPE': check the number against the CIS export"
    )
    assert usage.value is not None
    (series,) = usage.value.series
    assert sum(b.usage or 0 for b in series.buckets) == 5.0  # M1: five reads of 1 gal


# --- money, usage and the pages' pure pieces ------------------------------------------------


def test_money_and_usage_texts() -> None:
    assert figures.format_money(Decimal("1234.5"), "USD") == "$1,234.50"
    assert figures.format_money(-3, "EUR") == "-€3.00"
    assert figures.format_money(Decimal("7"), "CHF") == "7.00 CHF"
    assert figures.format_money(None, "USD") == figures.NO_VALUE
    assert figures.format_unit_price(Decimal("0.004000"), "USD", "gal") == "$0.004 per gal"
    assert figures.format_unit_price(Decimal("2"), "NOK", "kWh") == "2.00 NOK per kWh"
    assert figures.format_usage(1234.56, "gal") == "1,235 gal"
    assert figures.format_usage(12.34, "kWh") == "12.3 kWh"
    assert figures.format_usage(None, "gal") == "no reads"


def history(
    resolution: str, values: list[float | None], last_year: bool = True
) -> UsageHistoryPublic:
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1)}[resolution]
    start = datetime(2026, 3, 1, tzinfo=CHICAGO)
    buckets = [
        UsageBucketPublic(
            start=start + i * step,
            usage=v,
            reads=0 if v is None else 4,
            estimated_reads=0,
            last_year_usage=(v or 0) / 2 if last_year else None,
        )
        for i, v in enumerate(values)
    ]
    return UsageHistoryPublic(
        account_id="A1",
        resolution=resolution,  # type: ignore[arg-type]
        timezone="America/Chicago",
        start=date(2026, 3, 1),
        end=date(2026, 3, 1) + len(values) * step,
        series=[UsageSeriesPublic(unit="gal", buckets=buckets)],
    )


def test_history_figure_bars_last_year_and_marks() -> None:
    found = history("day", [10.0, None, 30.0])
    leak = figures.Span("leak (open)", datetime(2026, 3, 2, 12, tzinfo=CHICAGO), None)
    old = figures.Span(
        "gap (resolved)", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    )
    alert = figures.Span(
        "Alert: leak (sent)", datetime(2026, 3, 2, 18, tzinfo=CHICAGO), None, point=True
    )
    figure = figures.history_figure(
        found, compare=True, marks=[leak, old, alert], now=datetime(2026, 3, 10, tzinfo=CHICAGO)
    )
    bars, line, alerts = figure.data
    assert (bars.type, list(bars.y)) == ("bar", [10.0, None, 30.0])
    assert list(bars.x) == [datetime(2026, 3, 1), datetime(2026, 3, 2), datetime(2026, 3, 3)]
    assert (line.name, list(line.y)) == ("Same time last year", [5.0, 0.0, 15.0])
    assert list(alerts.text) == ["Alert: leak (sent)"]
    (shape,) = figure.layout.shapes  # the old gap lies outside the window
    assert shape.x0 == datetime(2026, 3, 2, 12)
    assert shape.x1 == datetime(2026, 3, 4)  # an open leak is clipped to the window's end
    assert figure.layout.yaxis.title.text == "gal per day"
    assert figure.layout.title.text == "Use per day (gal)"
    assert len(figures.history_figure(found, compare=False).data) == 1


def test_history_figure_without_reads() -> None:
    for empty in (None, history("hour", [None, None])):
        figure = figures.history_figure(empty, compare=True, empty_text="nothing yet")
        assert len(figure.data) == 0
        assert figure.layout.annotations[0].text == "nothing yet"


def test_evidence_window_hourly_for_short_flags_daily_for_long_ones() -> None:
    now = datetime(2026, 3, 20, 12, tzinfo=UTC)
    short = flag(ended=True)  # 2026-03-01 00:00-01:00 UTC
    assert figures.evidence_window(short, CHICAGO, now) == (
        "hour",
        date(2026, 2, 26),
        date(2026, 3, 3),
    )
    long = flag().model_copy(update={"started_at": datetime(2025, 6, 1, tzinfo=UTC)})
    assert figures.evidence_window(long, CHICAGO, now) == (
        "day",
        date(2025, 5, 29),
        date(2026, 3, 21),
    )


def flag_detail(**changes: object) -> FlagDetailPublic:
    base = FlagDetailPublic(
        **flag().model_dump(),
        details={"leak_rate": 2.5, "volume_lost": 1234.5},
        expected_use=False,
        status_by=None,
        status_reason=None,
        status_at=None,
    )
    return base.model_copy(update=changes)


def test_evidence_items_read_plainly() -> None:
    items = dict(figures.evidence_items(flag_detail(), CHICAGO))
    assert items["What"] == "leak"
    assert items["Until"] == "still going on"
    assert items["leak rate"] == "2.5" and items["volume lost"] == "1,234.5"
    reviewed = flag_detail(status="confirmed", status_by="olga", status_reason="seen on site")
    assert dict(figures.evidence_items(reviewed, CHICAGO))["Review"] == (
        "confirmed by olga: seen on site"
    )
    (row,) = figures.queue_rows([flag_detail()], UTC_)
    assert row[:6] == ["2026-03-01 00:45 UTC", "A1", "M1", "leak", "high", "open"]


def test_bill_lines_show_the_tier_arithmetic() -> None:
    bill = BillPublic(
        rate_plan="RES", currency="USD", unit="gal", usage=Decimal("6000"), period_days=30,
        proration=Decimal("1"), total=Decimal("38.00"), notes=[],
        lines=[
            BillLinePublic(description="Fixed charge", quantity=Decimal("1"), unit="period",
                           price=Decimal("12.00"), amount=Decimal("12.00")),
            BillLinePublic(description="Tier 1: 0 to 5,000 gal", quantity=Decimal("5000"),
                           unit="gal", price=Decimal("0.004000"), amount=Decimal("20.00")),
            BillLinePublic(description="Tier 2: above 5,000 gal", quantity=Decimal("1000"),
                           unit="gal", price=Decimal("0.006000"), amount=Decimal("6.00")),
        ],
    )  # fmt: skip
    preview = BillPreviewPublic(
        period_start=date(2026, 3, 1), period_end=date(2026, 3, 31), starts_at=T0, ends_at=T0,
        rate_plan="RES", usage=[], bill=bill, not_priced=None, unresolved_flags=0, notes=[],
    )  # fmt: skip
    assert figures.bill_lines(preview) == [
        ["Fixed charge", "1 period", "$12.00", "$12.00"],
        ["Tier 1: 0 to 5,000 gal", "5,000 gal", "$0.004 per gal", "$20.00"],
        ["Tier 2: above 5,000 gal", "1,000 gal", "$0.006 per gal", "$6.00"],
        ["Total", "6,000 gal", "", "$38.00"],
    ]
    assert figures.bill_lines(preview.model_copy(update={"bill": None})) == []


def test_alerts_table() -> None:
    alert = AlertSummaryPublic(
        alert_id=1, account_id="A1", rule="projected_bill", period_start=date(2026, 3, 1),
        detected_at=T0, created_at=T0, status="sent", channels=["email", "sms"],
        message="Your bill is heading for $80", attempts=2,
    )  # fmt: skip
    _head, body = figures.alerts_table([alert], UTC_)
    assert [td.children for td in body.children[0].children] == [
        "2026-03-01 00:00 UTC", "A1", "projected bill", "sent", "email, sms", "2",
        "Your bill is heading for $80",
    ]  # fmt: skip
    _, empty = figures.alerts_table([], UTC_)
    assert empty.children.children.children == "No alerts yet."


def test_alert_settings_form_to_changes() -> None:
    changes = portal.settings_changes("150", "", "60.5", ["leak", "sms"], "22:00", "7:00")
    assert changes == {
        "daily_threshold": 150.0,
        "period_threshold": None,
        "projected_bill_threshold": "60.50",
        "leak_alerts": True,
        "email_opt_in": False,
        "sms_opt_in": True,
        "quiet_start": "22:00",
        "quiet_end": "07:00",
    }
    for args, message in [
        (("lots", "", "", [], "", ""), "The daily alert must be a number"),
        (("-1", "", "", [], "", ""), "The daily alert must be more than 0"),
        (("", "", "ten", [], "", ""), "The bill alert must be an amount"),
        (("", "", "", [], "22:00", ""), "Quiet hours need a start and an end"),
        (("", "", "", [], "25:00", "07:00"), "Quiet hours start must be a time like 22:00"),
    ]:
        with pytest.raises(portal.FormProblem, match=message):
            portal.settings_changes(*args)


def test_small_page_helpers() -> None:
    cycle = CyclePublic(
        cycle_day=15, period_start=date(2026, 2, 15), period_end=date(2026, 3, 15), accounts=3,
        blocking_flags=2, closed_at=None, closed_by=None,
    )  # fmt: skip
    assert exceptions.parse_cycle(exceptions.cycle_value(cycle)) == (15, date(2026, 2, 15))
    assert exceptions.parse_cycle("all") == (None, None)
    assert exceptions.cycle_label(cycle) == "Cycle day 15: 2026-02-15 to 2026-03-15 (2 unresolved)"
    newest = datetime(2026, 3, 1, 23, tzinfo=CHICAGO)
    today = date(2026, 12, 1)
    assert account.usage_window("hour", newest, today) == (date(2026, 2, 23), date(2026, 3, 2))
    assert account.usage_window("month", newest, today) == (date(2024, 3, 1), date(2026, 3, 2))
    assert account.usage_window("day", None, today)[1] == date(2026, 12, 2)
    reads = [
        UnmatchedPublic(
            meter_id=m, ts=T0 + timedelta(hours=h), value=1.0, reported_unit="gal",
            register_value=None, quality=None, reason=r, detail="not in meters.csv",
            received_at=T0, resolved_at=None, resolved_by=None, resolution=None, stored=False,
        )
        for m, h, r in [("X2", 1, "unknown_meter"), ("X1", 3, "retired_meter"),
                        ("X1", 2, "unknown_meter")]
    ]  # fmt: skip
    assert [
        (q.meter_id, q.reads, q.reasons, q.first.hour, q.last.hour) for q in queues.by_meter(reads)
    ] == [
        ("X1", 2, "retired meter, unknown meter", 2, 3),
        ("X2", 1, "unknown meter", 1, 1),
    ]


@pytest.mark.parametrize(
    ("target", "role", "where"),
    [
        ("/exceptions", "operator", "/exceptions"),
        (None, "operator", "/"),
        ("//evil.example/x", "operator", "/"),
        ("https://evil.example/", "billing", "/"),
        ("/\\evil.example", "admin", "/"),
        ("/exceptions", "customer", "/portal"),
        ("/portal?account=A1", "customer", "/portal?account=A1"),
    ],
)
def test_after_sign_in_only_to_this_site(target: str | None, role: str, where: str) -> None:
    assert auth._safe_next(target, role) == where


# --- signing in, out and downloading, against the real API (no browser) -----------------------


@pytest.fixture
def signed_stack(
    access_url: tuple[str, dict[str, int]], make_settings: Callable[..., Settings]
) -> Iterator[tuple[Settings, Any]]:
    url, _ = access_url
    settings = make_settings(database_url=url, utility_tz="America/Chicago")
    with running_api(settings) as (api_url, _server):
        app = create_dash_app(settings.model_copy(update={"api_url": api_url}))
        yield settings, app.server.test_client()


def test_sign_in_sign_out_and_roles(signed_stack: tuple[Settings, Any]) -> None:
    _, browser = signed_stack
    page = browser.get("/login?next=/exceptions")
    assert page.status_code == 200 and b'name="next" value="/exceptions"' in page.data
    wrong = browser.post("/login", data={"username": "olga.operator", "password": "nope"})
    assert wrong.status_code == 401 and b"Wrong username or password." in wrong.data
    staff = browser.post(
        "/login",
        data={"username": "Olga.Operator", "password": PASSWORD, "next": "/exceptions"},
    )
    assert (staff.status_code, staff.headers["Location"]) == (302, "/exceptions")
    cookie = staff.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with browser.session_transaction() as session:
        assert session["user"]["role"] == "operator"
        assert session["user"]["username"] == "olga.operator"
    assert browser.get("/logout").headers["Location"] == "/login"
    with browser.session_transaction() as session:
        assert "user" not in session
    headend = browser.post("/login", data={"username": "head.end", "password": PASSWORD})
    assert headend.status_code == 403


def test_downloads_pass_through_with_the_customers_token(
    signed_stack: tuple[Settings, Any],
) -> None:
    _, browser = signed_stack
    assert browser.get("/download/A1/usage.csv").headers["Location"].startswith("/login")
    signed = browser.post("/login", data={"username": "ada@example.com", "password": PASSWORD})
    assert signed.headers["Location"] == "/portal"
    csv_file = browser.get("/download/A1/usage.csv?resolution=day&start=2026-03-01&end=2026-03-02")
    assert csv_file.status_code == 200, csv_file.data
    assert csv_file.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in csv_file.headers["Content-Disposition"]
    assert csv_file.data.decode().splitlines()[0] == ",".join(USAGE_CSV_COLUMNS)
    xml = browser.get("/download/A1/green-button?start=2026-03-01&end=2026-03-02")
    assert xml.status_code == 200 and b"<feed" in xml.data
    foreign = browser.get("/download/A2/usage.csv")
    assert foreign.status_code == 404 and b"you have no account 'A2'" in foreign.data
    assert browser.get("/download/A1/secrets").status_code == 404


def test_live_page_comes_with_its_first_numbers() -> None:
    ok = live_page.render(
        data.LiveResult(live=LivePublic(metrics=metrics(), usage=usage(), latest_flags=[])), UTC_
    )
    page = live_page.layout(500, UTC_, ok)
    found = {}
    stack = [page]
    while stack:
        node = stack.pop()
        if getattr(node, "id", None):
            found[node.id] = node
        children = getattr(node, "children", None)
        stack.extend(children if isinstance(children, list) else [children] if children else [])
    assert found["live-stored"].children == "12,345"
    assert found["live-reads-per-s"].children == "12.3 reads/s"
    assert found["live-banner"].hidden is True
    empty = live_page.layout(500, UTC_)
    assert "—" in str(empty)


def test_portal_hours_are_a_chosen_week() -> None:
    assert portal.hour_window("hour", "2026-03-07") == (date(2026, 3, 1), date(2026, 3, 8))
    assert portal.hour_window("hour", "2026-03-07T00:00:00") == (date(2026, 3, 1), date(2026, 3, 8))
    assert portal.hour_window("day", "2026-03-07") == (None, None)
