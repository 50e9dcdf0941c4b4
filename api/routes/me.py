"""Self-service for customers (`/v1/me`): their accounts, usage history (JSON, CSV, Green Button),
alert rules, the alerts sent to them, open leaks with what they cost, their flags, and the use
they expect. Another customer's account answers 404, like one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from api import queries
from api.deps import ConnDep, Customer, SettingsDep
from api.green_button import MEDIA_TYPE, green_button_feed
from api.routes.accounts import preview_public
from api.routes.common import AccountIdPath, FlagIdPath, not_found, own_account
from api.schemas import (
    AlertPublic,
    AlertSettingsPublic,
    AlertSettingsUpdate,
    DeclaredUsageCreate,
    DeclaredUsagePublic,
    ExpectedUseCreate,
    FlagDetailPublic,
    LeakPublic,
    MyAccountPublic,
    MyBillPublic,
    UsageHistoryPublic,
)
from api.usage import Resolution, UsageHistory, check_window, default_window, usage_csv
from api.usage import usage_history as read_history
from billing.periods import period_containing
from billing.preview import bill_preview, period_usage
from billing.rates import load_plan
from billing.tiers import price
from meterwatch.db import record_audit
from meterwatch.settings import Settings

router = APIRouter(prefix="/me", tags=["customers"])

StartQuery = Annotated[
    date | None, Query(description="first local date (default: see `resolution`)")
]
EndQuery = Annotated[date | None, Query(description="first local date after the window")]
ResolutionQuery = Annotated[
    Resolution,
    Query(description="hour (default window: 7 days), day or month (default: 24 months)"),
]
# Hours a leak runs in a 30-day month, for its monthly cost (hours).
HOURS_PER_30_DAYS = 720


def _today(settings: Settings) -> date:
    return datetime.now(settings.tz).date()


def _window(
    settings: Settings, resolution: Resolution, start: date | None, end: date | None
) -> tuple[date, date]:
    default_start, default_end = default_window(resolution, _today(settings))
    window = (start or default_start, end or default_end)
    problem = check_window(*window)
    if problem:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=problem)
    return window


def _history(
    conn: ConnDep,
    settings: Settings,
    account_id: str,
    resolution: Resolution,
    start: date | None,
    end: date | None,
) -> UsageHistory:
    window = _window(settings, resolution, start, end)
    return read_history(conn, account_id, resolution, *window, settings.utility_tz)


@router.get("/accounts", response_model=list[MyAccountPublic])
def read_my_accounts(
    conn: ConnDep, principal: Customer, settings: SettingsDep
) -> list[MyAccountPublic]:
    """The caller's accounts, with their current billing period."""
    found = queries.customer_accounts(conn, principal.customer_id or "")
    today = _today(settings)
    result = []
    for account in found:
        period = period_containing(today, account.cycle_day)
        result.append(
            MyAccountPublic.model_validate(
                {
                    **vars(account),
                    "current_period_start": period.start,
                    "current_period_end": period.end,
                }
            )
        )
    return result


@router.get("/accounts/{account_id}/usage", response_model=UsageHistoryPublic)
def read_usage(
    conn: ConnDep,
    principal: Customer,
    settings: SettingsDep,
    account_id: AccountIdPath,
    resolution: ResolutionQuery = "day",
    start: StartQuery = None,
    end: EndQuery = None,
) -> UsageHistoryPublic:
    """Usage per hour, day or month of the utility's time zone over local dates [start, end)
    (at most 24 months), each bucket with the same bucket a year earlier."""
    own_account(conn, principal, account_id)
    history = _history(conn, settings, account_id, resolution, start, end)
    return UsageHistoryPublic.model_validate(history)


