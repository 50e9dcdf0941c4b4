"""The database sink hands batches to a writer thread and keeps the recovery guarantee: a
partition's snapshot (taken by Bytewax at each epoch's close) returns only once everything
handed over is committed, and an error of the writer stops the dataflow."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from pipeline_fixtures import Scenario, load_accounts

from meterwatch.settings import Settings
from stream.flow import build_flow
from stream.meter import StoredRead
from stream.reads import Delivery, Rejected
from stream.runner import execute
from stream.sink import DatabaseSink, StoredFlag
from stream.sources import FileSource


def _rejected(n: int) -> Rejected:
    delivery = Delivery(f"test:{n}", n, {"meter_id": "M1"}, f"M1,row {n}", "test", str(n))
    return Rejected(delivery, "a test row", f"M1,row {n}", "M1")


def _stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM rejected_reads").fetchone()
    assert row is not None
    return int(row[0])


def test_write_batch_returns_at_once_and_the_snapshot_waits_for_the_commit(
    database_url: str,
) -> None:
    in_transaction = threading.Event()

    def slow_hook(conn: psycopg.Connection, reads: list[StoredRead], f: list[StoredFlag]) -> None:
        in_transaction.set()
        time.sleep(0.5)  # the database's share of a batch, made long enough to see

    part = DatabaseSink(database_url, after_store=[slow_hook]).build_part("store", "000000", None)
    try:
        started = time.monotonic()
        part.write_batch([_rejected(1), _rejected(2)])
        part.write_batch([_rejected(3)])  # waits for the writer to take the first only
        handed_over = time.monotonic() - started
        assert in_transaction.wait(5)
        assert _stored(database_url) == 0  # the first batch is still in its transaction
        part.snapshot()
        assert _stored(database_url) == 3  # both batches committed before the snapshot
        assert handed_over < 0.5
    finally:
        part.close()


def test_an_error_of_the_writer_stops_the_dataflow_once(database_url: str) -> None:
    def failing_hook(
        conn: psycopg.Connection, reads: list[StoredRead], f: list[StoredFlag]
    ) -> None:
        raise RuntimeError("the hook failed")

    part = DatabaseSink(database_url, after_store=[failing_hook]).build_part(
        "store", "000000", None
    )
    part.write_batch([_rejected(1)])
    with pytest.raises(RuntimeError, match="the hook failed"):
        part.snapshot()
    part.close()  # Bytewax closes the partition afterwards: no second error
    assert _stored(database_url) == 0  # the failed batch rolled back


def test_close_commits_what_was_handed_over(database_url: str) -> None:
    part = DatabaseSink(database_url).build_part("store", "000000", None)
    part.write_batch([_rejected(1)])
    part.close()
    assert _stored(database_url) == 1


def test_each_worker_keys_its_items_to_its_own_partition() -> None:
    sink = DatabaseSink("postgresql://unused")
    sink.prepare(process_id=1, workers=2)  # the second process of a cluster, two threads each
    keys: dict[str, tuple[str, int]] = {}

    def worker() -> None:
        [part] = sink.list_parts()  # Bytewax lists a worker's parts on the worker's thread
        key, _ = sink.route(_rejected(1))
        keys[part] = (key, sink.part_fn(key))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Process 1 holds the cluster's partitions 2 and 3, of the sorted global 0..3.
    assert keys == {"000002": ("000002", 2), "000003": ("000003", 3)}


def test_with_two_workers_each_writes_what_it_produced(
    database_url: str, small_scenario: Scenario
) -> None:
    """Bytewax's worker threads are its own (each may take the GIL with a fresh Python thread
    state): each must still find its partition, or one worker would write everything."""
    load_accounts(database_url, small_scenario)
    writers: dict[str, int] = {}
    lock = threading.Lock()

    def count(conn: psycopg.Connection, reads: list[StoredRead], f: list[StoredFlag]) -> None:
        with lock:
            name = threading.current_thread().name
            writers[name] = writers.get(name, 0) + len(reads)

    flow = build_flow(
        FileSource(small_scenario.reads, 500), database_url, flow_id="two", after_store=[count]
    )
    execute(flow, Settings(database_url=database_url), workers=2)
    assert sorted(writers) == ["meterwatch-writer-0", "meterwatch-writer-1"]
    assert all(n > 0 for n in writers.values())
