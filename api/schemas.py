"""Response schemas of the API (`…Public`). Request schemas (`…Create`, `…Update`) join them as
routes that change things arrive.

They mirror the rows of `meterwatch.reports` and validate from them directly
(`from_attributes`); the dashboard parses the API's answers with these same classes.
"""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HealthPublic(_Public):
    status: Literal["ok"] = "ok"


class ReadyPublic(_Public):
    status: Literal["ready", "degraded"]
    # per dependency ("database", "redis"): "ok", or what is wrong and where
    checks: dict[str, str]


class ReadCountsPublic(_Public):
    stored: int
    rejected: int
    unmatched: int
    unmatched_by_reason: dict[str, int]
    duplicates: int


class FlagCountsPublic(_Public):
    total: int
    by_kind: dict[str, int]
    by_status: dict[str, int]


class AlertCountsPublic(_Public):
    total: int
    by_status: dict[str, int]


class StatsPublic(_Public):
    """The `meterwatch stats --json` counts."""

    reads: ReadCountsPublic
    flags: FlagCountsPublic
    alerts: AlertCountsPublic


class FlagPublic(_Public):
    flag_id: int
    meter_id: str
    account_id: str
    kind: str
    started_at: datetime
    ended_at: datetime | None = Field(description="null while the flag is open")
    detected_at: datetime = Field(description="data time of the read that raised it")
    created_at: datetime
    severity: str
    score: float
    status: str
    evidence: str


class ReadTotalsPublic(_Public):
    stored: int
    rejected: int
    unmatched: int
    duplicates: int


class SourcePublic(_Public):
    source: str
    worker: str
    position: str | None
    deliveries: int
    latest_read_ts: datetime | None
    updated_at: datetime


class StreamBacklogPublic(_Public):
    stream: str
    length: int
    entries_added: int
    last_id: str | None
    committed_position: str | None
    backlog: int = Field(description="entries published but not yet committed (reads)")
    exact: bool = Field(description="false: too long to count cheaply, estimated")


class LiveMetricsPublic(_Public):
    as_of: datetime
    newest_read_ts: datetime | None = Field(description="newest read committed (data time)")
    lag_s: float | None = Field(description="as_of − newest_read_ts (seconds)")
    reads_per_s: float | None = Field(description="deliveries committed per second")
    window_s: float
    totals: ReadTotalsPublic
    sources: list[SourcePublic]
    backlog: list[StreamBacklogPublic] | None = Field(
        default=None, description="per Redis stream; null when Redis is not used or unreachable"
    )
    backlog_note: str | None = Field(default=None, description="why there is no backlog")


class UsagePointPublic(_Public):
    bucket: datetime
    customer_class: str
    unit: str
    usage: float = Field(description="consumption in the bucket, in `unit`")
    reads: int


class UsageByClassPublic(_Public):
    since: datetime | None
    until: datetime | None
    hours: float
    bucket: str
    points: list[UsagePointPublic]


class LivePublic(_Public):
    """Everything the dashboard's live page shows, in one answer."""

    metrics: LiveMetricsPublic
    usage: UsageByClassPublic
    latest_flags: list[FlagPublic]


# --- access ---------------------------------------------------------------------------------