@router.get(
    "/accounts/{account_id}/usage.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the usage history as CSV"}},
)
def read_usage_csv(
    conn: ConnDep,
    principal: Customer,
    settings: SettingsDep,
    account_id: AccountIdPath,
    resolution: ResolutionQuery = "day",
    start: StartQuery = None,
    end: EndQuery = None,
) -> Response:
    """The usage history as a CSV download: unit, start, usage, reads, estimated_reads,
    last_year_usage."""
    own_account(conn, principal, account_id)
    history = _history(conn, settings, account_id, resolution, start, end)
    name = f"usage-{account_id}-{resolution}-{history.start}-{history.end}.csv"
    return Response(
        usage_csv(history),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_safe(name)}"'},
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@router.get(
    "/accounts/{account_id}/green-button",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}, "description": "an ESPI Atom feed"}},
)
def read_green_button(
    conn: ConnDep,
    principal: Customer,
    settings: SettingsDep,
    request: Request,
    account_id: AccountIdPath,
    start: StartQuery = None,
    end: EndQuery = None,
) -> Response:
    """Green Button "Download My Data": the interval reads of local dates [start, end) (default:
    the last 24 months) as a NAESB ESPI Atom feed."""
    account = own_account(conn, principal, account_id)
    window = _window(settings, "day", start, end)
    body = green_button_feed(
        conn,
        account,
        queries.customer(conn, account.customer_id),
        *window,
        settings.utility_tz,
        str(request.base_url),
    )
    name = _safe(f"green-button-{account_id}-{window[0]}-{window[1]}.xml")
    return Response(
        body,
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/accounts/{account_id}/bill", response_model=MyBillPublic)
def read_my_bill(
    conn: ConnDep, principal: Customer, settings: SettingsDep, account_id: AccountIdPath
) -> MyBillPublic:
    """The bill of the current billing period so far, with the tier arithmetic, and its
    projection: the usage so far over the elapsed part of the period, priced the same way (none
    before ALERT_PROJECTION_MIN_DAYS have passed: one heavy day would project an absurd bill)."""
    account = own_account(conn, principal, account_id)
    period = period_containing(_today(settings), account.cycle_day)
    preview = bill_preview(conn, account_id, account.rate_plan, period, settings.tz)
    start, end = period.bounds(settings.tz)
    elapsed_s = min(
        max((datetime.now(UTC) - start).total_seconds(), 0.0), (end - start).total_seconds()
    )
    elapsed = elapsed_s / (end - start).total_seconds()
    projected_usage: float | None = None
    projected_total: Decimal | None = None
    note: str | None = None
    plan = load_plan(conn, account.rate_plan) if account.rate_plan else None
    if preview.bill is None or plan is None:
        note = preview.not_priced or "no rate plan to price it with: ask the utility"
    elif elapsed_s < settings.alert_projection_min_days * 86_400:
        days = settings.alert_projection_min_days
        note = f"too early in the period to project: ask again after {days:g} days"
    else:
        projected_usage = float(preview.bill.usage) / elapsed
        projected_total = price(plan, projected_usage, period.days).total
    return MyBillPublic(
        preview=preview_public(preview),
        elapsed=elapsed,
        projected_usage=projected_usage,
        projected_total=projected_total,
        projection_note=note,
    )


@router.get("/accounts/{account_id}/alert-settings", response_model=AlertSettingsPublic)
def read_alert_settings(
    conn: ConnDep, principal: Customer, account_id: AccountIdPath
) -> AlertSettingsPublic:
    """The account's alert rules: thresholds, channels, quiet hours."""
    own_account(conn, principal, account_id)
    found = queries.alert_settings(conn, account_id) or queries.DEFAULT_ALERT_SETTINGS
    return AlertSettingsPublic.model_validate(found)


@router.patch("/accounts/{account_id}/alert-settings", response_model=AlertSettingsPublic)
def update_alert_settings(
    conn: ConnDep, principal: Customer, account_id: AccountIdPath, changes: AlertSettingsUpdate
) -> AlertSettingsPublic:
    """Change the alert rules: only the fields sent change (null clears a threshold or the
    quiet hours, which go together)."""
    own_account(conn, principal, account_id)
    sent = changes.model_dump(exclude_unset=True)
    for flag_name in ("leak_alerts", "sms_opt_in", "email_opt_in"):
        if flag_name in sent and sent[flag_name] is None:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"{flag_name} is true or false, not null",
            )
    before = queries.alert_settings(conn, account_id) or queries.DEFAULT_ALERT_SETTINGS
    after_quiet = (
        sent.get("quiet_start", before.quiet_start),
        sent.get("quiet_end", before.quiet_end),
    )
    if (after_quiet[0] is None) != (after_quiet[1] is None):
        raise HTTPException(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail="quiet hours need both quiet_start and quiet_end (or neither)",
        )
    updated = queries.update_alert_settings(conn, account_id, sent)
    record_audit(
        conn,
        actor=principal.actor,
        action="update_alert_settings",
        entity="alert_settings",
        entity_id=account_id,
        reason="changed by the customer",
        details={name: str(value) if value is not None else None for name, value in sent.items()},
    )
    return AlertSettingsPublic.model_validate(updated)


