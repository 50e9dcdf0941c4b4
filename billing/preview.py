"""An account's usage over a billing period and the bill it would get: what staff check before
a cycle closes, and what a customer's projected bill starts from.

How reads count (nothing is left out silently; every number below is in the preview):

- every read of the account with start < ts <= end (ts is the end of the interval) counts;
- estimated reads (head-end quality code `E`, `EST` or `ESTIMATED`, any case) are billed at
  their estimated value, and shown apart (how many, how much) so that staff can hold the bill;
- reads without a value (the first register of a meter, a register that arrived late) add
  nothing and are counted as `missing_values`;
- negative intervals (reverse flow) are netted against the usage and shown apart;
- water (gal) and electricity (kWh) are never added together: the plan's unit is priced, any
  other unit is listed as not priced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

import psycopg
from psycopg.rows import class_row

from billing.periods import Period
from billing.rates import load_plan
from billing.tiers import Bill, price

ESTIMATED_CODES = ("E", "EST", "ESTIMATED")
# SQL: is the read in table alias `r` estimated? (literal codes, never input)
ESTIMATED_SQL = "upper(coalesce(r.quality, '')) IN ('E', 'EST', 'ESTIMATED')"
# SQL: the base unit of the read in alias `r`
UNIT_SQL = "CASE WHEN r.reported_unit = 'kWh' THEN 'kWh' ELSE 'gal' END"


def is_estimated(quality: str | None) -> bool:
    """Whether a head-end quality code marks an estimated read."""
    return (quality or "").strip().upper() in ESTIMATED_CODES


@dataclass(frozen=True)
class UsageSummary:
    """An account's reads of one unit over a span."""

    unit: str
    reads: int
    usage: float
    estimated_reads: int
    estimated_usage: float
    missing_values: int
    reverse_flow: float
    first_read: datetime | None
    last_read: datetime | None


def period_usage(
    conn: psycopg.Connection, account_id: str, start: datetime, end: datetime
) -> list[UsageSummary]:
    """The account's usage per unit for reads with start < ts <= end."""
    with conn.cursor(row_factory=class_row(UsageSummary)) as cur:
        return cur.execute(
            f"""SELECT {UNIT_SQL} AS unit, count(*) AS reads,
                       coalesce(sum(r.value), 0) AS usage,
                       count(*) FILTER (WHERE {ESTIMATED_SQL}) AS estimated_reads,
                       coalesce(sum(r.value) FILTER (WHERE {ESTIMATED_SQL}), 0)
                         AS estimated_usage,
                       count(*) FILTER (WHERE r.value IS NULL) AS missing_values,
                       coalesce(sum(r.value) FILTER (WHERE r.value < 0), 0) AS reverse_flow,
                       min(r.ts) AS first_read, max(r.ts) AS last_read
                  FROM reads AS r
                 WHERE r.account_id = %s AND r.ts > %s AND r.ts <= %s
                 GROUP BY 1 ORDER BY 1""",
            (account_id, start, end),
        ).fetchall()


@dataclass(frozen=True)
class BillPreview:
    """The priced usage of one account over one billing period (`bill` None: `not_priced`
    says why)."""

    account_id: str
    period: Period
    starts_at: datetime
    ends_at: datetime
    rate_plan: str | None
    usage: list[UsageSummary]
    bill: Bill | None
    not_priced: str | None
    unresolved_flags: int
    notes: list[str] = field(default_factory=list)


def bill_preview(
    conn: psycopg.Connection,
    account_id: str,
    rate_plan: str | None,
    period: Period,
    tz: tzinfo,
) -> BillPreview:
    """The preview of `account_id`'s bill for `period` on `rate_plan` (module docstring)."""
    start, end = period.bounds(tz)
    usage = period_usage(conn, account_id, start, end)
    row = conn.execute(
        """SELECT count(*) FROM flags WHERE account_id = %s AND status IN ('open', 'confirmed')
              AND started_at < %s AND (ended_at IS NULL OR ended_at > %s)""",
        (account_id, end, start),
    ).fetchone()
    unresolved = row[0] if row else 0
    notes: list[str] = []
    bill: Bill | None = None
    reason: str | None = None
    plan = load_plan(conn, rate_plan) if rate_plan else None
    if rate_plan is None:
        reason = "the account has no rate plan in the CIS export (accounts.csv rate_plan)"
    elif plan is None:
        reason = f"rate plan {rate_plan!r} is not imported: run `meterwatch import-rates`"
    else:
        priced = next((u for u in usage if u.unit == plan.unit), None)
        bill = price(plan, priced.usage if priced else 0.0, period.days)
        for other in usage:
            if other.unit != plan.unit:
                notes.append(
                    f"{other.usage:,.3f} {other.unit} not priced: plan {plan.rate_plan!r} "
                    f"prices {plan.unit}"
                )
    for summary in usage:
        if summary.estimated_reads:
            notes.append(
                f"{summary.estimated_reads} estimated read(s), {summary.estimated_usage:,.3f} "
                f"{summary.unit}, are billed at their estimated value"
            )
        if summary.missing_values:
            notes.append(
                f"{summary.missing_values} read(s) without a value (first or late register) "
                "add nothing"
            )
        if summary.reverse_flow:
            notes.append(
                f"{-summary.reverse_flow:,.3f} {summary.unit} of reverse flow is netted "
                "against the usage"
            )
    if unresolved:
        notes.append(f"{unresolved} unresolved flag(s) overlap this period: review them first")
    return BillPreview(
        account_id, period, start, end, rate_plan, usage, bill, reason, unresolved, notes
    )
