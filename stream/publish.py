"""Publishing reads onto the Redis Stream: what a head-end adapter does.

Entry fields are the reads contract's CSV columns, as given (validation happens in the
dataflow, so that a bad read lands in the rejected table with its reason, never lost here).
With several shards a meter always goes to the same shard, so one meter's reads stay in order.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from stream.reads import READ_COLUMNS
from stream.sources import check_reads_file, entry_id_key, iter_file_deliveries

log = logging.getLogger(__name__)


def shard_for(meter_id: str, shards: int) -> int:
    """The shard of a meter: a stable hash, the same in every process and every run."""
    if shards == 1:
        return 0
    return zlib.crc32(meter_id.encode("utf-8", "replace")) % shards


def stream_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """The entry fields for one read: the contract's columns that are present, as text.
    Anything else a row carries is kept too, so a rejected read keeps its whole payload."""
    entry: dict[str, str] = {}
    for name, value in fields.items():
        if value is None or name is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        entry[str(name)] = text
    return entry


def stream_entry(row: Mapping[str, Any]) -> dict[str, str]:
    """The stream entry of one row, exactly as the dataflow will read it back."""
    # XADD needs at least one field; an empty row is still a delivery
    return stream_fields(row) or {"raw": ""}


def publish(
    client: redis.Redis,
    keys: list[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    pipeline_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """XADD every row onto its meter's shard; returns how many were published."""
    published = 0
    pipe = client.pipeline(transaction=False)
    pending = 0
    for row in rows:
        meter_id = str(row.get("meter_id") or "")
        key = keys[shard_for(meter_id, len(keys))]
        pipe.xadd(key, stream_entry(row))
        pending += 1
        if pending >= pipeline_size:
            pipe.execute()
            published += pending
            if progress:
                progress(pending)
            pending = 0
    if pending:
        pipe.execute()
        published += pending
        if progress:
            progress(pending)
    return published


def publish_file(
    client: redis.Redis,
    keys: list[str],
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Publish a reads file (CSV or JSON lines) row by row, in file order."""
    return publish(client, keys, file_rows(path), progress=progress)


def file_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a reads file as `publish` takes them, in file order."""
    check_reads_file(path)
    return (_row_for_stream(d.fields, d.raw, d.error) for d in iter_file_deliveries(path))


def _row_for_stream(fields: Mapping[str, Any], raw: str | None, error: str | None) -> dict:
    # A row the file reader could not decode travels as its raw text, so the dataflow rejects
    # it with the same reason a file run would give.
    if error is not None:
        return {"raw": raw or "", "decode_error": error}
    return {k: v for k, v in fields.items() if k in READ_COLUMNS or v not in (None, "")}


class RetainingPublisher:
    """A head-end adapter for one stream key that loses nothing when Redis does.

    A Redis that keeps nothing on disk comes back from a restart empty: every entry the
    dataflow had not yet taken is gone. This publisher keeps each entry it published, with the
    id Redis gave it, until the dataflow has committed it (`acknowledge`, with the position
    from pipeline_status) and `keep_s` seconds have passed (so that a dataflow crash, which
    replays from its last snapshot, still finds its entries). After any Redis error it waits,
    retrying with backoff, and then `restore`s: whatever the stream lost is added again with
    its original ids, so the dataflow sees the same deliveries under the same names (a read
    it had stored is not doubled, nor a rejected row counted twice), and takes those after its
    position. One publisher per key: ids it restores must stay above anything else added.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        *,
        keep_s: float = 60.0,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.keep_s = keep_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep or time.sleep
        self._clock = time.monotonic
        # (entry id, fields, when published), in id order
        self.retained: deque[tuple[str, dict[str, str], float]] = deque()
        self.published = 0
        self.restored = 0
        self.outages = 0
        self._run_id: str | None = None  # the Redis server process we published to

    def publish(self, rows: Iterable[Mapping[str, Any]]) -> list[str]:
        """XADD the rows in order (retrying through Redis outages); returns their ids."""
        entries = [stream_entry(row) for row in rows]
        ids: list[str] = []
        while len(ids) < len(entries):
            pending = entries[len(ids) :]
            try:
                # A client reconnects by itself, so a restart between two calls shows no
                # error: the server's run id tells. Restore before adding anything newer.
                self.check_server()
                pipe = self.client.pipeline(transaction=False)
                for entry in pending:
                    pipe.xadd(self.key, entry)
                new_ids = [_text(i) for i in pipe.execute()]
            except redis.RedisError as exc:
                # Some of `pending` may have been added before the error: `restore` finds
                # out which, so nothing is added twice.
                self._outage(exc)
                ids.extend(self._resync(pending))
                continue
            now = self._clock()
            for entry_id, entry in zip(new_ids, pending, strict=True):
                self.retained.append((entry_id, entry, now))
            ids.extend(new_ids)
        self.published += len(entries)
        return ids

    def acknowledge(self, position: str | None) -> None:
        """The dataflow has committed every entry up to `position`: forget those older than
        `keep_s`."""
        if not position:
            return
        done = entry_id_key(position)
        cutoff = self._clock() - self.keep_s
        while self.retained and self.retained[0][2] < cutoff:
            if entry_id_key(self.retained[0][0]) > done:
                break
            self.retained.popleft()

    def restore(self) -> int:
        """Add again, with their ids, the retained entries the stream no longer has (all of
        them after Redis lost the stream); returns how many."""
        last = self._last_id()
        lost = [r for r in self.retained if last is None or entry_id_key(r[0]) > last]
        if not lost:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for entry_id, entry, _ in lost:
            pipe.xadd(self.key, entry, id=entry_id)
        pipe.execute()
        self.restored += len(lost)
        return len(lost)

    def _last_id(self) -> tuple[int, int] | None:
        try:
            info = self.client.xinfo_stream(self.key)
        except redis.ResponseError:  # no such key: the stream is gone
            return None
        return entry_id_key(_text(info["last-generated-id"]))

    def watch(self) -> None:
        """Call every second or so while there is nothing to publish: restores what a Redis
        restart lost even when no new read comes to show it (waiting while Redis is down)."""
        try:
            self.check_server()
        except redis.RedisError as exc:
            self._outage(exc)

    def check_server(self) -> None:
        """Restore what the stream lost when the Redis server is not the one published to."""
        run_id = str(self.client.info("server")["run_id"])
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted (run id %s, was %s)", run_id, self._run_id)
            restored = self.restore()
            if restored:
                log.warning("Redis lost %d entries of %s: republished", restored, self.key)
        self._run_id = run_id

    def _outage(self, exc: Exception) -> None:
        self.outages += 1
        delay = 0.2
        while True:
            log.warning("Redis unavailable (%s); publisher retrying in %.1fs", exc, delay)
            self._sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)
            try:
                self.check_server()
                return
            except redis.RedisError as again:
                exc = again

    def _resync(self, pending: list[dict[str, str]]) -> list[str]:
        """After an error mid-pipeline: the ids of the `pending` entries that made it into the
        stream before it (they are the stream's newest, in order), now retained."""
        try:
            newest = self.client.xrevrange(self.key, count=len(pending))
        except redis.RedisError:
            return []
        known = {r[0] for r in self.retained}
        added = [(_text(i), f) for i, f in reversed(newest) if _text(i) not in known]
        took: list[str] = []
        now = self._clock()
        for (entry_id, fields), entry in zip(added, pending, strict=False):
            if {_text(k): _text(v) for k, v in fields.items()} != entry:
                break
            self.retained.append((entry_id, entry, now))
            took.append(entry_id)
        return took


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
