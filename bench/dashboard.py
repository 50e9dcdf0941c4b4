"""`meterwatch bench dashboard`: the live page's first render and refresh, measured in headless
Chromium while METERS meters stream reads through the real pipeline.

The set-up: a throwaway database on the server of DATABASE_URL (`meterwatch_bench_dashboard`,
dropped afterwards) with METERS accounts, meters and service points and a day of 15-minute
history; a Redis stream (a fresh key on REDIS_URL, deleted afterwards) that a publisher thread
feeds with one read per meter every TICK_S seconds (each tick is the next 15-minute interval);
`meterwatch run` consuming it in its own process (the dataflow, committing to the database);
the API under uvicorn and the dashboard under werkzeug in this process.

Measured in the browser, signed in as an operator:

- first render: from the navigation's start (`performance.timeOrigin`) until the throughput and
  reads-stored cards show numbers, and the Navigation Timing `domContentLoaded` and `load`;
- refresh: every answer to the live page's 2-second refresh callback (window.fetch wrapped),
  for WATCH_S seconds: the time between two refreshes landing, and each one's round trip.

Printed next to the baseline of the same run: GET /v1/live straight from the API.
"""

from __future__ import annotations

import http.client
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import psycopg
import redis
import typer

from bench.cli import bench_app

BENCH_DATABASE = "meterwatch_bench_dashboard"
PASSWORD = "bench password 1"
TARGET_FIRST_RENDER_MS = 2000.0

FETCH_PROBE = """
window.__mwRefreshes = [];
const original = window.fetch;
window.fetch = function (url, options) {
  const started = performance.now();
  const isLive = options && typeof options.body === 'string'
      && options.body.includes('live-interval');
  return original.apply(this, arguments).then(response => {
    if (isLive) {
      response.clone().text().then(() => window.__mwRefreshes.push(
          [started, performance.now()]));
    }
    return response;
  });
};
"""


@dataclass(frozen=True)
class Figures:
    baseline_ms: list[float]
    first_numbers_ms: float
    chart_ms: float
    dom_content_loaded_ms: float
    load_ms: float
    page_callback_ms: float
    gaps_ms: list[float]
    round_trips_ms: list[float]
    reads_per_s: str
    published: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _databases(database_url: str) -> tuple[str, str]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    admin = psycopg.conninfo.make_conninfo(**{**info, "dbname": "postgres"})  # type: ignore[arg-type]
    bench = psycopg.conninfo.make_conninfo(**{**info, "dbname": BENCH_DATABASE})  # type: ignore[arg-type]
    return admin, bench