class TokenPublic(_Public):
    """An OAuth2 access token (RFC 6749 §5.1)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the token is valid")


class PrincipalPublic(_Public):
    subject: str = Field(description="the username, or service:<name>")
    role: str
    customer_id: str | None


# --- accounts -----------------------------------------------------------------------------------

# Free text people type (reasons, notes): printable, no NUL, bounded.
_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
ReasonText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=2000, pattern=_TEXT_PATTERN),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=_TEXT_PATTERN),
]


class CustomerPublic(_Public):
    customer_id: str
    name: str
    email: str | None
    phone: str | None


class AccountPublic(_Public):
    account_id: str
    customer_id: str
    status: str
    customer_class: str
    rate_plan: str | None
    cycle_day: int


class MyAccountPublic(AccountPublic):
    current_period_start: date = Field(description="first day of the current billing period")
    current_period_end: date = Field(description="first day of the next billing period")


class AssignmentPublic(_Public):
    assignment_id: int
    meter_id: str
    valid_from: datetime
    valid_to: datetime | None = Field(description="null: the meter is there now")


class ServicePointPublic(_Public):
    service_point_id: str
    meters: list[AssignmentPublic] = Field(
        description="every meter that served this account here, oldest first (exchanges are "
        "consecutive rows)"
    )


class ReadPublic(_Public):
    meter_id: str
    ts: datetime = Field(description="end of the interval")
    value: float | None = Field(description="consumption in `unit`; null: not derivable")
    unit: str
    reported_unit: str = Field(description="the unit the head-end reported (raw)")
    register_value: float | None = Field(
        validation_alias=AliasChoices("register", "register_value"),
        description="raw cumulative register, for register meters",
    )
    quality: str | None = Field(description="head-end quality code, as given")
    estimated: bool = Field(description="the head-end estimated this read (quality E)")


class FlagDetailPublic(FlagPublic):
    details: dict[str, Any]
    expected_use: bool
    status_by: str | None
    status_reason: str | None
    status_at: datetime | None


class BillLinePublic(_Public):
    description: str
    quantity: Decimal
    unit: str
    price: Decimal
    amount: Decimal


class BillPublic(_Public):
    rate_plan: str
    currency: str
    unit: str
    usage: Decimal
    period_days: int | None
    proration: Decimal
    lines: list[BillLinePublic]
    total: Decimal
    notes: list[str]


class UsageSummaryPublic(_Public):
    unit: str
    reads: int
    usage: float
    estimated_reads: int
    estimated_usage: float = Field(description="included in `usage`, billed as estimated")
    missing_values: int = Field(description="reads without a value: they add nothing")
    reverse_flow: float = Field(description="negative intervals, netted in `usage`")
    first_read: datetime | None
    last_read: datetime | None


class BillPreviewPublic(_Public):
    period_start: date
    period_end: date = Field(description="first day of the next period")
    starts_at: datetime
    ends_at: datetime
    rate_plan: str | None
    usage: list[UsageSummaryPublic]
    bill: BillPublic | None
    not_priced: str | None = Field(description="why there is no bill, when there is none")
    unresolved_flags: int
    notes: list[str]


class DeliveryPublic(_Public):
    delivery_id: int
    channel: str
    destination: str
    provider_id: str | None
    status: str
    error: str | None
    attempted_at: datetime


class AlertPublic(_Public):
    alert_id: int
    rule: str
    period_start: date
    period_end: date
    detected_at: datetime
    created_at: datetime
    late: bool
    status: str
    channels: list[str]
    message: str
    flag_id: int | None
    deliveries: list[DeliveryPublic]


class AlertSummaryPublic(_Public):
    """One alert of any account, for staff lists (GET /v1/alerts/latest)."""

    alert_id: int
    account_id: str
    rule: str
    period_start: date
    detected_at: datetime
    created_at: datetime
    status: str
    channels: list[str]
    message: str
    attempts: int = Field(description="delivery attempts so far")


class ContactCreate(BaseModel):
    channel: Literal["phone", "email", "sms", "letter", "visit", "other"]
    summary: ReasonText


class ContactPublic(_Public):
    contact_id: int
    account_id: str
    at: datetime
    actor: str
    channel: str
    summary: str


class AuditPublic(_Public):
    audit_id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    reason: str | None
    details: dict[str, Any]


class DeclaredUsageCreate(BaseModel):
    meter_id: ShortText | None = Field(default=None, description="null: any meter")
    kind: Literal["irrigation", "pool", "cooling", "livestock", "business", "construction", "other"]
    description: ReasonText
    rate_gph: float | None = Field(
        default=None, gt=0, le=1_000_000, description="expected flow (gal/h or kWh/h)"
    )
    schedule: ShortText | None = Field(
        default=None, description="when, in words: 'Saturdays 6-9 am', 'June-September'"
    )


class DeclaredUsagePublic(_Public):
    declaration_id: int
    account_id: str
    meter_id: str | None
    kind: str
    description: str
    rate_gph: float | None
    schedule: str | None
    flag_id: int | None
    declared_by: str
    created_at: datetime


class AlertSettingsPublic(_Public):
    daily_threshold: float | None = Field(description="one calendar day's use (gal or kWh)")
    period_threshold: float | None = Field(description="billing period to date (gal or kWh)")
    projected_bill_threshold: Decimal | None = Field(description="projected bill (currency)")
    leak_alerts: bool
    sms_opt_in: bool
    email_opt_in: bool
    quiet_start: time | None = Field(description="no SMS from (local time)")
    quiet_end: time | None = Field(description="no SMS until (local time)")
    updated_at: datetime | None


class AlertSettingsUpdate(BaseModel):
    """Only the fields sent change; send null to clear a threshold or the quiet hours."""

    model_config = ConfigDict(extra="forbid")

    daily_threshold: float | None = Field(default=None, gt=0, le=1e9)
    period_threshold: float | None = Field(default=None, gt=0, le=1e9)
    projected_bill_threshold: Decimal | None = Field(
        default=None, gt=0, le=Decimal("9999999999.99"), decimal_places=2
    )
    leak_alerts: bool | None = None
    sms_opt_in: bool | None = None
    email_opt_in: bool | None = None
    quiet_start: time | None = None
    quiet_end: time | None = None


class AccountViewPublic(_Public):
    """Everything about one account, in one answer."""

    customer: CustomerPublic
    account: AccountPublic
    service_points: list[ServicePointPublic]
    recent_reads: list[ReadPublic]
    flags: list[FlagDetailPublic]
    bills: list[BillPreviewPublic] = Field(description="current period first, then past ones")
    alerts: list[AlertPublic]
    contacts: list[ContactPublic]
    declared_usage: list[DeclaredUsagePublic]
    alert_settings: AlertSettingsPublic | None
    audit: list[AuditPublic]


# --- flag review ----------------------------------------------------------------------------


class FlagReviewCreate(BaseModel):
    status: Literal["open", "confirmed", "dismissed", "resolved"]
    reason: ReasonText
    expected_use: bool = Field(
        default=False, description="dismissed because the use was expected (needs `dismissed`)"
    )


class FlagBulkReviewCreate(FlagReviewCreate):
    flag_ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(min_length=1, max_length=500)


class FlagBulkReviewPublic(_Public):
    updated: list[int]
    missing: list[int] = Field(description="ids that are no flag")


class ExpectedUseCreate(BaseModel):
    description: ReasonText


# --- customers' usage -----------------------------------------------------------------------


class UsageBucketPublic(_Public):
    start: datetime = Field(description="start of the hour, day or month (local time)")
    usage: float | None = Field(description="null: no reads in the bucket (unknown, not 0)")
    reads: int
    estimated_reads: int
    last_year_usage: float | None = Field(description="the same bucket a year earlier")


class UsageSeriesPublic(_Public):
    unit: str
    buckets: list[UsageBucketPublic]


class UsageHistoryPublic(_Public):
    account_id: str
    resolution: Literal["hour", "day", "month"]
    timezone: str
    start: date
    end: date = Field(description="first day after the history")
    series: list[UsageSeriesPublic] = Field(description="one per unit (gal, kWh)")


class LeakPublic(_Public):
    flag_id: int
    meter_id: str
    started_at: datetime
    detected_at: datetime
    severity: str
    evidence: str
    leak_rate: float | None = Field(description="gal per hour")
    volume_lost: float | None = Field(description="gal above usual use so far")
    currency: str | None
    cost_so_far: Decimal | None = Field(description="what volume_lost adds to this bill")
    cost_per_30_days: Decimal | None = Field(description="what the leak adds per 30 days")
    cost_note: str | None


class MyBillPublic(_Public):
    """The current period's bill so far and where it is heading (GET /v1/me/.../bill)."""

    preview: BillPreviewPublic = Field(description="the bill of the usage so far")
    elapsed: float = Field(description="fraction of the period that has passed (0-1)")
    projected_usage: float | None = Field(description="usage so far / elapsed, in the plan unit")
    projected_total: Decimal | None = Field(description="the bill of projected_usage")
    projection_note: str | None = Field(description="why there is no projection")


