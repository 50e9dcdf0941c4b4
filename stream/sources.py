"""Where reads come from: a Redis Stream (or several shards of one), a file, or the simulator.

Every source is a Bytewax `FixedPartitionedSource` whose snapshot is its position, restored
together with the per-meter state after a crash, so that the replay since the last snapshot is
deterministic and the sink's idempotent writes make it exactly-once in the database.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import redis
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from stream import health
from stream.reads import READ_COLUMNS, Delivery, csv_line

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("meter_id", "ts", "value")

# Set on SIGINT/SIGTERM (see stream.runner): the endless sources then end their input, so the
# dataflow finishes its last epoch, commits and snapshots, and exits cleanly.
stop_requested = threading.Event()


class InputFileError(ValueError):
    """A reads file that cannot be read at all (wrong header, unknown format)."""


def file_source_name(path: Path) -> str:
    """A stable name for a file's deliveries: its name and a digest of its full path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    return f"file:{path.name}#{digest}"


def _is_json_lines(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".ndjson", ".json")


def check_reads_file(path: Path) -> None:
    """Fail early, with the fix, on a file whose header is not the reads contract."""
    if not path.is_file():
        raise InputFileError(f"reads file {path} does not exist")
    if _is_json_lines(path):
        return
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = next(csv.reader(handle), None)
    if header is None:
        raise InputFileError(f"{path} is empty: expected a header row {','.join(READ_COLUMNS)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in [h.strip() for h in header]]
    if missing:
        raise InputFileError(
            f"{path} row 1: the header lacks {', '.join(missing)}; the reads contract's "
            f"columns are {','.join(READ_COLUMNS)} (unit, kind and quality are optional)"
        )


def iter_file_deliveries(path: Path, skip: int = 0) -> Iterator[Delivery]:
    """Every data row of a CSV or JSON-lines reads file, as deliveries named by row number
    (the header is row 1, as a spreadsheet shows it)."""
    source = file_source_name(path)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        rows = _json_rows(handle) if _is_json_lines(path) else _csv_rows(handle)
        first_row = 1 if _is_json_lines(path) else 2
        for index, (fields, raw, error) in enumerate(rows):
            if index < skip:
                continue
            row = index + first_row
            if isinstance(raw, list):  # a CSV row's values: its text is built if rejected
                yield Delivery(
                    f"{source}:{row}", index + 1, fields, None, source, str(row), None, raw
                )
            else:
                yield Delivery(f"{source}:{row}", index + 1, fields, raw, source, str(row), error)


def _csv_rows(handle: TextIO) -> Iterator[tuple[dict[str, Any], str | list[str], str | None]]:
    reader = csv.reader(handle)
    header = [h.strip() for h in next(reader, [])]
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field past csv's size limit: reject the row, go on
            yield {}, f"(unreadable CSV row at line {reader.line_num})", f"not readable CSV: {exc}"
            continue
        if not values:
            continue
        fields = dict(zip(header, values, strict=False))
        if len(values) != len(header):
            error = (
                f"row has {len(values)} fields but the header has {len(header)}: check for an "
                "unquoted comma or a missing column"
            )
            yield fields, csv_line(values), error
        else:
            yield fields, values, None


def _json_rows(handle: TextIO) -> Iterator[tuple[dict[str, Any], str, str | None]]:
    for line in handle:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            yield {}, text, f"not valid JSON ({exc.msg} at column {exc.colno})"
            continue
        if not isinstance(fields, dict):
            yield {}, text, "each JSON line must be an object with meter_id, ts and value"
            continue
        yield fields, text, None


class _FilePartition(StatefulSourcePartition[Delivery, int]):
    def __init__(self, path: Path, batch_size: int, resume: int | None) -> None:
        self._done = resume or 0
        self._rows = iter_file_deliveries(path, skip=self._done)
        self._batch_size = batch_size

    def next_batch(self) -> list[Delivery]:
        batch: list[Delivery] = []
        for delivery in self._rows:
            batch.append(delivery)
            if len(batch) >= self._batch_size:
                break
        if not batch:
            raise StopIteration
        self._done = batch[-1].seq
        return batch

    def snapshot(self) -> int:
        return self._done


class FileSource(FixedPartitionedSource[Delivery, int]):
    """A reads file (CSV or JSON lines); the flow ends when the file is exhausted."""

    def __init__(self, path: Path, batch_size: int = 2000) -> None:
        check_reads_file(path)
        self.path = path
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [file_source_name(self.path)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        return _FilePartition(self.path, self.batch_size, resume_state)


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a number pair, for comparing ids ('5-10' < '10-0')."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _decoded(value: bytes | str, what: str, problems: list[str]) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{what} is not UTF-8 (byte 0x{value[exc.start]:02x} at {exc.start})")
        return value.decode("utf-8", "backslashreplace")


def stream_delivery(
    key: str, entry_id: str, seq: int, fields: Mapping[bytes, bytes] | Mapping[str, str]
) -> Delivery:
    """A Redis Stream entry as a delivery named `<key>/<entry id>`. The fields are the reads
    contract's columns as text; an entry that is not UTF-8 is rejected with the field named
    (its raw payload keeps the bytes as `\\xNN` escapes), and `decode_error` is the field a
    publisher sets on a row it could not decode (see stream.publish), with the row in `raw`."""
    problems: list[str] = []
    decoded: dict[str, str]
    try:  # the common case, as fast as the Redis client's own decoding
        decoded = {
            (k if isinstance(k, str) else k.decode()): (v if isinstance(v, str) else v.decode())
            for k, v in fields.items()
        }
    except UnicodeDecodeError:
        decoded = {}
        for name, value in fields.items():
            text_name = _decoded(name, "a field name", problems)
            decoded[text_name] = _decoded(value, f"field {text_name!r}", problems)
    error = decoded.get("decode_error")
    raw = decoded.get("raw") if error is not None else None
    if error is not None and not error.strip():
        error = "the publisher marked this entry undecodable (decode_error) without a reason"
    if problems:
        error = f"the stream entry is not text: {'; '.join(problems)}; publish UTF-8"
        raw = None
    return Delivery(f"{key}/{entry_id}", seq, decoded, raw, key, entry_id, error)


class _StreamPartition(StatefulSourcePartition[Delivery, tuple[str, int]]):
    """One Redis Stream key, read from the position after the last snapshot."""

    def __init__(
        self,
        url: str,
        key: str,
        batch_size: int,
        retention_ms: int,
        resume: tuple[str, int] | None,
        idle_wait_s: float = 0.02,
    ) -> None:
        self.url = url
        self.key = key
        self.batch_size = batch_size
        self.retention_ms = retention_ms
        self.idle_wait_s = idle_wait_s
        self.last_id, self.seq = resume or ("0-0", 0)
        self._client: redis.Redis | None = None
        self._awake: datetime | None = None
        self._backoff_s = 0.0
        self._trimmed_at = 0.0

    def _redis(self) -> redis.Redis:
        if self._client is None:
            # Bytes, decoded per field by `stream_delivery`: one entry that is not UTF-8 must
            # be rejected, not stop the dataflow.
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=5, socket_connect_timeout=5
            )
        return self._client

    def next_batch(self) -> list[Delivery]:
        if stop_requested.is_set():
            raise StopIteration
        try:
            response = self._redis().xread({self.key: self.last_id}, count=self.batch_size)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._backoff_s = min(max(self._backoff_s * 2, 0.5), 30.0)
            log.warning(
                "Redis unavailable at %s (%s); retrying in %.1fs", self.key, exc, self._backoff_s
            )
            health.current().degraded("waiting_for_redis", f"reading {self.key}: {exc}")
            self._client = None
            self._sleep(self._backoff_s)
            return []
        if self._backoff_s:
            log.info("Redis is back; reading %s after %s", self.key, self.last_id)
            self._backoff_s = 0.0
            self._check_stream()
        health.current().ok()
        health.current().beat()
        if not response:
            self._sleep(self.idle_wait_s)
            self._trim()
            return []
        self._awake = None
        batch = []
        for raw_id, fields in response[0][1]:
            self.seq += 1
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            batch.append(stream_delivery(self.key, entry_id, self.seq, fields))
        self.last_id = batch[-1].position
        return batch

    def _check_stream(self) -> None:
        """After an outage: say so when the stream lost entries (a Redis that keeps nothing on
        disk comes back empty). The head-end republishes what the dataflow had not committed
        with the same entry ids (stream.publish.RetainingPublisher); those after our position
        are read, those at or before it were read already."""
        try:
            info = self._redis().xinfo_stream(self.key)
            last = info["last-generated-id"]
            last_id = last.decode() if isinstance(last, bytes) else str(last)
        except redis.ResponseError:
            last_id = None  # no such key
        except redis.RedisError:
            return
        if last_id is None or entry_id_key(last_id) < entry_id_key(self.last_id):
            log.warning(
                "stream %s came back %s (its last id %s is before our position %s): it was "
                "lost or recreated; waiting for the head-end to republish after %s",
                self.key,
                "missing" if last_id is None else "shorter",
                last_id,
                self.last_id,
                self.last_id,
            )

    def _sleep(self, seconds: float) -> None:
        self._awake = datetime.now(UTC) + timedelta(seconds=seconds)

    def _trim(self) -> None:
        """Drop entries older than the retention, counted back from what was read: unread
        entries are never trimmed."""
        now = time.monotonic()
        if now - self._trimmed_at < 60 or self.last_id == "0-0":
            return
        self._trimmed_at = now
        min_id = _entry_ms(self.last_id) - self.retention_ms
        if min_id > 0:
            try:
                self._redis().xtrim(self.key, minid=f"{min_id}-0", approximate=True)
            except redis.RedisError as exc:
                log.warning("could not trim %s: %s", self.key, exc)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> tuple[str, int]:
        return (self.last_id, self.seq)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class RedisStreamSource(FixedPartitionedSource[Delivery, tuple[str, int]]):
    """Reads from Redis Streams, one partition per stream key (shard)."""

    def __init__(
        self, url: str, keys: list[str], batch_size: int = 2000, retention_hours: float = 48.0
    ) -> None:
        self.url = url
        self.keys = keys
        self.batch_size = batch_size
        self.retention_ms = int(retention_hours * 3_600_000)

    def list_parts(self) -> list[str]:
        return list(self.keys)

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[str, int] | None
    ) -> _StreamPartition:
        return _StreamPartition(
            self.url, for_part, self.batch_size, self.retention_ms, resume_state
        )


