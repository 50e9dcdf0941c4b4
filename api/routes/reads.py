"""Ingest: a head-end (or staff) posts interval reads; the API puts them on the reads stream,
where the dataflow takes them like any other delivery.

The body is a JSON array of objects or a CSV with a header, by `Content-Type`
(`application/json`, `text/csv`), with the columns of the reads contract (meter_id, ts, value,
unit, kind, quality). Every row is validated with the dataflow's own parser and the answer lists
the invalid ones with their reasons. Invalid rows are published too, so that they land in the
rejected-reads table with their raw payload like any bad delivery (a bad read is never dropped
silently) — unless `strict=true`, which publishes nothing when any row is invalid (422).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis
from anyio import to_thread
from fastapi import APIRouter, HTTPException, Query, Request, status

from api.deps import Ingester, ResourcesDep
from api.resources import describe_redis, first_line
from api.schemas import IngestErrorPublic, IngestPublic
from stream.publish import publish, stream_entry
from stream.reads import READ_COLUMNS, Rejected, parse_delivery
from stream.sources import stream_delivery

router = APIRouter(prefix="/reads", tags=["ingest"])

# How many invalid rows the answer names (the rest are counted).
MAX_ERRORS_SHOWN = 1000
_READ_SCHEMA = {
    "type": "object",
    "properties": {
        "meter_id": {"type": "string"},
        "ts": {"type": "string", "description": "end of the interval, ISO 8601 with offset"},
        "value": {"type": ["number", "string"]},
        "unit": {"type": "string", "enum": ["gal", "ft3", "m3", "kWh"]},
        "kind": {"type": "string", "enum": ["interval", "register"]},
        "quality": {"type": "string"},
    },
    "required": ["meter_id", "ts", "value"],
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "array", "items": _READ_SCHEMA}},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "meter_id,ts,value\nM1,2026-03-01T14:15:00-05:00,3.5\n",
            },
        },
    }
}


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes without reading further."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    stream: AsyncIterator[bytes] = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"the body is larger than {limit:,} bytes (API_MAX_INGEST_BYTES): send the "
        "reads in several requests",
    )


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _rows(content_type: str, body: bytes) -> tuple[list[dict[str, Any]], int]:
    """The rows of the body and the number of the first one (JSON: 0, CSV: 2)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unprocessable(f"the body is not UTF-8 (byte {exc.start}): send UTF-8") from None
    if content_type == "application/json":
        try:
            data = json.loads(text)
        except RecursionError:
            raise _unprocessable(
                "the body's JSON is nested too deeply: send an array of flat objects"
            ) from None
        except ValueError as exc:
            raise _unprocessable(f"the body is not JSON: {exc}") from None
        if not isinstance(data, list):
            raise _unprocessable('send a JSON array of reads: [{"meter_id": ..., ...}]')
        return [item if isinstance(item, dict) else {"raw": json.dumps(item)} for item in data], 0
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        if not {"meter_id", "ts", "value"} <= set(header):
            raise _unprocessable(
                "the CSV header needs meter_id, ts and value (optional: unit, kind, quality)"
            )
        rows = []
        for row in reader:
            clean = {(k or "").strip(): v for k, v in row.items() if k is not None}
            if None in row:  # more cells than the header has columns: keep them for the record
                clean["extra"] = json.dumps(row[None])
            rows.append(clean)
    except csv.Error as exc:  # e.g. a field past the csv module's size limit
        raise _unprocessable(f"the CSV is unreadable at line {reader.line_num}: {exc}") from None
    return rows, 2


def _check_text(rows: list[dict[str, Any]], first: int) -> None:
    """Refuse (422) a body whose JSON strings hold lone UTF-16 surrogates: JSON can spell them
    (\\ud800) but they are not text, and the stream carries UTF-8."""
    for index, row in enumerate(rows):
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _unprocessable(
                f"row {index + first} holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff"
                " escape): send valid Unicode"
            ) from None


@router.post(
    "",
    response_model=IngestPublic,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=_BODY,
    responses={
        413: {"description": "too large"},
        415: {"description": "neither JSON nor CSV"},
        422: {"description": "unreadable body, or invalid rows with strict=true"},
        503: {"description": "the reads stream (Redis) is not available"},
    },
)
async def create_reads(
    request: Request,
    resources: ResourcesDep,
    principal: Ingester,
    strict: Annotated[
        bool, Query(description="publish nothing when any row is invalid (422)")
    ] = False,
) -> IngestPublic:
    """Put reads on the reads stream (module docstring); 202: the dataflow stores them soon."""
    settings = resources.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", "text/csv"):
        raise HTTPException(
            status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send Content-Type application/json (an array of reads) or text/csv",
        )
    body = await _body(request, settings.api_max_ingest_bytes)
    rows, first = _rows(content_type, body)
    if len(rows) > settings.api_max_ingest_reads:
        raise HTTPException(
            status_code=status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{len(rows):,} reads in one request: send at most "
            f"{settings.api_max_ingest_reads:,} (API_MAX_INGEST_READS)",
        )
    _check_text(rows, first)
    publishable = [{k: v for k, v in row.items() if k in READ_COLUMNS or v} for row in rows]
    errors = []
    for index, row in enumerate(publishable):
        # Validated as the dataflow will see it: the stream entry, read back as a delivery.
        parsed = parse_delivery(stream_delivery("api", f"{index}-0", index, stream_entry(row)))
        if isinstance(parsed, Rejected):
            errors.append(IngestErrorPublic(row=index + first, reason=parsed.reason))
    if strict and errors:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail={
                "message": f"{len(errors)} invalid row(s); nothing was published",
                "errors": [e.model_dump() for e in errors[:MAX_ERRORS_SHOWN]],
            },
        )
    published = 0
    if rows:
        client = resources.redis
        if client is None:
            raise HTTPException(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="no reads stream: REDIS_URL is not set",
            )
        try:
            published = await to_thread.run_sync(
                lambda: publish(client, settings.stream_keys, publishable)
            )
        except redis.RedisError as exc:
            where = describe_redis(settings.redis_url or "")
            raise HTTPException(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"Redis unreachable at {where}: {first_line(exc)}; send the reads "
                "again (reads already published are stored once: a repeat is a duplicate)",
            ) from None
    return IngestPublic(
        received=len(rows),
        published=published,
        invalid=len(errors),
        errors=errors[:MAX_ERRORS_SHOWN],
    )
