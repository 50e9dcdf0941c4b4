"""The dashboard: pure figure and text builders, the API client against a real API, and one
real-browser smoke test of the live page (marked `browser`).

Run the browser test with:  pytest tests/test_dashboard.py -m browser --webdriver Chrome --headless
It needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium chromium-driver).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
import uvicorn
from dash import html
from dash.testing.application_runners import ThreadedRunner
from dash.testing.composite import DashComposite
from selenium.webdriver.chrome.options import Options as ChromeOptions
from test_reports import seed_sample

from api.main import create_app
from api.schemas import (
    FlagPublic,
    LiveMetricsPublic,
    LivePublic,
    ReadTotalsPublic,
    StreamBacklogPublic,
    UsageByClassPublic,
    UsagePointPublic,
)
from dashboard import data, figures
from dashboard.app import create_dash_app
from dashboard.pages import live as live_page
from meterwatch.settings import Settings

UTC_ = ZoneInfo("UTC")
CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


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


# --- one real browser -------------------------------------------------------------------------


def chromium_options(headless: bool) -> ChromeOptions:
    options = ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # quiet and self-contained: no sandbox (runs as root in CI), no GPU, no calls home
    for flag_ in (
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag_)
    if headless:
        options.add_argument("--headless=new")
    return options


@pytest.fixture
def dash_duo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DashComposite]:
    """dash[testing]'s dash_duo, driving the system's Chromium (/usr/bin/chromium) rather than
    a Chrome of its own; headless when asked (--headless) or when there is no display."""
    headless = bool(request.config.getoption("headless")) or not os.environ.get("DISPLAY")
    with (
        ThreadedRunner() as server,
        DashComposite(
            server=server,
            browser=request.config.getoption("webdriver"),
            headless=False,  # the option is in chromium_options, in its current spelling
            options=[chromium_options(headless)],
            download_path=str(tmp_path),
            percy_run=False,
        ) as duo,
    ):
        yield duo


@pytest.mark.browser
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium "
    "chromium-driver)",
)
def test_live_page_in_a_real_browser(
    dash_duo: DashComposite, seeded_url: str, make_settings: Callable[..., Settings]
) -> None:
    with psycopg.connect(seeded_url) as conn:
        conn.execute("UPDATE pipeline_status SET updated_at = now()")
    with running_api(make_settings(database_url=seeded_url)) as (url, server):
        settings = make_settings(database_url=seeded_url, api_url=url, dashboard_refresh_ms=500)
        dash_duo.start_server(create_dash_app(settings))
        dash_duo.wait_for_text_to_equal("#live-stored", "10", timeout=20)
        assert dash_duo.find_element("#live-rejected").text == "2"
        assert dash_duo.find_element("#live-unmatched").text == "3"
        assert dash_duo.find_element("#live-duplicates").text == "3"
        # the first refresh is the throughput sampler's first sample; the next one has a rate
        dash_duo.wait_for_text_to_equal("#live-reads-per-s", "0.0 reads/s", timeout=10)
        assert dash_duo.find_element("#live-lag").text not in ("", figures.NO_VALUE)
        assert dash_duo.find_element("#live-backlog").text == "not measured"
        dash_duo.wait_for_contains_text("#live-flags", "meter tamper", timeout=10)
        dash_duo.wait_for_element("#live-usage .js-plotly-plot .scatterlayer .trace")
        traces = dash_duo.driver.execute_script(
            "return document.querySelector('#live-usage .js-plotly-plot').data.map(t => t.name)"
        )
        assert sorted(traces) == ["commercial (gal)", "commercial (kWh)", "residential (gal)"]
        assert dash_duo.find_element("#live-banner").get_attribute("hidden") is not None
        assert dash_duo.get_logs() == [], "the browser console has errors"

        server.should_exit = True  # the API goes away: the page says so and keeps running
        dash_duo.wait_for_contains_text("#live-banner", f"API unreachable at {url}", timeout=20)
        assert dash_duo.find_element("#live-stored").text == figures.NO_VALUE
    assert dash_duo.get_logs() == [], "the browser console has errors"