@router.get("/accounts/{account_id}/alerts", response_model=list[AlertPublic])
def read_my_alerts(
    conn: ConnDep,
    principal: Customer,
    account_id: AccountIdPath,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertPublic]:
    """The alerts sent (or due) to the account, newest first, with every delivery attempt."""
    own_account(conn, principal, account_id)
    return [AlertPublic.model_validate(a) for a in queries.account_alerts(conn, account_id, limit)]


@router.get("/accounts/{account_id}/flags", response_model=list[FlagDetailPublic])
def read_my_flags(
    conn: ConnDep,
    principal: Customer,
    account_id: AccountIdPath,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[FlagDetailPublic]:
    """What meterwatch found on the account's meters, newest first."""
    own_account(conn, principal, account_id)
    return [
        FlagDetailPublic.model_validate(f) for f in queries.account_flags(conn, account_id, limit)
    ]


@router.get("/accounts/{account_id}/leaks", response_model=list[LeakPublic])
def read_my_leaks(
    conn: ConnDep, principal: Customer, settings: SettingsDep, account_id: AccountIdPath
) -> list[LeakPublic]:
    """Unresolved leaks with what they cost on the account's rate plan: what the water lost so
    far adds to this period's bill, and what the leak adds per 30 days if it goes on (priced at
    the tiers the extra use falls in)."""
    account = own_account(conn, principal, account_id)
    leaks = [
        f
        for f in queries.find_flags(
            conn, queries.FlagFilter(kind="leak", account_id=account_id), limit=100
        )
        if f.status in ("open", "confirmed")
    ]
    plan = load_plan(conn, account.rate_plan) if account.rate_plan else None
    period_total = 0.0
    if plan is not None and leaks:
        period = period_containing(_today(settings), account.cycle_day)
        start, end = period.bounds(settings.tz)
        end = min(end, datetime.now(UTC))
        summary = next(
            (u for u in period_usage(conn, account_id, start, end) if u.unit == plan.unit), None
        )
        period_total = summary.usage if summary else 0.0
    result = []
    for leak in leaks:
        rate = _number(leak.details.get("leak_rate"))
        lost = _number(leak.details.get("volume_lost"))
        so_far: Decimal | None = None
        monthly: Decimal | None = None
        note: str | None = None
        if plan is None:
            note = "no rate plan to price it with: ask the utility"
        elif plan.unit != "gal":
            note = f"the rate plan prices {plan.unit}, not water"
        else:
            base = price(plan, period_total).total
            if lost is not None:
                so_far = base - price(plan, max(period_total - lost, 0.0)).total
            if rate is not None:
                monthly = price(plan, period_total + rate * HOURS_PER_30_DAYS).total - base
        result.append(
            LeakPublic(
                flag_id=leak.flag_id,
                meter_id=leak.meter_id,
                started_at=leak.started_at,
                detected_at=leak.detected_at,
                severity=leak.severity,
                evidence=leak.evidence,
                leak_rate=rate,
                volume_lost=lost,
                currency=plan.currency if plan else None,
                cost_so_far=so_far,
                cost_per_30_days=monthly,
                cost_note=note,
            )
        )
    return result


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@router.post(
    "/accounts/{account_id}/flags/{flag_id}/expected-use",
    response_model=FlagDetailPublic,
    responses={409: {"description": "the flag is already dismissed or resolved"}},
)
def declare_expected_use(
    conn: ConnDep,
    principal: Customer,
    account_id: AccountIdPath,
    flag_id: FlagIdPath,
    body: ExpectedUseCreate,
) -> FlagDetailPublic:
    """Tell the utility a flag on your meter was expected use ("that's my evaporative
    cooler"): the flag is dismissed as expected use and the explanation is kept."""
    own_account(conn, principal, account_id)
    found = queries.flag(conn, flag_id)
    if found is None or found.account_id != account_id:
        raise not_found(f"account {account_id!r} has no flag {flag_id}")
    if found.status not in ("open", "confirmed"):
        raise HTTPException(
            status_code=status.HTTP_409_CONFLICT,
            detail=f"flag {flag_id} is already {found.status}: nothing to declare",
        )
    reason = f"expected use, declared by the customer: {body.description}"
    queries.set_flag_status(
        conn, [flag_id], status="dismissed", reason=reason, actor=principal.actor, expected_use=True
    )
    queries.add_declared_usage(
        conn,
        account_id,
        meter_id=found.meter_id,
        kind="other",
        description=body.description,
        rate_gph=None,
        schedule=None,
        flag_id=flag_id,
        declared_by=principal.actor,
    )
    record_audit(
        conn,
        actor=principal.actor,
        action="review_flag",
        entity="flag",
        entity_id=str(flag_id),
        reason=reason,
        details={
            "account_id": account_id,
            "from": found.status,
            "to": "dismissed",
            "expected_use": True,
        },
    )
    updated = queries.flag(conn, flag_id)
    return FlagDetailPublic.model_validate(updated)


@router.get("/accounts/{account_id}/declared-usage", response_model=list[DeclaredUsagePublic])
def read_declared_usage(
    conn: ConnDep, principal: Customer, account_id: AccountIdPath
) -> list[DeclaredUsagePublic]:
    """The use the account has declared as expected, newest first."""
    own_account(conn, principal, account_id)
    return [DeclaredUsagePublic.model_validate(d) for d in queries.declared_usage(conn, account_id)]


@router.post(
    "/accounts/{account_id}/declared-usage",
    response_model=DeclaredUsagePublic,
    status_code=status.HTTP_201_CREATED,
)
def create_declared_usage(
    conn: ConnDep, principal: Customer, account_id: AccountIdPath, body: DeclaredUsageCreate
) -> DeclaredUsagePublic:
    """Declare expected use up front (a pool fill, irrigation, a cooler), so that the leak
    detectors learn it is normal."""
    own_account(conn, principal, account_id)
    if body.meter_id is not None:
        served = {a.meter_id for a in queries.assignments(conn, account_id)}
        if body.meter_id not in served:
            raise HTTPException(
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"meter {body.meter_id!r} does not serve account {account_id!r}: leave "
                "meter_id out for any meter of the account",
            )
    created = queries.add_declared_usage(
        conn,
        account_id,
        meter_id=body.meter_id,
        kind=body.kind,
        description=body.description,
        rate_gph=body.rate_gph,
        schedule=body.schedule,
        flag_id=None,
        declared_by=principal.actor,
    )
    record_audit(
        conn,
        actor=principal.actor,
        action="declare_usage",
        entity="declared_usage",
        entity_id=account_id,
        reason=body.description,
        details={"declaration_id": created.declaration_id, "kind": body.kind},
    )
    return DeclaredUsagePublic.model_validate(created)
