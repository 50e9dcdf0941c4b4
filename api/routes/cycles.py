"""Billing cycles: the accounts sharing a cycle day over one period, whether their flags are
reviewed, and closing the cycle."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, status
from psycopg.rows import class_row

from api import queries
from api.deps import ConnDep, CycleCloser, SettingsDep, StaffReader
from api.schemas import (
    BlockingKindPublic,
    CycleCloseCreate,
    CycleClosePublic,
    CyclePublic,
    CycleReadinessPublic,
    FlagDetailPublic,
)
from billing.periods import Period, period_starting, recent_periods
from meterwatch.db import record_audit
from meterwatch.settings import Settings

router = APIRouter(prefix="/billing-cycles", tags=["billing"])

CycleDayPath = Annotated[int, Path(ge=1, le=31, description="the accounts' cycle day")]
PeriodStartPath = Annotated[date, Path(description="first day of the period")]
# Review statuses that keep a cycle from closing: nobody has settled these flags yet.
BLOCKING_STATUSES = ("open", "confirmed")


def _period(cycle_day: int, period_start: date) -> Period:
    try:
        return period_starting(period_start, cycle_day)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=str(exc)) from None


def _blocking_spec(period: Period, settings: Settings, status_: str) -> queries.FlagFilter:
    starts, ends = period.bounds(settings.tz)
    return queries.FlagFilter(
        status=status_, cycle_day=period.cycle_day, period_starts_at=starts, period_ends_at=ends
    )


def _blocking_by_kind(
    conn: psycopg.Connection, period: Period, settings: Settings
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status_ in BLOCKING_STATUSES:
        for kind, n in queries.count_flags_by_kind(
            conn, _blocking_spec(period, settings, status_)
        ).items():
            counts[kind] = counts.get(kind, 0) + n
    return dict(sorted(counts.items()))


def _closed(conn: psycopg.Connection, period: Period) -> CycleClosePublic | None:
    with conn.cursor(row_factory=class_row(CycleClosePublic)) as cur:
        return cur.execute(
            """SELECT cycle_day, period_start, period_end, closed_at, closed_by, overridden,
                      reason, blocking_flags
                 FROM billing_cycle_closes WHERE cycle_day = %s AND period_start = %s""",
            (period.cycle_day, period.start),
        ).fetchone()


def _cycle(conn: psycopg.Connection, period: Period, settings: Settings) -> CyclePublic:
    row = conn.execute(
        "SELECT count(*) FROM accounts WHERE cycle_day = %s", (period.cycle_day,)
    ).fetchone()
    closed = _closed(conn, period)
    return CyclePublic(
        cycle_day=period.cycle_day,
        period_start=period.start,
        period_end=period.end,
        accounts=row[0] if row else 0,
        blocking_flags=sum(_blocking_by_kind(conn, period, settings).values()),
        closed_at=closed.closed_at if closed else None,
        closed_by=closed.closed_by if closed else None,
    )


@router.get("", response_model=list[CyclePublic])
def read_cycles(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    periods: Annotated[int, Query(ge=1, le=12, description="periods per cycle day")] = 3,
) -> list[CyclePublic]:
    """Every billing cycle of the accounts' cycle days: the current period and the ones before
    it, with how many accounts and how many unresolved flags block closing it."""
    days = [r[0] for r in conn.execute("SELECT DISTINCT cycle_day FROM accounts ORDER BY 1")]
    today = datetime.now(settings.tz).date()
    return [
        _cycle(conn, period, settings)
        for day in days
        for period in recent_periods(today, day, periods)
    ]


@router.get("/{cycle_day}/{period_start}", response_model=CycleReadinessPublic)
def read_cycle_readiness(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    cycle_day: CycleDayPath,
    period_start: PeriodStartPath,
) -> CycleReadinessPublic:
    """Whether the cycle can close: the unresolved flags (open or confirmed) of its accounts
    that overlap the period, by kind, and the flags themselves."""
    period = _period(cycle_day, period_start)
    cycle = _cycle(conn, period, settings)
    by_kind = _blocking_by_kind(conn, period, settings)
    blocking = [
        flag
        for status_ in BLOCKING_STATUSES
        for flag in queries.find_flags(conn, _blocking_spec(period, settings, status_), 500)
    ][:500]
    return CycleReadinessPublic(
        **cycle.model_dump(),
        ready=not by_kind,
        blocking_by_kind=[BlockingKindPublic(kind=k, flags=n) for k, n in by_kind.items()],
        blocking=[FlagDetailPublic.model_validate(f) for f in blocking],
    )


@router.post(
    "/{cycle_day}/{period_start}/close",
    response_model=CycleClosePublic,
    responses={409: {"description": "flags block closing, the period has not ended, or the "
                                    "cycle is closed already"}},
)  # fmt: skip
def close_cycle(
    conn: ConnDep,
    settings: SettingsDep,
    principal: CycleCloser,
    cycle_day: CycleDayPath,
    period_start: PeriodStartPath,
    body: CycleCloseCreate,
) -> CycleClosePublic:
    """Close a billing cycle once its period has ended. Refused (409) while unresolved flags
    overlap it, unless `override` is set with a `reason` (billing or admin role). Recorded once,
    with an audit entry."""
    period = _period(cycle_day, period_start)
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('billing_cycle_close'), %s)", (cycle_day,))
    closed = _closed(conn, period)
    if closed is not None:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"cycle {cycle_day} of {period.start} was closed by {closed.closed_by} at "
            f"{closed.closed_at.isoformat()}",
        )
    today = datetime.now(settings.tz).date()
    if period.end > today:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"the period runs until {period.end.isoformat()}: close it after it ends",
        )
    blocking = sum(_blocking_by_kind(conn, period, settings).values())
    if blocking and not body.override:
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"{blocking} unresolved flag(s) overlap this period: review them "
            f"(GET /v1/billing-cycles/{cycle_day}/{period.start}), or override with a reason",
        )
    if body.override and not body.reason:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="an override needs a reason: say why the cycle closes with flags open",
        )
    with conn.cursor(row_factory=class_row(CycleClosePublic)) as cur:
        row = cur.execute(
            """INSERT INTO billing_cycle_closes (cycle_day, period_start, period_end, closed_by,
                                                 overridden, reason, blocking_flags)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               RETURNING cycle_day, period_start, period_end, closed_at, closed_by, overridden,
                         reason, blocking_flags""",
            (
                cycle_day,
                period.start,
                period.end,
                principal.actor,
                bool(body.override and blocking),
                body.reason,
                blocking,
            ),
        ).fetchone()
    record_audit(
        conn,
        actor=principal.actor,
        action="close_billing_cycle",
        entity="billing_cycle",
        entity_id=f"{cycle_day}/{period.start.isoformat()}",
        reason=body.reason,
        details={"blocking_flags": blocking, "override": bool(body.override and blocking)},
    )
    assert row is not None
    return row
