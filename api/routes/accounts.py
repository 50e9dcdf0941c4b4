"""The single account view staff resolve disputes from, its bill previews, and the contact log."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api import queries
from api.deps import ConnDep, Reviewer, SettingsDep, StaffReader
from api.routes.common import AccountIdPath, staff_account
from api.schemas import (
    AccountPublic,
    AccountViewPublic,
    AlertPublic,
    AlertSettingsPublic,
    AssignmentPublic,
    AuditPublic,
    BillPreviewPublic,
    ContactCreate,
    ContactPublic,
    CustomerPublic,
    DeclaredUsagePublic,
    FlagDetailPublic,
    ReadPublic,
    ServicePointPublic,
    UsageHistoryPublic,
)
from api.usage import Resolution, check_window, default_window, usage_history
from billing.periods import period_containing, period_starting, recent_periods
from billing.preview import BillPreview, bill_preview
from meterwatch.db import record_audit

router = APIRouter(prefix="/accounts", tags=["accounts"])


def preview_public(preview: BillPreview) -> BillPreviewPublic:
    return BillPreviewPublic.model_validate(
        {
            **vars(preview),
            "period_start": preview.period.start,
            "period_end": preview.period.end,
            "bill": None if preview.bill is None else vars(preview.bill),
        }
    )


@router.get("/{account_id}", response_model=AccountViewPublic)
def read_account(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    account_id: AccountIdPath,
    reads: Annotated[int, Query(ge=1, le=2000, description="newest reads to include")] = 96,
    periods: Annotated[
        int, Query(ge=1, le=24, description="bill previews: current period and earlier")
    ] = 3,
) -> AccountViewPublic:
    """Everything about one account in one call: the customer, the service points with their
    meter history (exchanges included), recent reads marked estimated or not, flags with their
    evidence, bill previews for the current and past periods, alerts with every delivery
    attempt, the contact log, declared expected use, alert rules and the audit trail."""
    account = staff_account(conn, account_id)
    history: dict[str, list[queries.AssignmentRow]] = defaultdict(list)
    for assignment in queries.assignments(conn, account_id):
        history[assignment.service_point_id].append(assignment)
    flags = queries.account_flags(conn, account_id, 200)
    today = datetime.now(settings.tz).date()
    previews = [
        preview_public(bill_preview(conn, account_id, account.rate_plan, period, settings.tz))
        for period in recent_periods(today, account.cycle_day, periods)
    ]
    settings_row = queries.alert_settings(conn, account_id)
    return AccountViewPublic(
        customer=CustomerPublic.model_validate(queries.customer(conn, account.customer_id)),
        account=AccountPublic.model_validate(account),
        service_points=[
            ServicePointPublic(
                service_point_id=point,
                meters=[AssignmentPublic.model_validate(a) for a in rows],
            )
            for point, rows in history.items()
        ],
        recent_reads=[
            ReadPublic.model_validate(r) for r in queries.recent_reads(conn, account_id, reads)
        ],
        flags=[FlagDetailPublic.model_validate(f) for f in flags],
        bills=previews,
        alerts=[
            AlertPublic.model_validate(a) for a in queries.account_alerts(conn, account_id, 100)
        ],
        contacts=[ContactPublic.model_validate(c) for c in queries.contacts(conn, account_id)],
        declared_usage=[
            DeclaredUsagePublic.model_validate(d) for d in queries.declared_usage(conn, account_id)
        ],
        alert_settings=None
        if settings_row is None
        else AlertSettingsPublic.model_validate(settings_row),
        audit=[
            AuditPublic.model_validate(a)
            for a in queries.audit_trail(conn, account_id, [f.flag_id for f in flags])
        ],
    )


@router.get("/{account_id}/bill-preview", response_model=BillPreviewPublic)
def read_bill_preview(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    account_id: AccountIdPath,
    period_start: Annotated[
        date | None,
        Query(description="first day of the period (default: the current period)"),
    ] = None,
) -> BillPreviewPublic:
    """The bill of one period with the tier arithmetic line by line, and how the reads count."""
    account = staff_account(conn, account_id)
    if period_start is None:
        period = period_containing(datetime.now(settings.tz).date(), account.cycle_day)
    else:
        try:
            period = period_starting(period_start, account.cycle_day)
        except (ValueError, OverflowError) as exc:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)
            ) from None
    return preview_public(bill_preview(conn, account_id, account.rate_plan, period, settings.tz))


@router.get("/{account_id}/usage", response_model=UsageHistoryPublic)
def read_account_usage(
    conn: ConnDep,
    settings: SettingsDep,
    principal: StaffReader,
    account_id: AccountIdPath,
    resolution: Annotated[
        Resolution, Query(description="hour (default window: 7 days), day or month (24 months)")
    ] = "day",
    start: Annotated[date | None, Query(description="first local date")] = None,
    end: Annotated[date | None, Query(description="first local date after the window")] = None,
) -> UsageHistoryPublic:
    """The account's usage per hour, day or month over local dates [start, end), bucketed in
    the database (the same history a customer sees at /v1/me/.../usage), for staff charts."""
    staff_account(conn, account_id)
    default_start, default_end = default_window(resolution, datetime.now(settings.tz).date())
    window = (start or default_start, end or default_end)
    problem = check_window(*window)
    if problem:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problem)
    history = usage_history(conn, account_id, resolution, *window, settings.utility_tz)
    return UsageHistoryPublic.model_validate(history)


@router.post(
    "/{account_id}/contacts", response_model=ContactPublic, status_code=status.HTTP_201_CREATED
)
def create_contact(
    conn: ConnDep, principal: Reviewer, account_id: AccountIdPath, contact: ContactCreate
) -> ContactPublic:
    """Record a conversation with the customer in the account's contact log."""
    staff_account(conn, account_id)
    created = queries.add_contact(
        conn, account_id, principal.actor, contact.channel, contact.summary
    )
    record_audit(
        conn,
        actor=principal.actor,
        action="add_contact",
        entity="contact",
        entity_id=account_id,
        reason=None,
        details={"contact_id": created.contact_id, "channel": contact.channel},
    )
    return ContactPublic.model_validate(created)
