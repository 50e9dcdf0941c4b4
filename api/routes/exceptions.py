"""The exception queues: rejected reads and reads no bill may take as they are (unmatched).

Assigning an unmatched meter to a service point creates the assignment (and bumps the
`assignments` data version, so that the dataflow reloads it), then reprocesses the meter's
queued reads: they are published back onto the reads stream, where the dataflow matches them
now, and marked resolved — in that order, in one transaction, so that nothing is lost: when
Redis is down or not configured the reads stay in the queue, unresolved, and the answer says so.

The dataflow rereads assignments every ASSIGNMENTS_REFRESH_S; a read republished before it has
would be queued again (as a duplicate of the resolved row). Such a read shows `stored: false`
while resolved, and reprocessing the meter again publishes it again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import psycopg
import redis
from fastapi import APIRouter, HTTPException, Path, Query, status
from psycopg import sql
from psycopg.rows import class_row

from api.deps import ConnDep, Operator, ResourcesDep, StaffReader
from api.resources import Resources
from api.routes.common import not_found
from api.schemas import (
    AssignmentCreate,
    RejectedPublic,
    ReprocessPublic,
    ResolveCreate,
    UnmatchedPublic,
    UnmatchedReprocessCreate,
    UnmatchedResolveCreate,
)
from api.security import Principal
from meterwatch.db import record_audit
from stream.publish import publish
from stream.reads import UNITS

router = APIRouter(prefix="/exceptions", tags=["exceptions"])

LimitQuery = Annotated[int, Query(ge=1, le=1000)]
OffsetQuery = Annotated[int, Query(ge=0, le=10_000_000)]
UnmatchedReason = Literal[
    "unknown_meter", "retired_meter", "not_yet_installed", "ambiguous_assignment"
]
REPROCESSED = "reprocessed"  # how a resolution by reprocessing begins


@router.get("/rejected", response_model=list[RejectedPublic])
def read_rejected(
    conn: ConnDep,
    principal: StaffReader,
    resolved: Annotated[bool | None, Query(description="null: both")] = False,
    meter_id: Annotated[str | None, Query(max_length=64)] = None,
    reason_contains: Annotated[str | None, Query(max_length=200)] = None,
    limit: LimitQuery = 100,
    offset: OffsetQuery = 0,
) -> list[RejectedPublic]:
    """Rejected reads with their raw payload and reason, newest first."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if resolved is not None:
        conditions.append(sql.SQL(f"resolved_at IS {'NOT ' if resolved else ''}NULL"))
    if meter_id is not None:
        conditions.append(sql.SQL("meter_id = %s"))
        params.append(meter_id)
    if reason_contains:
        conditions.append(sql.SQL("strpos(lower(reason), lower(%s)) > 0"))
        params.append(reason_contains)
    query = sql.SQL(
        """SELECT rejected_id, received_at, reason, raw, meter_id, resolved_at, resolved_by,
                  resolution FROM rejected_reads WHERE {}
            ORDER BY received_at DESC, rejected_id DESC LIMIT %s OFFSET %s"""
    ).format(sql.SQL(" AND ").join(conditions))
    with conn.cursor(row_factory=class_row(RejectedPublic)) as cur:
        return cur.execute(query, [*params, limit, offset]).fetchall()


@router.post(
    "/rejected/{rejected_id}/resolve",
    response_model=RejectedPublic,
    responses={409: {"description": "resolved already"}},
)
def resolve_rejected(
    conn: ConnDep,
    principal: Operator,
    rejected_id: Annotated[int, Path(ge=1, le=2**62)],
    body: ResolveCreate,
) -> RejectedPublic:
    """Mark a rejected read as dealt with (corrected at the head-end and resent, or not a
    read), with the reason."""
    with conn.cursor(row_factory=class_row(RejectedPublic)) as cur:
        row = cur.execute(
            """UPDATE rejected_reads SET resolved_at = now(), resolved_by = %s, resolution = %s
                WHERE rejected_id = %s AND resolved_at IS NULL
            RETURNING rejected_id, received_at, reason, raw, meter_id, resolved_at, resolved_by,
                      resolution""",
            (principal.actor, body.reason, rejected_id),
        ).fetchone()
    if row is None:
        exists = conn.execute(
            "SELECT resolved_by FROM rejected_reads WHERE rejected_id = %s", (rejected_id,)
        ).fetchone()
        if exists is None:
            raise not_found(f"no rejected read {rejected_id}")
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"rejected read {rejected_id} was resolved already by {exists[0]}",
        )
    record_audit(
        conn,
        actor=principal.actor,
        action="resolve_rejected",
        entity="rejected_read",
        entity_id=str(rejected_id),
        reason=body.reason,
    )
    return row


