"""Helpers for tests that run the whole pipeline: a simulated scenario, the CIS import, and
the dataflow over a file (in process) or over the Redis Stream (as a real `meterwatch run`
subprocess that can be stopped or killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from meterwatch.cis import import_cis
from meterwatch.settings import Settings
from simulator import SimulationConfig, write_scenario
from stream.runner import execute, file_flow

# The reject reason classes of the simulator's answer key, and the words of our reasons.
REASON_WORDS = {
    "unparseable_timestamp": "is not ISO 8601",
    "timestamp_without_offset": "has no UTC offset",
    "non_numeric_value": "is not a number",
    "non_finite_value": "not a finite number",
    "absurd_value": "implausible",
    "unknown_unit": "unknown unit",
    "missing_meter_id": "meter_id is missing",
    "missing_value": "value is missing",
    "unknown_kind": "unknown kind",
}


@dataclass
class Scenario:
    directory: Path
    key: dict[str, Any]

    @property
    def reads(self) -> Path:
        return self.directory / "reads.csv"

    @property
    def accounts(self) -> Path:
        return self.directory / "accounts.csv"

    @property
    def meters(self) -> Path:
        return self.directory / "meters.csv"

    @property
    def counts(self) -> dict[str, Any]:
        return self.key["counts"]

    def labels(self, kind: str, **details: Any) -> list[dict[str, Any]]:
        return [
            label
            for label in self.key["labels"]["anomalies"]
            if label["kind"] == kind
            and all(label["details"].get(k) == v for k, v in details.items())
        ]


def make_scenario(directory: Path, **config: Any) -> Scenario:
    paths = write_scenario(directory, SimulationConfig(**config))
    return Scenario(directory, json.loads(paths["answer_key"].read_text()))


def load_accounts(database_url: str, scenario: Scenario) -> None:
    report = import_cis(database_url, scenario.accounts, scenario.meters, actor="test")
    assert report.ok, report


def run_file(database_url: str, path: Path) -> None:
    execute(file_flow(path, Settings(database_url=database_url)), Settings())


def read_counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM reads), (SELECT count(*) FROM rejected_reads),
                      (SELECT count(*) FROM unmatched_reads),
                      (SELECT count(*) FROM duplicate_reads)"""
        ).fetchone()
    assert row is not None
    return dict(zip(("stored", "rejected", "unmatched", "duplicates"), row, strict=True))


def committed_deliveries(database_url: str, source: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT deliveries FROM pipeline_status WHERE source = %s", (source,)
        ).fetchone()
    return row[0] if row else 0


class StreamFlow:
    """`meterwatch run` over the Redis Stream, as its own process."""

    def __init__(
        self, database_url: str, redis_url: str, stream_key: str, data_dir: Path, **settings: Any
    ) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "READS_STREAM": stream_key,
            "DATA_DIR": str(data_dir),
            "SNAPSHOT_INTERVAL_S": "1",
            **{name.upper(): str(value) for name, value in settings.items()},
        }
        self.log = data_dir / "run.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meterwatch.cli", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=timeout)

    def wait_for(
        self, database_url: str, source: str, deliveries: int, timeout: float = 120
    ) -> None:
        deadline = time.monotonic() + timeout
        while committed_deliveries(database_url, source) < deliveries:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the dataflow exited early:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {committed_deliveries(database_url, source)} of {deliveries} "
                    "deliveries committed in time"
                )
            time.sleep(0.2)


# --- comparing whole databases (crash, restart and fault tests) -----------------------------

# What a run leaves behind that must not depend on how it was run: every query's rows are
# compared as a multiset. Wall-clock columns (received_at, created_at, updated_at) and ids are
# left out; everything with data time stays in.
OUTCOME_QUERIES = {
    "reads": """SELECT meter_id, ts, value, reported_unit, register, quality, account_id,
                       service_point_id FROM reads""",
    "flags": """SELECT meter_id, account_id, kind, started_at, ended_at, detected_at, severity,
                       score, evidence, revision FROM flags""",
    # (`late` and the message's figures depend on which reads shared a transaction, so on
    # how the stream was batched as it arrived: not compared)
    "alerts": "SELECT account_id, rule, period_start, period_end, detected_at FROM alerts",
    "rejected": "SELECT delivery, reason, raw, meter_id FROM rejected_reads",
    "unmatched": """SELECT meter_id, ts, value, reported_unit, register, quality, reason, detail,
                           delivery FROM unmatched_reads""",
    "duplicates": "SELECT delivery, meter_id, ts, value FROM duplicate_reads",
    "daily_usage": """SELECT account_id, unit, day, round(usage::numeric, 6)
                        FROM account_daily_usage""",
    "period_usage": """SELECT account_id, unit, period_start, period_end, round(usage::numeric, 6)
                         FROM account_period_usage""",
    "pipeline": "SELECT source, position, deliveries, latest_read_ts FROM pipeline_status",
}


def database_outcome(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of `OUTCOME_QUERIES`, sorted, per query."""
    outcome: dict[str, list[tuple[Any, ...]]] = {}
    with psycopg.connect(database_url) as conn:
        for name, query in OUTCOME_QUERIES.items():
            rows = conn.execute(query).fetchall()
            outcome[name] = sorted(rows, key=repr)
    return outcome


def outcome_differences(
    expected: dict[str, list[tuple[Any, ...]]], actual: dict[str, list[tuple[Any, ...]]]
) -> list[str]:
    """What differs between two outcomes, in words (empty when they are equal): per table the
    count of rows missing and doubled or extra, with a few examples."""
    from collections import Counter

    problems = []
    for name in expected:
        want, got = Counter(expected[name]), Counter(actual[name])
        missing = want - got
        extra = got - want
        if missing or extra:
            problems.append(
                f"{name}: {sum(want.values())} expected, {sum(got.values())} found; "
                f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
                f"{sum(extra.values())} extra or doubled (e.g. {list(extra)[:3]})"
            )
    return problems
