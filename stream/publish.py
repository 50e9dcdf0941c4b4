"""Publishing reads onto the Redis Stream: what a head-end adapter does.

Entry fields are the reads contract's CSV columns, as given (validation happens in the
dataflow, so that a bad read lands in the rejected table with its reason, never lost here).
With several shards a meter always goes to the same shard, so one meter's reads stay in order.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import redis

from stream.reads import READ_COLUMNS
from stream.sources import check_reads_file, iter_file_deliveries


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
        entry = stream_fields(row)
        if not entry:  # XADD needs at least one field; an empty row is still a delivery
            entry = {"raw": ""}
        pipe.xadd(key, entry)
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
    check_reads_file(path)
    rows = (_row_for_stream(d.fields, d.raw, d.error) for d in iter_file_deliveries(path))
    return publish(client, keys, rows, progress=progress)


def _row_for_stream(fields: Mapping[str, Any], raw: str | None, error: str | None) -> dict:
    # A row the file reader could not decode travels as its raw text, so the dataflow rejects
    # it with the same reason a file run would give.
    if error is not None:
        return {"raw": raw or "", "decode_error": error}
    return {k: v for k, v in fields.items() if k in READ_COLUMNS or v not in (None, "")}
