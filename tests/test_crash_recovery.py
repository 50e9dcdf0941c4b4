"""Crash and restart: `meterwatch run` SIGKILLed at random points while it consumes a large
simulated scenario from the Redis Stream, restarted each time from its recovery snapshots,
ends with exactly the database an uninterrupted run of the same stream leaves: the same reads,
flags (kinds, spans, detection times), alerts, usage totals, rejected, unmatched and duplicate
rows and pipeline counters — none missing, none doubled.

Size: MW_CRASH_READS (about that many deliveries; default sized for CI on two cores),
MW_CRASH_KILLS (SIGKILLs, at least five), MW_CRASH_SEED (where the kills fall), MW_CRASH_LIVE=1
(a head-end publishing while the flows read, slower than they do, instead of a stream published
beforehand).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
from conftest import SERVERS, DatabaseFactory
from pipeline_fixtures import (
    StreamFlow,
    committed_deliveries,
    database_outcome,
    load_accounts,
    make_scenario,
    outcome_differences,
)

from stream.publish import file_rows, publish, publish_file

CRASH_READS = int(os.environ.get("MW_CRASH_READS", "120000"))
CRASH_KILLS = max(5, int(os.environ.get("MW_CRASH_KILLS", "6")))
CRASH_SEED = int(os.environ.get("MW_CRASH_SEED", "20260301"))
# MW_CRASH_LIVE=1: publish while the flows run, rather than before
LIVE = os.environ.get("MW_CRASH_LIVE", "") == "1"
DAYS = 30  # hourly reads: 720 intervals per meter
FLOW_SETTINGS = {"utility_tz": "America/Chicago", "alert_refresh_s": "0.5"}


def wait_committed(flow: StreamFlow, url: str, source: str, at_least: int, timeout: float) -> None:
    """Wait until `at_least` deliveries are committed; fails if the process exits meanwhile."""
    deadline = time.monotonic() + timeout
    while committed_deliveries(url, source) < at_least:
        assert flow.process is not None
        if flow.process.poll() is not None:
            raise AssertionError(f"the dataflow exited early:\n{flow.log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"{at_least} deliveries not committed in time"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkilled_dataflow_ends_with_the_uninterrupted_runs_database(
    database_url: str,
    timescale_databases: DatabaseFactory,
    stream_key: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    meters = max(60, CRASH_READS // (DAYS * 24))
    scenario = make_scenario(tmp_path / "scenario", meters=meters, days=DAYS, seed=CRASH_SEED % 997)
    reference_url = timescale_databases()
    for url in (reference_url, database_url):
        load_accounts(url, scenario)
    published = scenario.counts["deliveries"]
    feeder = None
    if LIVE:
        # A head-end publishing while the flows read: each reads its own batch sizes.
        rows = list(file_rows(scenario.reads))

        def feed() -> None:
            # slower than the flows, so that they read small batches, as live
            for at in range(0, len(rows), 100):
                publish(redis_client, [stream_key], rows[at : at + 100])
                time.sleep(0.1)

        feeder = threading.Thread(target=feed, daemon=True)
    else:
        assert publish_file(redis_client, [stream_key], scenario.reads) == published

    # Both read the same stream, so their deliveries have the same names; they run side by
    # side to halve the test's time.
    reference = StreamFlow(
        reference_url, SERVERS.redis_url, stream_key, tmp_path / "reference", **FLOW_SETTINGS
    )
    crashing = StreamFlow(
        database_url, SERVERS.redis_url, stream_key, tmp_path / "crashing", **FLOW_SETTINGS
    )
    rng = random.Random(CRASH_SEED)
    wait_s = max(300.0, published / 300)  # even at 300 deliveries/s on a busy machine
    started = time.monotonic()
    reference.start()
    crashing.start()
    if feeder is not None:
        feeder.start()
    try:
        kill_points = sorted(int(published * rng.uniform(0.03, 0.97)) for _ in range(CRASH_KILLS))
        for n, point in enumerate(kill_points, 1):
            wait_committed(crashing, database_url, stream_key, point, timeout=wait_s)
            # Anywhere: mid-batch, mid-transaction, mid-snapshot, or during the restart's
            # recovery when two points fall close together.
            time.sleep(rng.uniform(0.0, 1.5))
            crashing.stop(signal.SIGKILL)
            print(
                f"kill {n}: SIGKILL at {committed_deliveries(database_url, stream_key)} of "
                f"{published} deliveries committed"
            )
            crashing.start()
        wait_committed(crashing, database_url, stream_key, published, timeout=wait_s)
        wait_committed(reference, reference_url, stream_key, published, timeout=wait_s)
    finally:
        for flow in (crashing, reference):
            if flow.process is not None and flow.process.poll() is None:
                flow.stop()
    elapsed = time.monotonic() - started
    print(f"{published} deliveries, {CRASH_KILLS} kills, both runs done in {elapsed:.1f}s")

    expected = database_outcome(reference_url)
    actual = database_outcome(database_url)
    assert outcome_differences(expected, actual) == []
    # the comparison is only worth something if the run produced all of these
    assert {name: len(rows) > 0 for name, rows in expected.items()} == dict.fromkeys(expected, True)
    assert len(expected["reads"]) == scenario.counts["stored"]
    assert len(expected["duplicates"]) == scenario.counts["duplicates"]
    assert len(expected["rejected"]) == scenario.counts["rejected"]
    assert len(expected["unmatched"]) == scenario.counts["unmatched"]["total"]
