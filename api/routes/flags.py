"""Flags: findings about one meter over a time span, and their review by staff."""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from api import queries
from api.deps import ConnDep, Reviewer, SettingsDep, StaffAccess, StaffReader
from api.routes.common import FlagIdPath, not_found
from api.schemas import (
    FlagBulkReviewCreate,
    FlagBulkReviewPublic,
    FlagDetailPublic,
    FlagPublic,
    FlagReviewCreate,
)
from billing.periods import period_starting
from meterwatch import reports
from meterwatch.db import record_audit

router = APIRouter(prefix="/flags", tags=["flags"])

LimitQuery = Annotated[int, Query(ge=1, le=500, description="how many flags (1-500)")]
Status = Literal["open", "confirmed", "dismissed", "resolved"]
Severity = Literal["low", "medium", "high", "critical"]


@router.get("/latest", response_model=list[FlagPublic], dependencies=[StaffAccess])
def read_latest_flags(conn: ConnDep, limit: LimitQuery = 20) -> list[FlagPublic]:
    """The most recently detected flags, newest detection (data time) first."""
    return [FlagPublic.model_validate(flag) for flag in reports.latest_flags(conn, limit)]


def cycle_filter(
    tz: tzinfo, cycle_day: int | None, period_start: date | None
) -> tuple[int | None, datetime | None, datetime | None]:
    """(cycle_day, period start, period end in UTC) of a billing-cycle filter; 422 when only
    half of it is given or no period of that cycle day starts then."""
    if period_start is None:
        return cycle_day, None, None
    if cycle_day is None:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="period_start needs cycle_day: a billing cycle is a cycle day and a period",
        )
    try:
        period = period_starting(period_start, cycle_day)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)
        ) from None
    starts, ends = period.bounds(tz)
    return cycle_day, starts, ends


@router.get("", response_model=list[FlagDetailPublic])
def read_flags(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
    cycle_day: Annotated[int | None, Query(ge=1, le=31, description="billing cycle day")] = None,
    period_start: Annotated[
        date | None, Query(description="with cycle_day: flags overlapping that period")
    ] = None,
    limit: LimitQuery = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[FlagDetailPublic]:
    """Flags for review, most severe and newest first, filtered by status, kind, severity,
    account and billing cycle (cycle_day alone: its accounts; with period_start: the flags
    overlapping that period)."""
    day, starts, ends = cycle_filter(settings.tz, cycle_day, period_start)
    spec = queries.FlagFilter(
        status=status_,
        kind=kind,
        severity=severity,
        account_id=account_id,
        cycle_day=day,
        period_starts_at=starts,
        period_ends_at=ends,
    )
    return [
        FlagDetailPublic.model_validate(f) for f in queries.find_flags(conn, spec, limit, offset)
    ]


def _check_review(review: FlagReviewCreate) -> None:
    if review.expected_use and review.status != "dismissed":
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="expected_use goes with status dismissed: the use was expected, so the flag "
            "is dismissed",
        )


def _review(
    conn: ConnDep, principal: Reviewer, flag_ids: list[int], review: FlagReviewCreate
) -> list[int]:
    before = {
        f.flag_id: f
        for f in (queries.flag(conn, flag_id) for flag_id in sorted(set(flag_ids)))
        if f is not None
    }
    updated = queries.set_flag_status(
        conn,
        sorted(before),
        status=review.status,
        reason=review.reason,
        actor=principal.actor,
        expected_use=review.expected_use,
    )
    for flag_id in updated:
        record_audit(
            conn,
            actor=principal.actor,
            action="review_flag",
            entity="flag",
            entity_id=str(flag_id),
            reason=review.reason,
            details={
                "account_id": before[flag_id].account_id,
                "from": before[flag_id].status,
                "to": review.status,
                "expected_use": review.expected_use,
            },
        )
    return updated


@router.post("/{flag_id}/review", response_model=FlagDetailPublic)
def review_flag(
    conn: ConnDep, principal: Reviewer, flag_id: FlagIdPath, review: FlagReviewCreate
) -> FlagDetailPublic:
    """Confirm, dismiss (as expected use, if it was) or resolve a flag, or reopen it, with the
    reason; recorded in the audit log."""
    _check_review(review)
    if not _review(conn, principal, [flag_id], review):
        raise not_found(f"no flag {flag_id}")
    return FlagDetailPublic.model_validate(queries.flag(conn, flag_id))


@router.post("/review", response_model=FlagBulkReviewPublic)
def review_flags(
    conn: ConnDep, principal: Reviewer, review: FlagBulkReviewCreate
) -> FlagBulkReviewPublic:
    """The same review for many flags at once (at most 500), in one transaction; ids that are
    no flag are listed as missing."""
    _check_review(review)
    updated = _review(conn, principal, review.flag_ids, review)
    return FlagBulkReviewPublic(
        updated=updated, missing=sorted(set(review.flag_ids) - set(updated))
    )