def _seed(url: str, meters: int, start: datetime) -> None:
    """METERS accounts with one meter each, a day of 15-minute reads before `start`, and an
    operator to sign in as."""
    from api.commands import create_user

    classes = "(ARRAY['residential','residential','residential','commercial','irrigation'])"
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO customers (customer_id, name) "
            "SELECT 'C' || n, 'Customer ' || n FROM generate_series(1, %s) AS n",
            (meters,),
        )
        conn.execute(
            f"""INSERT INTO accounts (account_id, customer_id, status, customer_class, cycle_day)
                SELECT 'A' || n, 'C' || n, 'active', {classes}[1 + n %% 5], 1 + n %% 28
                  FROM generate_series(1, %s) AS n""",
            (meters,),
        )
        conn.execute(
            "INSERT INTO service_points SELECT 'S' || n FROM generate_series(1, %s) AS n",
            (meters,),
        )
        conn.execute(
            "INSERT INTO meters SELECT 'M' || n FROM generate_series(1, %s) AS n", (meters,)
        )
        conn.execute(
            """INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from)
               SELECT 'M' || n, 'S' || n, 'A' || n, '2020-01-01'
                 FROM generate_series(1, %s) AS n""",
            (meters,),
        )
        conn.execute(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id, service_point_id)
               SELECT 'M' || n, t, round((random() * 3)::numeric, 2), 'gal', 'A' || n, 'S' || n
                 FROM generate_series(1, %s) AS n,
                      generate_series(%s::timestamptz - interval '1 day', %s, interval '15 min')
                        AS t""",
            (meters, start, start - timedelta(minutes=15)),
        )
        create_user(
            conn, "bench.operator", "operator", customer_id=None, password=PASSWORD, actor="bench"
        )


class Publisher(threading.Thread):
    """Publishes one read per meter every `tick_s` seconds (the next 15-minute interval each
    time), as a head-end adapter would."""

    def __init__(
        self, client: redis.Redis, keys: list[str], meters: int, start: datetime, tick_s: float
    ) -> None:
        super().__init__(daemon=True)
        self.client, self.keys, self.meters, self.tick_s = client, keys, meters, tick_s
        self.next_ts = start
        self.published = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from stream.publish import publish

        while not self.stop.is_set():
            began = time.monotonic()
            ts = self.next_ts.isoformat()
            rows = (
                {"meter_id": f"M{n}", "ts": ts, "value": f"{(n % 7) * 0.3:.2f}"}
                for n in range(1, self.meters + 1)
            )
            self.published += publish(self.client, self.keys, rows)
            self.next_ts += timedelta(minutes=15)
            self.stop.wait(max(0.0, self.tick_s - (time.monotonic() - began)))


def _time_live(api_url: str, token: str, samples: int) -> list[float]:
    parts = urlsplit(api_url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    timings = []
    for _ in range(samples):
        began = time.perf_counter()
        conn.request(
            "GET", "/v1/live?hours=24&flags=20", headers={"Authorization": f"Bearer {token}"}
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        timings.append((time.perf_counter() - began) * 1000)
        time.sleep(0.2)
    conn.close()
    return timings


def _measure_browser(
    dashboard: str, watch_s: float
) -> tuple[float, float, float, float, float, list[float], list[float], str]:
    from selenium.webdriver.support.wait import WebDriverWait

    from dashboard import harness

    driver = harness.chromium()
    try:
        harness.sign_in(driver, dashboard, "bench.operator", PASSWORD)
        # away, and a pause for the server to finish what that page asked: then a clean load
        # (with the browser's cache warm, as for someone who opens the page every morning)
        driver.get("about:blank")
        time.sleep(3)
        driver.get(dashboard + "/")
        first = WebDriverWait(driver, 60, poll_frequency=0.01).until(
            lambda d: d.execute_script(
                "const s = document.querySelector('#live-stored');"
                "const r = document.querySelector('#live-reads-per-s');"
                "return s && /[0-9]/.test(s.textContent) && r && /[0-9]|measuring/.test("
                "r.textContent) ? performance.now() : null"
            )
        )
        chart = WebDriverWait(driver, 60, poll_frequency=0.01).until(
            lambda d: d.execute_script(
                "return document.querySelector('#live-usage .trace') ? performance.now() : null"
            )
        )
        timing = driver.execute_script(
            "const n = performance.getEntriesByType('navigation')[0];"
            "const c = performance.getEntriesByType('resource')"
            "  .filter(e => e.name.includes('_dash-update-component'))[0];"
            "return [n.domContentLoadedEventEnd, n.loadEventEnd,"
            "        c ? c.responseEnd - c.startTime : null]"
        )
        driver.execute_script(FETCH_PROBE)
        time.sleep(watch_s)
        landed = driver.execute_script("return window.__mwRefreshes")
        rate = driver.execute_script(
            "return document.querySelector('#live-reads-per-s').textContent"
        )
        errors = harness.console_errors(driver)
        if errors:
            raise RuntimeError(f"the browser console has errors: {errors}")
    finally:
        driver.quit()
    ends = [end for _, end in landed]
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    trips = [end - began for began, end in landed]
    return (float(first), float(chart), float(timing[0]), float(timing[1]),
            float(timing[2] or 0.0), gaps, trips, str(rate))  # fmt: skip


def run_bench(meters: int, tick_s: float, watch_s: float) -> Figures:
    from api.security import service_token
    from dashboard import harness
    from meterwatch.db import migrate
    from meterwatch.settings import get_settings

    base = get_settings()
    admin, url = _databases(base.require_database_url())
    redis_url = base.require_redis_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    stream_key = f"meterwatch:bench:{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    start = (datetime.now(UTC) - timedelta(hours=12)).replace(minute=0, second=0, microsecond=0)
    flow: subprocess.Popen[bytes] | None = None
    publisher: Publisher | None = None
    with tempfile.TemporaryDirectory() as data_dir:
        try:
            migrate(url)
            _seed(url, meters, start)
            settings = base.model_copy(
                update={"database_url": url, "reads_stream": stream_key, "data_dir": Path(data_dir)}
            )
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "READS_STREAM": stream_key,
                "DATA_DIR": data_dir,
            }
            command = [str(Path(sys.executable).with_name("meterwatch")), "run"]
            flow = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            publisher = Publisher(client, settings.stream_keys, meters, start, tick_s)
            publisher.start()
            with (
                harness.running_api(settings) as api,
                harness.running_dashboard(settings, api) as dashboard,
            ):
                time.sleep(10)  # the flow starts and the throughput sampler has a window
                baseline = _time_live(api, service_token(settings, "bench"), 20)
                measured = _measure_browser(dashboard, watch_s)
            return Figures(baseline, *measured, published=publisher.published)
        finally:
            if publisher is not None:
                publisher.stop.set()
                publisher.join(timeout=30)
            if flow is not None:
                flow.terminate()
                flow.wait(timeout=30)
            for key in client.scan_iter(f"{stream_key}*"):
                client.delete(key)
            client.close()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')


def report(figures: Figures, meters: int, tick_s: float, refresh_ms: int) -> str:
    base_p50 = statistics.median(figures.baseline_ms)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"machine: {os.cpu_count()} cores, load average {load} at the end",
        f"live page with {meters:,} meters streaming (one read per meter every {tick_s:g} s, "
        f"{meters / tick_s:,.0f} reads/s published; the page showed {figures.reads_per_s})",
        f"  baseline GET /v1/live         p50 {base_p50:7.1f} ms   p95 "
        f"{_percentile(figures.baseline_ms, 0.95):7.1f} ms",
        f"  first render: numbers shown   {figures.first_numbers_ms:7.1f} ms after navigation "
        f"start   (target < {TARGET_FIRST_RENDER_MS:,.0f} ms: "
        f"{'met' if figures.first_numbers_ms < TARGET_FIRST_RENDER_MS else 'NOT met'})",
        f"  the 24-hour chart shown       {figures.chart_ms:7.1f} ms after navigation start",
        f"  Navigation Timing             domContentLoaded {figures.dom_content_loaded_ms:.0f} ms, "
        f"load {figures.load_ms:.0f} ms; the page's content (its first callback, which asks "
        f"the API) {figures.page_callback_ms:.0f} ms",
    ]
    if figures.gaps_ms:
        gap_p50, trip_p50 = (
            statistics.median(figures.gaps_ms),
            statistics.median(figures.round_trips_ms),
        )
        gap_p95, trip_p95 = (
            _percentile(figures.gaps_ms, 0.95),
            _percentile(figures.round_trips_ms, 0.95),
        )
        verdict = "keeps up" if gap_p50 < refresh_ms * 1.25 else "FALLS BEHIND"
        lines += [
            f"  refresh every {refresh_ms} ms: {len(figures.round_trips_ms)} refreshes; gap p50 "
            f"{gap_p50:.0f} ms, p95 {gap_p95:.0f} ms, max {max(figures.gaps_ms):.0f} ms "
            f"({verdict})",
            f"  refresh round trip            p50 {trip_p50:7.1f} ms   p95 {trip_p95:7.1f} ms  "
            f"({trip_p50 / base_p50:.1f}x the baseline)",
        ]
    else:
        lines.append("  refresh: no refresh landed while watching")
    return "\n".join(lines)


@bench_app.command("dashboard")
def bench_dashboard(
    meters: Annotated[int, typer.Option(min=1, help="Meters streaming.")] = 2000,
    tick_s: Annotated[
        float, typer.Option(min=0.1, help="Seconds between two reads of a meter.")
    ] = 2.0,
    watch_s: Annotated[float, typer.Option(min=2, help="Seconds of refreshes to watch.")] = 30.0,
) -> None:
    """The live page's first render and refresh in Chromium with METERS meters streaming."""
    from meterwatch.settings import get_settings

    figures = run_bench(meters, tick_s, watch_s)
    typer.echo(report(figures, meters, tick_s, get_settings().dashboard_refresh_ms))
