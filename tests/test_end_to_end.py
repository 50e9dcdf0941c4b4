"""The spine end to end: simulate → (replay onto the stream →) run → every valid read stored
exactly once, every malformed row rejected with its reason, every read of an unknown or
retired meter in the exception queue, injected continuous leaks flagged; counts exact."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import SERVERS
from pipeline_fixtures import (
    REASON_WORDS,
    Scenario,
    StreamFlow,
    committed_deliveries,
    load_accounts,
    read_counts,
    run_file,
)

from meterwatch import reports
from stream.publish import publish_file
from stream.sources import file_source_name


def expected_counts(scenario: Scenario) -> dict[str, int]:
    counts = scenario.counts
    return {
        "stored": counts["stored"],
        "rejected": counts["rejected"],
        "unmatched": counts["unmatched"]["total"],
        "duplicates": counts["duplicates"],
    }


def check_everything_accounted_for(url: str, scenario: Scenario, delivery_prefix: str) -> None:
    assert read_counts(url) == expected_counts(scenario)
    with psycopg.connect(url) as conn:
        stats = reports.stats(conn)
        by_reason = dict(
            conn.execute("SELECT reason, count(*) FROM unmatched_reads GROUP BY reason").fetchall()
        )
        rejected = conn.execute("SELECT delivery, reason FROM rejected_reads").fetchall()
        leaks = {row[0] for row in conn.execute("SELECT meter_id FROM flags WHERE kind = 'leak'")}
    # stats --json says the same as the tables
    assert stats["reads"]["stored"] == scenario.counts["stored"]
    assert stats["reads"]["duplicates"] == scenario.counts["duplicates"]
    unmatched = dict(scenario.counts["unmatched"])
    unmatched.pop("total")
    assert {k: v for k, v in by_reason.items() if v} == {k: v for k, v in unmatched.items() if v}
    # every retired and unknown meter's reads are in the exception queue
    assert by_reason.get("unknown_meter") == scenario.counts["unmatched"]["unknown_meter"]
    assert by_reason.get("retired_meter") == scenario.counts["unmatched"]["retired_meter"]
    # every malformed row is rejected with the reason of its kind
    if delivery_prefix:
        reasons = {delivery: reason for delivery, reason in rejected}
        for row in scenario.key["rejected_rows"]:
            reason = reasons[f"{delivery_prefix}:{row['row'] + 1}"]
            assert REASON_WORDS[row["reason"]] in reason, (row, reason)
    else:
        assert len(rejected) == scenario.counts["rejected"]
    # the injected continuous leaks are flagged
    continuous = {label["meter_id"] for label in scenario.labels("leak", pattern="continuous")}
    assert continuous, "the scenario should hold continuous leaks"
    assert continuous <= leaks


@pytest.mark.parametrize("database", ["timescale", "plain"])
def test_run_from_file_stores_rejects_and_queues_exactly(
    database: str, small_scenario: Scenario, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(
        "database_url" if database == "timescale" else "plain_database_url"
    )
    load_accounts(url, small_scenario)
    run_file(url, small_scenario.reads)
    check_everything_accounted_for(url, small_scenario, file_source_name(small_scenario.reads))


def test_running_the_same_file_twice_changes_nothing(
    database_url: str, small_scenario: Scenario
) -> None:
    load_accounts(database_url, small_scenario)
    run_file(database_url, small_scenario.reads)
    with psycopg.connect(database_url) as conn:
        flags_before = conn.execute(
            "SELECT meter_id, kind, started_at, ended_at, detected_at FROM flags ORDER BY 1, 2, 3"
        ).fetchall()
    run_file(database_url, small_scenario.reads)
    check_everything_accounted_for(
        database_url, small_scenario, file_source_name(small_scenario.reads)
    )
    with psycopg.connect(database_url) as conn:
        flags_after = conn.execute(
            "SELECT meter_id, kind, started_at, ended_at, detected_at FROM flags ORDER BY 1, 2, 3"
        ).fetchall()
    assert flags_after == flags_before


def test_replay_onto_the_stream_and_run(
    database_url: str,
    small_scenario: Scenario,
    stream_key: str,
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    load_accounts(database_url, small_scenario)
    published = publish_file(redis_client, [stream_key], small_scenario.reads)
    assert published == small_scenario.counts["deliveries"]
    flow = StreamFlow(database_url, SERVERS.redis_url, stream_key, tmp_path / "data")
    flow.start()
    try:
        flow.wait_for(database_url, stream_key, published)
    finally:
        flow.stop()
    check_everything_accounted_for(database_url, small_scenario, "")
    # every stream delivery is named by its entry id
    with psycopg.connect(database_url) as conn:
        names = [r[0] for r in conn.execute("SELECT delivery FROM rejected_reads")]
    assert all(name.startswith(f"{stream_key}/") for name in names)


def test_a_killed_dataflow_resumes_without_losing_or_doubling(
    database_url: str,
    small_scenario: Scenario,
    stream_key: str,
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    load_accounts(database_url, small_scenario)
    flow = StreamFlow(
        database_url, SERVERS.redis_url, stream_key, tmp_path / "data", source_batch_size=200
    )
    flow.start()
    published = publish_file(redis_client, [stream_key], small_scenario.reads)
    # kill it hard part-way, then let a new process resume from the last snapshot
    while committed_deliveries(database_url, stream_key) < published // 3:
        assert flow.process is not None and flow.process.poll() is None
        time.sleep(0.05)
    flow.stop(signal.SIGKILL)
    flow.start()
    try:
        flow.wait_for(database_url, stream_key, published)
    finally:
        flow.stop()
    check_everything_accounted_for(database_url, small_scenario, "")


def test_stats_json_from_the_command_line(
    database_url: str, small_scenario: Scenario, make_settings, capsys: pytest.CaptureFixture
) -> None:
    from typer.testing import CliRunner

    from meterwatch.cli import app

    load_accounts(database_url, small_scenario)
    run_file(database_url, small_scenario.reads)
    make_settings(database_url=database_url)
    result = CliRunner().invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["reads"]
    assert {k: counts[k] for k in ("stored", "rejected", "unmatched", "duplicates")} == (
        expected_counts(small_scenario)
    )