@router.get("/unmatched", response_model=list[UnmatchedPublic])
def read_unmatched(
    conn: ConnDep,
    principal: StaffReader,
    reason: UnmatchedReason | None = None,
    meter_id: Annotated[str | None, Query(max_length=64)] = None,
    resolved: Annotated[bool | None, Query(description="null: both")] = False,
    limit: LimitQuery = 100,
    offset: OffsetQuery = 0,
) -> list[UnmatchedPublic]:
    """The exception queue, by meter and time; `stored` says whether a reprocessed read has
    reached the reads table."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    if resolved is not None:
        conditions.append(sql.SQL(f"u.resolved_at IS {'NOT ' if resolved else ''}NULL"))
    for column, value in (("reason", reason), ("meter_id", meter_id)):
        if value is not None:
            conditions.append(sql.SQL("u.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    query = sql.SQL(
        """SELECT u.meter_id, u.ts, u.value, u.reported_unit, u.register, u.quality, u.reason,
                  u.detail, u.received_at, u.resolved_at, u.resolved_by, u.resolution,
                  EXISTS (SELECT 1 FROM reads r WHERE r.meter_id = u.meter_id AND r.ts = u.ts)
                    AS stored
             FROM unmatched_reads AS u WHERE {}
            ORDER BY u.meter_id, u.ts LIMIT %s OFFSET %s"""
    ).format(sql.SQL(" AND ").join(conditions))
    with conn.cursor(row_factory=class_row(UnmatchedPublic)) as cur:
        return cur.execute(query, [*params, limit, offset]).fetchall()


@router.post("/unmatched/resolve", response_model=ReprocessPublic)
def resolve_unmatched(
    conn: ConnDep, principal: Operator, body: UnmatchedResolveCreate
) -> ReprocessPublic:
    """Close a meter's queued reads without billing them (a test meter, a bench read), with
    the reason."""
    rows = conn.execute(
        """UPDATE unmatched_reads SET resolved_at = now(), resolved_by = %s, resolution = %s
            WHERE meter_id = %s AND resolved_at IS NULL RETURNING ts""",
        (principal.actor, f"dismissed: {body.reason}", body.meter_id),
    ).fetchall()
    if not rows:
        raise not_found(f"meter {body.meter_id!r} has no open reads in the exception queue")
    record_audit(
        conn,
        actor=principal.actor,
        action="resolve_unmatched",
        entity="meter",
        entity_id=body.meter_id,
        reason=body.reason,
        details={"reads": len(rows)},
    )
    return ReprocessPublic(
        meter_id=body.meter_id, assignment_id=None, republished=0, still_open=0, note=None
    )


@router.post(
    "/unmatched/assign",
    response_model=ReprocessPublic,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "the assignment overlaps another of the meter"}},
)
def assign_unmatched_meter(
    conn: ConnDep, resources: ResourcesDep, principal: Operator, body: AssignmentCreate
) -> ReprocessPublic:
    """Assign a meter to a service point and account from `valid_from` (until `valid_to`, or
    for good), then reprocess its queued reads (module docstring)."""
    if body.valid_to is not None and body.valid_to <= body.valid_from:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="valid_to must be after valid_from (leave it out for a current assignment)",
        )
    if (
        conn.execute("SELECT 1 FROM accounts WHERE account_id = %s", (body.account_id,)).fetchone()
        is None
    ):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"no account {body.account_id!r}: import it (meterwatch import-accounts) first",
        )
    conn.execute(
        "INSERT INTO meters (meter_id) VALUES (%s) ON CONFLICT DO NOTHING", (body.meter_id,)
    )
    conn.execute(
        "INSERT INTO service_points (service_point_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (body.service_point_id,),
    )
    try:
        with conn.transaction():
            row = conn.execute(
                """INSERT INTO meter_assignments (meter_id, service_point_id, account_id,
                                                  valid_from, valid_to)
                   VALUES (%s, %s, %s, %s, %s) RETURNING assignment_id""",
                (
                    body.meter_id,
                    body.service_point_id,
                    body.account_id,
                    body.valid_from,
                    body.valid_to,
                ),
            ).fetchone()
    except (psycopg.errors.ExclusionViolation, psycopg.errors.UniqueViolation):
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"meter {body.meter_id!r} already has an assignment overlapping "
            f"{body.valid_from.isoformat()}: end that one first (a meter is at one service "
            "point at a time)",
        ) from None
    assert row is not None
    conn.execute(
        "UPDATE data_versions SET version = version + 1, changed_at = now() "
        "WHERE name = 'assignments'"
    )
    record_audit(
        conn,
        actor=principal.actor,
        action="assign_meter",
        entity="meter_assignment",
        entity_id=body.account_id,
        reason=body.reason,
        details={
            "assignment_id": row[0],
            "meter_id": body.meter_id,
            "service_point_id": body.service_point_id,
            "valid_from": body.valid_from.isoformat(),
            "valid_to": None if body.valid_to is None else body.valid_to.isoformat(),
        },
    )
    conn.commit()  # the assignment stands whatever happens to the reprocessing
    result = _reprocess(conn, resources, principal, body.meter_id, body.reason)
    return result.model_copy(update={"assignment_id": row[0]})


@router.post("/unmatched/reprocess", response_model=ReprocessPublic)
def reprocess_unmatched(
    conn: ConnDep, resources: ResourcesDep, principal: Operator, body: UnmatchedReprocessCreate
) -> ReprocessPublic:
    """Publish a meter's queued reads that an assignment now covers back onto the stream (and
    reprocessed reads that never reached the reads table), resolving them."""
    return _reprocess(conn, resources, principal, body.meter_id, body.reason)


def _stream_row(row: tuple[Any, ...]) -> dict[str, str]:
    meter_id, ts, value, reported_unit, register, quality = row
    fields = {"meter_id": meter_id, "ts": ts.isoformat()}
    if register is not None:  # the register as reported: the flow derives the interval again
        fields |= {"kind": "register", "value": repr(register), "unit": reported_unit}
    else:  # the stored value is in the base unit already
        fields |= {"value": repr(value), "unit": UNITS[reported_unit][0]}
    if quality is not None:
        fields["quality"] = quality
    return fields


def _reprocess(
    conn: psycopg.Connection,
    resources: Resources,
    principal: Principal,
    meter_id: str,
    reason: str,
) -> ReprocessPublic:
    covered = """EXISTS (SELECT 1 FROM meter_assignments m
                          WHERE m.meter_id = u.meter_id AND m.valid_from <= u.ts
                            AND (m.valid_to IS NULL OR u.ts < m.valid_to))"""
    rows = conn.execute(
        f"""SELECT u.meter_id, u.ts, u.value, u.reported_unit, u.register, u.quality
              FROM unmatched_reads AS u
             WHERE u.meter_id = %s AND {covered}
               AND (u.resolved_at IS NULL
                    OR (u.resolution LIKE %s AND NOT EXISTS
                          (SELECT 1 FROM reads r WHERE r.meter_id = u.meter_id AND r.ts = u.ts)))
             ORDER BY u.ts FOR UPDATE OF u""",
        (meter_id, f"{REPROCESSED}%"),
    ).fetchall()
    open_row = conn.execute(
        "SELECT count(*) FROM unmatched_reads WHERE meter_id = %s AND resolved_at IS NULL",
        (meter_id,),
    ).fetchone()
    still_open = open_row[0] if open_row else 0
    if not rows:
        return ReprocessPublic(
            meter_id=meter_id,
            assignment_id=None,
            republished=0,
            still_open=still_open,
            note="no queued read of this meter is covered by an assignment",
        )
    if resources.redis is None:
        conn.rollback()
        return ReprocessPublic(
            meter_id=meter_id,
            assignment_id=None,
            republished=0,
            still_open=still_open,
            note="no Redis configured (REDIS_URL): the reads stay in the queue; reprocess "
            "them when the stream is available",
        )
    try:
        publish(resources.redis, resources.settings.stream_keys, [_stream_row(r) for r in rows])
    except redis.RedisError as exc:
        conn.rollback()
        return ReprocessPublic(
            meter_id=meter_id,
            assignment_id=None,
            republished=0,
            still_open=still_open,
            note=f"Redis unreachable ({type(exc).__name__}): the reads stay in the queue; "
            "reprocess them when it is back",
        )
    resolution = f"{REPROCESSED} onto the reads stream: {reason}"
    conn.execute(
        """UPDATE unmatched_reads SET resolved_at = now(), resolved_by = %s, resolution = %s
            WHERE meter_id = %s AND ts = ANY(%s)""",
        (principal.actor, resolution, meter_id, [r[1] for r in rows]),
    )
    record_audit(
        conn,
        actor=principal.actor,
        action="reprocess_unmatched",
        entity="meter",
        entity_id=meter_id,
        reason=reason,
        details={
            "reads": len(rows),
            "first": rows[0][1].isoformat(),
            "last": rows[-1][1].isoformat(),
        },
    )
    conn.commit()
    left = conn.execute(
        "SELECT count(*) FROM unmatched_reads WHERE meter_id = %s AND resolved_at IS NULL",
        (meter_id,),
    ).fetchone()
    return ReprocessPublic(
        meter_id=meter_id,
        assignment_id=None,
        republished=len(rows),
        still_open=left[0] if left else 0,
        note=f"the dataflow matches them once it has reloaded the assignments (within "
        f"{resources.settings.assignments_refresh_s:g} s); check `stored` in the queue",
    )
