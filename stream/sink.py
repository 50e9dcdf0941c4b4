"""The dataflow's one sink: everything a batch produced, written in one transaction.

Writes are idempotent, because Bytewax delivers at least once (after a crash it replays input
since the last snapshot):

- reads the meter state vouched for go in by COPY, the fast path; if the COPY meets a row that
  is already there (only after a replay), the batch's reads take the slow path instead;
- reads the state could not vouch for (older than its window) go through a temporary table
  and `INSERT … ON CONFLICT DO NOTHING`; those that were already stored are duplicates;
- rejected reads, exception-queue reads and duplicates are keyed by their delivery name, so a
  replayed delivery is never written twice;
- flags are upserted on (meter, kind, start), and an update never overwrites a newer revision.

The database works while the dataflow computes: each worker's partition hands a batch to a
writer thread and returns (one batch in flight, one waiting), and at every epoch's close, when
Bytewax takes the partition's snapshot, it waits until everything handed over is committed. A
recovery snapshot therefore never covers a batch that is not in the database, exactly as when
the worker wrote synchronously.

When the database is unreachable the sink waits and retries with backoff; the dataflow stalls
meanwhile rather than losing anything. A row the database refuses for its content (which
validation should have caught) goes to the rejected table with the database's message instead
of failing the batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import psycopg
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from psycopg import errors
from psycopg.types.json import Jsonb

from stream import health
from stream.matching import UnmatchedRead
from stream.meter import DuplicateRead, FlagWrite, StoredRead
from stream.reads import Delivery, Rejected, raw_payload

log = logging.getLogger(__name__)

READ_COLUMNS = (
    "meter_id",
    "ts",
    "value",
    "reported_unit",
    "register",
    "quality",
    "account_id",
    "service_point_id",
)
_COPY_READS = f"COPY reads ({', '.join(READ_COLUMNS)}) FROM STDIN"

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS incoming_reads (
  meter_id text, ts timestamptz, value float8, reported_unit text, register float8,
  quality text, account_id text, service_point_id text, vouched bool, delivery text, seq bigint
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS incoming_unmatched (
  meter_id text, ts timestamptz, value float8, reported_unit text, register float8,
  quality text, reason text, detail text, delivery text, seq bigint
) ON COMMIT DELETE ROWS;
"""

# Returns the deliveries whose read was stored now; the others were stored before.
_STORE_INCOMING_READS = """
WITH firsts AS (
  SELECT DISTINCT ON (meter_id, ts) * FROM incoming_reads ORDER BY meter_id, ts, seq
), stored AS (
  INSERT INTO reads (meter_id, ts, value, reported_unit, register, quality, account_id,
                     service_point_id)
  SELECT meter_id, ts, value, reported_unit, register, quality, account_id, service_point_id
    FROM firsts
  ON CONFLICT (meter_id, ts) DO NOTHING
  RETURNING meter_id, ts
)
SELECT f.delivery FROM stored JOIN firsts f USING (meter_id, ts)
"""

_STORE_UNMATCHED = """
INSERT INTO unmatched_reads (meter_id, ts, value, reported_unit, register, quality, reason,
                             detail, delivery)
SELECT DISTINCT ON (meter_id, ts) meter_id, ts, value, reported_unit, register, quality, reason,
       detail, delivery
  FROM incoming_unmatched ORDER BY meter_id, ts, seq
ON CONFLICT (meter_id, ts) DO NOTHING
"""

# A further delivery of a read already in the exception queue is a duplicate; the queue row
# keeps the name of the delivery it came from, so a replay of that one is not.
_UNMATCHED_DUPLICATES = """
INSERT INTO duplicate_reads (delivery, meter_id, ts, value)
SELECT i.delivery, i.meter_id, i.ts, i.value
  FROM incoming_unmatched i JOIN unmatched_reads u USING (meter_id, ts)
 WHERE u.delivery <> i.delivery
ON CONFLICT (delivery) DO NOTHING
"""

_INSERT_REJECTED = """
INSERT INTO rejected_reads (delivery, reason, raw, meter_id) VALUES (%s, %s, %s, %s)
ON CONFLICT (delivery) DO NOTHING
"""