# --- billing cycles -----------------------------------------------------------------------------


class CyclePublic(_Public):
    cycle_day: int
    period_start: date
    period_end: date
    accounts: int
    blocking_flags: int
    closed_at: datetime | None
    closed_by: str | None


class BlockingKindPublic(_Public):
    kind: str
    flags: int


class CycleReadinessPublic(CyclePublic):
    ready: bool
    blocking_by_kind: list[BlockingKindPublic]
    blocking: list[FlagDetailPublic] = Field(description="the first 500 blocking flags")


class CycleCloseCreate(BaseModel):
    override: bool = Field(default=False, description="close despite blocking flags (billing)")
    reason: ReasonText | None = None


class CycleClosePublic(_Public):
    cycle_day: int
    period_start: date
    period_end: date
    closed_at: datetime
    closed_by: str
    overridden: bool
    reason: str | None
    blocking_flags: int


class TierPublic(_Public):
    tier_from: Decimal
    tier_to: Decimal | None
    price_per_unit: Decimal


class RatePlanPublic(_Public):
    rate_plan: str
    description: str
    currency: str
    fixed_charge: Decimal
    unit: str
    tiers: list[TierPublic]


# --- exception queues and ingest ----------------------------------------------------------------


class RejectedPublic(_Public):
    rejected_id: int
    received_at: datetime
    reason: str
    raw: str
    meter_id: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class ResolveCreate(BaseModel):
    reason: ReasonText


class UnmatchedPublic(_Public):
    meter_id: str
    ts: datetime
    value: float | None
    reported_unit: str
    register_value: float | None = Field(
        validation_alias=AliasChoices("register", "register_value"),
        description="raw cumulative register, for register meters",
    )
    quality: str | None
    reason: str
    detail: str
    received_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    stored: bool = Field(description="the read is now in reads (after reprocessing)")


class UnmatchedResolveCreate(BaseModel):
    meter_id: ShortText
    reason: ReasonText


class UnmatchedReprocessCreate(BaseModel):
    meter_id: ShortText
    reason: ReasonText


class AssignmentCreate(BaseModel):
    meter_id: ShortText
    service_point_id: ShortText
    account_id: ShortText
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None
    reason: ReasonText


class ReprocessPublic(_Public):
    meter_id: str
    assignment_id: int | None = Field(description="the assignment created, if any")
    republished: int = Field(description="reads put back on the stream and resolved")
    still_open: int = Field(description="reads left in the queue")
    note: str | None


class IngestErrorPublic(_Public):
    row: int = Field(description="JSON: index from 0; CSV: the spreadsheet row (header = 1)")
    reason: str


class IngestPublic(_Public):
    received: int
    published: int
    invalid: int = Field(description="rows that will land in the rejected-reads table")
    errors: list[IngestErrorPublic] = Field(description="the first 1,000 invalid rows")