class ReadsBetween(Protocol):
    """What the simulator source needs of a simulation: its reads with t0 < ts <= t1."""

    def reads_between(self, t0: datetime, t1: datetime) -> Iterable[Mapping[str, Any]]: ...


class SimulatedClock:
    """Simulated time that runs `speedup` times faster than the wall clock until it catches up
    with now, then keeps pace with it. Steps are bounded so that batches stay small."""

    def __init__(self, start: datetime, speedup: float, max_step: timedelta) -> None:
        self.start = start
        self.speedup = speedup
        self.max_step = max_step
        self._wall_start = time.monotonic()
        self._offset = timedelta(0)  # simulated time already covered before this clock began

    def resume_from(self, position: datetime) -> None:
        self._offset = position - self.start

    def target(self, position: datetime) -> datetime:
        elapsed = timedelta(seconds=(time.monotonic() - self._wall_start) * self.speedup)
        wanted = min(self.start + self._offset + elapsed, datetime.now(UTC))
        return min(wanted, position + self.max_step)


class _SimulatorPartition(StatefulSourcePartition[Delivery, tuple[float, int]]):
    def __init__(
        self, simulation: ReadsBetween, clock: SimulatedClock, resume: tuple[float, int] | None
    ) -> None:
        self.simulation = simulation
        self.clock = clock
        self.position = clock.start
        self.seq = 0
        if resume is not None:
            self.position = datetime.fromtimestamp(resume[0], UTC)
            self.seq = resume[1]
            clock.resume_from(self.position)
        self._awake: datetime | None = None

    def next_batch(self) -> list[Delivery]:
        if stop_requested.is_set():
            raise StopIteration
        target = self.clock.target(self.position)
        self._awake = datetime.now(UTC) + timedelta(milliseconds=100)
        if target <= self.position:
            return []
        batch = []
        for row in self.simulation.reads_between(self.position, target):
            self.seq += 1
            name = f"simulator:{row.get('meter_id')}:{row.get('ts')}"
            batch.append(Delivery(name, self.seq, row, None, "simulator", str(row.get("ts"))))
        self.position = target
        return batch

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> tuple[float, int]:
        return (self.position.timestamp(), self.seq)


class SimulatorSource(FixedPartitionedSource[Delivery, tuple[float, int]]):
    """The simulated head-end of the demo, on an accelerated clock."""

    def __init__(self, simulation: ReadsBetween, clock: SimulatedClock) -> None:
        self.simulation = simulation
        self.clock = clock

    def list_parts(self) -> list[str]:
        return ["simulator"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[float, int] | None
    ) -> _SimulatorPartition:
        return _SimulatorPartition(self.simulation, self.clock, resume_state)