_INSERT_DUPLICATE = """
INSERT INTO duplicate_reads (delivery, meter_id, ts, value) VALUES (%s, %s, %s, %s)
ON CONFLICT (delivery) DO NOTHING
"""

# Returns the flag's id and whether this write created it; nothing when a newer revision is
# already stored (a replay).
_UPSERT_FLAG = """
INSERT INTO flags (meter_id, account_id, kind, started_at, ended_at, detected_at, severity,
                   score, evidence, details, revision)
VALUES (%s, %s, %s, to_timestamp(%s), to_timestamp(%s), to_timestamp(%s), %s, %s, %s, %s, %s)
ON CONFLICT (meter_id, kind, started_at) DO UPDATE
   SET ended_at = EXCLUDED.ended_at, severity = EXCLUDED.severity, score = EXCLUDED.score,
       evidence = EXCLUDED.evidence, details = EXCLUDED.details, revision = EXCLUDED.revision,
       updated_at = now()
 WHERE flags.revision < EXCLUDED.revision
RETURNING flag_id, (xmax = 0) AS created
"""

_UPSERT_PROGRESS = """
INSERT INTO pipeline_status (source, worker, position, deliveries, latest_read_ts, updated_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (source) DO UPDATE
   SET position = CASE WHEN EXCLUDED.deliveries >= pipeline_status.deliveries
                       THEN EXCLUDED.position ELSE pipeline_status.position END,
       deliveries = GREATEST(pipeline_status.deliveries, EXCLUDED.deliveries),
       latest_read_ts = GREATEST(pipeline_status.latest_read_ts, EXCLUDED.latest_read_ts),
       worker = EXCLUDED.worker,
       updated_at = now()
"""

SinkItem = StoredRead | DuplicateRead | FlagWrite | UnmatchedRead | Rejected


@dataclass(slots=True)
class StoredFlag:
    """A flag write the database took: its id, and whether it created the flag (then `write`
    is the batch's earliest write of it, the flag as it was opened)."""

    write: FlagWrite
    flag_id: int
    created: bool


class AfterStore(Protocol):
    """Work that must commit in the same transaction as the data that caused it (the alerts
    outbox). `reads` are the reads stored by this transaction, never one stored before;
    `flags` the flag writes it applied."""

    def __call__(
        self, conn: psycopg.Connection, reads: list[StoredRead], flags: list[StoredFlag]
    ) -> None: ...


@dataclass(slots=True)
class _Progress:
    seq: int
    position: str
    latest: datetime | None


class Batch:
    """One write_batch's items, sorted by what they become."""

    def __init__(self, items: Iterable[SinkItem]) -> None:
        self.reads: list[StoredRead] = []
        self.duplicates: list[DuplicateRead] = []
        self.flags: dict[tuple[str, str, int], FlagWrite] = {}
        # The earliest write of each flag in the batch: a flag this batch creates is handed to
        # the hooks as it was opened, whatever later writes the same batch happens to hold, so
        # that an alert reads the same however the reads were batched (and with any workers).
        self.first_flags: dict[tuple[str, str, int], FlagWrite] = {}
        self.unmatched: list[UnmatchedRead] = []
        self.rejected: list[Rejected] = []
        self.progress: dict[str, _Progress] = {}
        for item in items:
            if isinstance(item, StoredRead):
                self.reads.append(item)
                self._advance(item.delivery, item.ts)
            elif isinstance(item, FlagWrite):
                key = (item.meter_id, item.change.kind, item.change.started_at)
                known = self.flags.get(key)
                if known is None or known.change.revision < item.change.revision:
                    self.flags[key] = item
                first = self.first_flags.get(key)
                if first is None or item.change.revision < first.change.revision:
                    self.first_flags[key] = item
            elif isinstance(item, DuplicateRead):
                self.duplicates.append(item)
                self._advance(item.delivery, item.ts)
            elif isinstance(item, UnmatchedRead):
                self.unmatched.append(item)
                self._advance(item.reading.delivery, item.reading.ts)
            elif isinstance(item, Rejected):
                self.rejected.append(item)
                self._advance(item.delivery, None)
            else:
                raise TypeError(f"the sink does not know how to store {type(item).__name__}")

    def _advance(self, delivery: Delivery, ts: datetime | None) -> None:
        known = self.progress.get(delivery.source)
        if known is None:
            self.progress[delivery.source] = _Progress(delivery.seq, delivery.position, ts)
            return
        if delivery.seq > known.seq:
            known.seq, known.position = delivery.seq, delivery.position
        if ts is not None and (known.latest is None or ts > known.latest):
            known.latest = ts


