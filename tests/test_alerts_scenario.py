"""A simulated utility (the `simulator` package) with daily thresholds, run through the real
dataflow with two workers: every daily alert the file calls for is recorded exactly once, and
no other. The expectation is computed here from the files alone: each account's distinct
(meter_id, ts) values per local day, matched to accounts by meters.csv's assignments."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from alerts_fixtures import alerts_of, run_reads

from meterwatch.cis import import_cis
from meterwatch.settings import Settings

simulator = pytest.importorskip("simulator")

TZ = "America/Chicago"


def _lower_thresholds(accounts_csv: Path) -> None:
    """Bring the bulk-enrolled daily thresholds (a few times a typical day) down to about a
    typical day, so that many days cross and many do not."""
    with accounts_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row["daily_alert"]:
            row["daily_alert"] = str(round(float(row["daily_alert"]) / 2.6))
    with accounts_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _expected_daily_alerts(database_url: str, reads_csv: Path) -> set[tuple[str, date]]:
    tz = ZoneInfo(TZ)
    with psycopg.connect(database_url) as conn:
        thresholds = dict(
            conn.execute(
                "SELECT account_id, daily_threshold FROM alert_settings "
                "WHERE daily_threshold IS NOT NULL"
            ).fetchall()
        )
        assignments: dict[str, list[tuple[datetime, datetime | None, str]]] = defaultdict(list)
        for meter, start, end, account in conn.execute(
            "SELECT meter_id, valid_from, valid_to, account_id FROM meter_assignments"
        ):
            assignments[meter].append((start, end, account))
    seen: set[tuple[str, datetime]] = set()
    totals: dict[tuple[str, date], float] = defaultdict(float)
    with reads_csv.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                ts = datetime.fromisoformat(row["ts"].strip().replace("Z", "+00:00"))
                value = float(row["value"])
            except (KeyError, ValueError):
                continue  # a malformed row: rejected by the dataflow
            if ts.tzinfo is None or (row.get("kind") or "interval") != "interval":
                continue
            key = (row["meter_id"].strip(), ts)
            if key in seen:
                continue  # a duplicate: the first delivery counts
            seen.add(key)
            epoch = int(ts.timestamp())
            covering = {
                account
                for start, end, account in assignments.get(key[0], [])
                if start.timestamp() <= epoch and (end is None or epoch < end.timestamp())
            }
            if len(covering) != 1:
                continue  # unknown, retired or ambiguous: the exception queue, no bill
            day = (ts - timedelta(microseconds=1)).astimezone(tz).date()
            totals[(covering.pop(), day)] += value
    return {
        (account, day)
        for (account, day), total in totals.items()
        if account in thresholds and total >= thresholds[account]
    }


@pytest.mark.slow
def test_every_expected_daily_alert_exactly_once(
    database_url: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    config = simulator.SimulationConfig(
        meters=60,
        days=10,
        interval_minutes=60,
        seed=23,
        start=datetime(2026, 1, 4, 6, tzinfo=UTC),
        timezone=TZ,
        register_fraction=0.0,  # every value an interval delta in gallons: summable as is
        ft3_fraction=0.0,
        malformed_fraction=0.0,
    )
    paths = simulator.write_scenario(tmp_path / "scenario", config)
    _lower_thresholds(paths["accounts"])
    report = import_cis(database_url, paths["accounts"], paths["meters"], actor="test")
    assert report.ok, report.errors
    settings = make_settings(database_url=database_url, utility_tz=TZ)
    run_reads(settings, paths["reads"], workers=2)

    expected = _expected_daily_alerts(database_url, paths["reads"])
    daily = [a for a in alerts_of(database_url) if a["rule"] == "daily"]
    recorded = [(a["account_id"], a["period_start"]) for a in daily]
    assert len(expected) >= 20, "the scenario should cross thresholds on many days"
    assert len(recorded) == len(set(recorded))  # each once
    assert set(recorded) == expected
    # And they were noticed at the right read: the crossing is within the day.
    tz = ZoneInfo(TZ)
    for alert in daily:
        assert (alert["detected_at"] - timedelta(microseconds=1)).astimezone(tz).date() == alert[
            "period_start"
        ]

    # The same file again (a head-end replaying everything): nothing new.
    run_reads(settings, paths["reads"])
    assert len([a for a in alerts_of(database_url) if a["rule"] == "daily"]) == len(recorded)
