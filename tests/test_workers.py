"""The dataflow partitioned by meter gives the same database with one worker, with two worker
threads and with a two-process Bytewax cluster on loopback: the same reads, rejects, exception
queue and duplicates, the same flags (kinds, spans, detection times, evidence, revisions), the
same alerts and the same usage totals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pipeline_fixtures import Scenario, load_accounts, read_counts

from meterwatch.settings import Settings
from stream.runner import execute, file_flow, start_local_file_cluster

pytestmark = pytest.mark.slow

# Every table the dataflow writes, as rows that do not depend on which worker wrote them or
# when (no wall-clock columns, no serial ids: flags are named by meter, kind and start).
TABLES = {
    "reads": """SELECT meter_id, ts, value, reported_unit, register, quality, account_id,
                       service_point_id FROM reads""",
    "rejected_reads": "SELECT delivery, reason, raw, meter_id FROM rejected_reads",
    "unmatched_reads": """SELECT meter_id, ts, value, reported_unit, register, quality, reason,
                                 detail, delivery FROM unmatched_reads""",
    "duplicate_reads": "SELECT delivery, meter_id, ts, value FROM duplicate_reads",
    "flags": """SELECT meter_id, account_id, kind, started_at, ended_at, detected_at, severity,
                       score, evidence, details::text, revision, status FROM flags""",
    "alerts": """SELECT a.account_id, a.rule, a.period_start, a.period_end, a.detected_at,
                        a.late, a.status, a.channels, f.meter_id, f.kind, f.started_at
                   FROM alerts a LEFT JOIN flags f USING (flag_id)""",
    # A leak or burst notice describes the flag as it was opened. (A usage alert's message
    # gives the total known when it was decided, which includes the rest of the sink batch that
    # crossed the threshold: that depends on batching, so only its facts above are compared.)
    "flag_alert_messages": """SELECT account_id, rule, period_start, message, details::text
                                FROM alerts WHERE rule IN ('leak', 'burst')""",
    "account_daily_usage": "SELECT account_id, unit, day, usage FROM account_daily_usage",
    "account_period_usage": """SELECT account_id, unit, period_start, period_end, usage
                                 FROM account_period_usage""",
    "usage_daily": "SELECT account_id, unit, day, usage, reads, estimated FROM usage_daily",
    "pipeline_status": "SELECT source, position, deliveries, latest_read_ts FROM pipeline_status",
}


def _value(value: Any) -> Any:
    # Sums of floats added in another order differ in the last bits; a total is the same total.
    if isinstance(value, float):
        return round(value, 6)
    return tuple(value) if isinstance(value, list) else value  # arrays (alert channels)


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table the dataflow writes, sorted."""
    with psycopg.connect(url) as conn:
        return {
            table: sorted(
                (tuple(_value(v) for v in row) for row in conn.execute(query)),  # type: ignore[arg-type]
                key=repr,
            )
            for table, query in TABLES.items()
        }


def assert_same(
    expected: dict[str, list[tuple[Any, ...]]], got: dict[str, list[tuple[Any, ...]]], what: str
) -> None:
    for table, rows in expected.items():
        other = got[table]
        if rows != other:
            missing = [r for r in rows if r not in set(other)][:3]
            extra = [r for r in other if r not in set(rows)][:3]
            pytest.fail(
                f"{what}: {table} differs from one worker's ({len(rows)} rows vs {len(other)}); "
                f"only with one worker: {missing}; only with {what}: {extra}"
            )


def run_cluster(url: str, reads: Path, processes: int, log_dir: Path) -> None:
    """`meterwatch run --from-file` as a cluster of `processes` processes on loopback."""
    env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(log_dir / "data")}
    running = start_local_file_cluster(reads, processes, env, log_dir)
    logs = [log_dir / f"process-{i}.log" for i in range(processes)]
    try:
        codes = [p.wait(timeout=300) for p in running]
    finally:
        for p in running:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * processes, "\n".join(log.read_text()[-2000:] for log in logs)


@pytest.fixture
def scenario(small_scenario: Scenario) -> Scenario:
    return small_scenario


def test_one_worker_two_threads_and_two_processes_store_the_same(
    scenario: Scenario, timescale_databases: Any, tmp_path: Path
) -> None:
    one, threads, cluster = timescale_databases(), timescale_databases(), timescale_databases()
    for url in (one, threads, cluster):
        load_accounts(url, scenario)

    execute(file_flow(scenario.reads, Settings(database_url=one)), Settings())
    expected = snapshot(one)
    # the scenario exercises everything that is compared
    assert read_counts(one)["duplicates"] > 0 and read_counts(one)["rejected"] > 0
    assert expected["unmatched_reads"] and expected["flags"] and expected["flag_alert_messages"]
    assert {row[1] for row in expected["alerts"]} > {"leak"}  # usage alerts too

    execute(file_flow(scenario.reads, Settings(database_url=threads)), Settings(), workers=2)
    assert_same(expected, snapshot(threads), "2 worker threads")

    run_cluster(cluster, scenario.reads, 2, tmp_path)
    assert_same(expected, snapshot(cluster), "2 processes")