def _read_row(read: StoredRead) -> tuple[Any, ...]:
    return (
        read.meter_id,
        read.ts,
        read.value,
        read.reported_unit,
        read.register,
        read.quality,
        read.account_id,
        read.service_point_id,
    )


class DatabaseWriter:
    """Writes batches to PostgreSQL over one connection, reconnecting when it is lost."""

    def __init__(
        self,
        database_url: str,
        worker: str = "0",
        max_backoff_s: float = 30.0,
        after_store: Sequence[AfterStore] = (),
    ) -> None:
        self.database_url = database_url
        self.worker = worker
        self.max_backoff_s = max_backoff_s
        self.after_store = list(after_store)
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.database_url)
            conn.execute(_TEMP_TABLES)
            conn.commit()
            self._conn = conn
        return self._conn

    def write(self, items: Sequence[SinkItem]) -> None:
        """Store one batch; blocks, retrying with backoff, while the database is down (the
        process's heartbeat says `waiting_for_database` meanwhile, see stream.health)."""
        batch = Batch(items)
        delay = 0.5
        waited = 0.0
        while True:
            try:
                self._write(batch)
                if waited:
                    log.info("database is back after %.1fs; the batch is committed", waited)
                    health.current().ok()
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # OperationalError: refused, terminated by a restart, timed out; InterfaceError:
                # the connection broke under us. Nothing of the batch committed: write it again.
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                log.warning("database unavailable (%s); retrying in %.1fs", detail, delay)
                health.current().degraded("waiting_for_database", detail)
                self.close()
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, self.max_backoff_s)
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                # The batch holds something the database refuses. Find it row by row rather
                # than crash-looping on the same batch forever.
                log.error("database refused a batch (%s); storing it row by row", exc)
                self._rollback()
                self._write_one_by_one(batch)
                return

    def _write(self, batch: Batch) -> None:
        conn = self._connection()
        with conn.transaction():
            stored = self._store_reads(conn, batch.reads)
            self._store_unmatched(conn, batch.unmatched)
            flags = self._store_flags(conn, list(batch.flags.values()), batch.first_flags)
            with conn.cursor() as cur:
                if batch.rejected:
                    cur.executemany(
                        _INSERT_REJECTED,
                        [(r.delivery.name, r.reason, r.raw, r.meter_id) for r in batch.rejected],
                    )
                if batch.duplicates:
                    cur.executemany(
                        _INSERT_DUPLICATE,
                        [(d.delivery.name, d.meter_id, d.ts, d.value) for d in batch.duplicates],
                    )
                if batch.progress:
                    cur.executemany(
                        _UPSERT_PROGRESS,
                        [
                            (source, self.worker, p.position, p.seq, p.latest)
                            for source, p in sorted(batch.progress.items())
                        ],
                    )
            for hook in self.after_store:
                hook(conn, stored, flags)

    def _store_reads(self, conn: psycopg.Connection, reads: list[StoredRead]) -> list[StoredRead]:
        """Store the batch's reads; returns those stored now (not before)."""
        if not reads:
            return []
        vouched = [r for r in reads if r.vouched]
        careful = [r for r in reads if not r.vouched]
        stored: list[StoredRead] = []
        if vouched:
            try:
                with conn.transaction(), conn.cursor() as cur, cur.copy(_COPY_READS) as copy:
                    for read in vouched:
                        copy.write_row(_read_row(read))
                stored = vouched
            except errors.UniqueViolation:
                # Only after a replay: some of these were committed before the crash.
                careful = reads
        if careful:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY incoming_reads (meter_id, ts, value, reported_unit, register, quality,"
                    " account_id, service_point_id, vouched, delivery, seq) FROM STDIN"
                ) as copy:
                    for read in careful:
                        copy.write_row(
                            (*_read_row(read), read.vouched, read.delivery.name, read.delivery.seq)
                        )
                cur.execute(_STORE_INCOMING_READS)
                now_stored = {row[0] for row in cur.fetchall()}
                stored.extend(r for r in careful if r.delivery.name in now_stored)
                # A read the state could not vouch for, that was already there: a duplicate.
                duplicates = [
                    (r.delivery.name, r.meter_id, r.ts, r.value)
                    for r in careful
                    if not r.vouched and r.delivery.name not in now_stored
                ]
                if duplicates:
                    cur.executemany(_INSERT_DUPLICATE, duplicates)
        return stored

    def _store_flags(
        self,
        conn: psycopg.Connection,
        writes: list[FlagWrite],
        first: dict[tuple[str, str, int], FlagWrite] | None = None,
    ) -> list[StoredFlag]:
        if not writes:
            return []
        applied: list[StoredFlag] = []
        with conn.cursor() as cur:
            cur.executemany(_UPSERT_FLAG, [_flag_row(w) for w in writes], returning=True)
            for write in writes:
                row = cur.fetchone()
                if row is not None:
                    if row[1] and first:  # created now: as opened (see Batch.first_flags)
                        key = (write.meter_id, write.change.kind, write.change.started_at)
                        write = first.get(key, write)
                    applied.append(StoredFlag(write, row[0], row[1]))
                cur.nextset()
        return applied

    def _store_unmatched(self, conn: psycopg.Connection, unmatched: list[UnmatchedRead]) -> None:
        if not unmatched:
            return
        with conn.cursor() as cur:
            with cur.copy(
                "COPY incoming_unmatched (meter_id, ts, value, reported_unit, register, quality,"
                " reason, detail, delivery, seq) FROM STDIN"
            ) as copy:
                for u in unmatched:
                    r = u.reading
                    is_register = r.kind == "register"
                    copy.write_row(
                        (
                            r.meter_id,
                            r.ts,
                            None if is_register else r.value * r.factor,
                            r.reported_unit,
                            r.value if is_register else None,
                            r.quality,
                            u.reason,
                            u.detail,
                            r.delivery.name,
                            r.delivery.seq,
                        )
                    )
            cur.execute(_STORE_UNMATCHED)
            cur.execute(_UNMATCHED_DUPLICATES)

    def _write_one_by_one(self, batch: Batch) -> None:
        singles: list[SinkItem] = [
            *batch.reads,
            *batch.duplicates,
            *batch.flags.values(),
            *batch.unmatched,
            *batch.rejected,
        ]
        for item in singles:
            try:
                self._write(Batch([item]))
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                self._rollback()
                delivery = getattr(item, "delivery", None) or getattr(
                    getattr(item, "reading", None), "delivery", None
                )
                if delivery is None:  # a flag the database refused: a bug, keep it in the log
                    log.error("database refused %r: %s", item, exc)
                    continue
                reason = f"the database refused this read: {str(exc).splitlines()[0]}"
                self._write(Batch([Rejected(delivery, reason, raw_payload(delivery), None)]))

    def _rollback(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.rollback()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:  # a connection the server already dropped
                pass
            finally:
                self._conn = None


def _flag_row(write: FlagWrite) -> tuple[Any, ...]:
    c = write.change
    return (
        write.meter_id,
        write.account_id,
        c.kind,
        c.started_at,
        c.ended_at,
        c.detected_at,
        c.severity,
        c.score,
        c.evidence,
        Jsonb(c.details),
        c.revision,
    )


class BackgroundWriter:
    """Runs `writer.write` on a thread of its own, one batch at a time, so that the dataflow
    worker computes the next batch while the database stores this one. `submit` waits while a
    batch is already waiting (at most one in flight and one waiting: memory stays bounded and
    a slow database slows the flow down instead of queueing without end); `drain` waits until
    everything submitted is committed. An error of the writer (one it does not retry, see
    `DatabaseWriter.write`) is raised by the next `submit`, `drain` or `close`, so the dataflow
    stops on it as it did when it wrote itself."""

    def __init__(self, writer: DatabaseWriter) -> None:
        self.writer = writer
        self._cond = threading.Condition()
        self._waiting: list[SinkItem] | None = None  # handed over, not yet taken
        self._busy = False  # the thread is writing a batch
        self._error: BaseException | None = None
        self._error_raised = False
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"meterwatch-writer-{writer.worker}", daemon=True
        )
        self._thread.start()

    def submit(self, items: list[SinkItem]) -> None:
        with self._cond:
            while self._waiting is not None and self._error is None:
                self._cond.wait()
            self._raise_error()
            self._waiting = items
            self._cond.notify_all()

    def drain(self) -> None:
        with self._cond:
            while (self._waiting is not None or self._busy) and self._error is None:
                self._cond.wait()
            self._raise_error()

    def close(self) -> None:
        """Commit what was submitted, stop the thread and close the connection."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            if self._thread is not threading.current_thread():
                self._thread.join()
            self.writer.close()

    def _raise_error(self) -> None:
        # Raised once: the dataflow stops on it, and Bytewax closes the partition afterwards,
        # which must then not fail again.
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._waiting is None and not self._closing:
                    self._cond.wait()
                if self._waiting is None:
                    return  # closing, and nothing left
                items, self._waiting = self._waiting, None
                self._busy = True
                self._cond.notify_all()
            try:
                self.writer.write(items)
            except BaseException as exc:  # handed to the worker, which stops the dataflow
                with self._cond:
                    self._error = exc
                    self._busy = False
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class _DatabaseSinkPartition(StatefulSinkPartition[SinkItem, None]):
    """One worker's writer. Its snapshot is nothing to resume from (every write is
    idempotent): taking it is the barrier that keeps a recovery snapshot behind the commits."""

    def __init__(self, writer: DatabaseWriter) -> None:
        self.background = BackgroundWriter(writer)
        self._closed = False

    def write_batch(self, values: list[SinkItem]) -> None:
        self.background.submit(values)

    def snapshot(self) -> None:
        # Bytewax takes it at the close of every epoch this partition wrote in, before the
        # epoch's snapshots can be committed: wait until the epoch's batches are.
        self.background.drain()

    def close(self) -> None:
        if not self._closed:  # Bytewax may call it again when it drops the partition
            self._closed = True
            self.background.close()


class DatabaseSink(FixedPartitionedSink[SinkItem, None]):
    """One writer (one connection, one writer thread) per dataflow worker; `after_store` runs
    in each batch's transaction (see `AfterStore`).

    Bytewax routes a partitioned sink's items to the worker that owns their partition. So that
    every worker writes what it produced itself (no exchange between processes), each worker
    lists one partition of its own, named by its index in the cluster, and `route` keys every
    item with the partition of the worker it runs on. `prepare(process_id, workers)` (called by
    `stream.runner.execute` before each run) tells the sink where in the cluster this process
    is; without it every worker lists partition 0 and one of them writes everything, which is
    as correct, only not spread."""

    def __init__(self, database_url: str, after_store: Sequence[AfterStore] = ()) -> None:
        self.database_url = database_url
        self.after_store = after_store
        self._process_id = 0
        self._workers = 1
        self._listed = 0
        self._lock = threading.Lock()
        # Thread id -> the partition of the worker running on that thread (set when it lists
        # its parts, which Bytewax does on the worker's own thread while building the
        # dataflow). Not a threading.local: Bytewax's worker threads are not Python's, and
        # each time one takes the GIL it may get a fresh thread state, and an empty local.
        self._parts: dict[int, str] = {}

    def prepare(self, process_id: int, workers: int) -> None:
        with self._lock:
            self._process_id, self._workers, self._listed = process_id, max(workers, 1), 0

    def list_parts(self) -> list[str]:
        with self._lock:
            local = self._listed % self._workers
            self._listed += 1
            name = f"{self._process_id * self._workers + local:06d}"
        self._parts[threading.get_ident()] = name
        return [name]

    def route(self, item: SinkItem) -> tuple[str, SinkItem]:
        return self._parts.get(threading.get_ident(), "000000"), item

    def part_fn(self, item_key: str) -> int:
        # Partition names are zero-padded indexes, so their sorted order is this index.
        return int(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _DatabaseSinkPartition:
        writer = DatabaseWriter(self.database_url, str(int(for_part)), after_store=self.after_store)
        return _DatabaseSinkPartition(writer)
