"""The database reads and writes behind the account, customer, flag-review, billing-cycle and
exception-queue routes. Rows come back as frozen dataclasses (`class_row`); every function
takes an open connection and leaves the transaction to the caller (the request's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row, dict_row

from billing.preview import ESTIMATED_SQL, UNIT_SQL

# --- accounts and customers ---------------------------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    account_id: str
    customer_id: str
    status: str
    customer_class: str
    rate_plan: str | None
    cycle_day: int


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    name: str
    email: str | None
    phone: str | None


_ACCOUNT_COLUMNS = "account_id, customer_id, status, customer_class, rate_plan, cycle_day"


def account(conn: psycopg.Connection, account_id: str) -> AccountRow | None:
    with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        return cur.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = %s", (account_id,)
        ).fetchone()


def customer_account(
    conn: psycopg.Connection, customer_id: str, account_id: str
) -> AccountRow | None:
    """The account when it belongs to `customer_id`, else None (the caller answers 404)."""
    with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        return cur.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE account_id = %s AND customer_id = %s",
            (account_id, customer_id),
        ).fetchone()


def customer_accounts(conn: psycopg.Connection, customer_id: str) -> list[AccountRow]:
    with conn.cursor(row_factory=class_row(AccountRow)) as cur:
        return cur.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE customer_id = %s ORDER BY account_id",
            (customer_id,),
        ).fetchall()


def customer(conn: psycopg.Connection, customer_id: str) -> CustomerRow:
    with conn.cursor(row_factory=class_row(CustomerRow)) as cur:
        row = cur.execute(
            "SELECT customer_id, name, email, phone FROM customers WHERE customer_id = %s",
            (customer_id,),
        ).fetchone()
    assert row is not None  # accounts.customer_id references customers
    return row


@dataclass(frozen=True)
class AssignmentRow:
    assignment_id: int
    meter_id: str
    service_point_id: str
    valid_from: datetime
    valid_to: datetime | None


def assignments(conn: psycopg.Connection, account_id: str) -> list[AssignmentRow]:
    """Every meter assignment of the account, by service point and start (the meter history)."""
    with conn.cursor(row_factory=class_row(AssignmentRow)) as cur:
        return cur.execute(
            """SELECT assignment_id, meter_id, service_point_id, valid_from, valid_to
                 FROM meter_assignments WHERE account_id = %s
                ORDER BY service_point_id, valid_from, meter_id""",
            (account_id,),
        ).fetchall()


@dataclass(frozen=True)
class ReadRow:
    meter_id: str
    ts: datetime
    value: float | None
    unit: str
    reported_unit: str
    register: float | None
    quality: str | None
    estimated: bool


def recent_reads(conn: psycopg.Connection, account_id: str, limit: int) -> list[ReadRow]:
    """The account's `limit` newest reads (data time), newest first, estimated ones marked."""
    with conn.cursor(row_factory=class_row(ReadRow)) as cur:
        return cur.execute(
            f"""SELECT r.meter_id, r.ts, r.value, {UNIT_SQL} AS unit, r.reported_unit,
                       r.register, r.quality, {ESTIMATED_SQL} AS estimated
                  FROM reads AS r WHERE r.account_id = %s
                 ORDER BY r.ts DESC, r.meter_id LIMIT %s""",
            (account_id, limit),
        ).fetchall()


# --- flags ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagDetailRow:
    flag_id: int
    meter_id: str
    account_id: str
    kind: str
    started_at: datetime
    ended_at: datetime | None
    detected_at: datetime
    created_at: datetime
    severity: str
    score: float
    status: str
    evidence: str
    details: dict[str, Any]
    expected_use: bool
    status_by: str | None
    status_reason: str | None
    status_at: datetime | None


FLAG_COLUMNS = (
    "flag_id, meter_id, account_id, kind, started_at, ended_at, detected_at, created_at, "
    "severity, score, status, evidence, details, expected_use, status_by, status_reason, "
    "status_at"
)


def account_flags(conn: psycopg.Connection, account_id: str, limit: int) -> list[FlagDetailRow]:
    """The account's flags, newest start first."""
    with conn.cursor(row_factory=class_row(FlagDetailRow)) as cur:
        return cur.execute(
            f"""SELECT {FLAG_COLUMNS} FROM flags WHERE account_id = %s
                 ORDER BY started_at DESC, flag_id DESC LIMIT %s""",
            (account_id, limit),
        ).fetchall()


def flag(conn: psycopg.Connection, flag_id: int) -> FlagDetailRow | None:
    with conn.cursor(row_factory=class_row(FlagDetailRow)) as cur:
        return cur.execute(
            f"SELECT {FLAG_COLUMNS} FROM flags WHERE flag_id = %s", (flag_id,)
        ).fetchone()


@dataclass(frozen=True)
class FlagFilter:
    """Flag-review filters; None means any. A cycle (cycle_day + period bounds) keeps the flags
    of its accounts that overlap the period."""

    status: str | None = None
    kind: str | None = None
    severity: str | None = None
    account_id: str | None = None
    cycle_day: int | None = None
    period_starts_at: datetime | None = None
    period_ends_at: datetime | None = None


def _flag_conditions(spec: FlagFilter) -> tuple[sql.Composed, list[Any]]:
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for column in ("status", "kind", "severity", "account_id"):
        value = getattr(spec, column)
        if value is not None:
            conditions.append(sql.SQL("f.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if spec.cycle_day is not None:
        conditions.append(
            sql.SQL("f.account_id IN (SELECT account_id FROM accounts WHERE cycle_day = %s)")
        )
        params.append(spec.cycle_day)
    if spec.period_starts_at is not None and spec.period_ends_at is not None:
        conditions.append(sql.SQL("f.started_at < %s AND (f.ended_at IS NULL OR f.ended_at > %s)"))
        params.extend([spec.period_ends_at, spec.period_starts_at])
    return sql.SQL(" AND ").join(conditions), params


def find_flags(
    conn: psycopg.Connection, spec: FlagFilter, limit: int, offset: int = 0
) -> list[FlagDetailRow]:
    """Flags matching `spec`, most severe and newest first."""
    where, params = _flag_conditions(spec)
    query = sql.SQL(
        """SELECT {columns} FROM flags AS f WHERE {where}
            ORDER BY CASE f.severity WHEN 'critical' THEN 0 WHEN 'high' THEN 1
                                      WHEN 'medium' THEN 2 ELSE 3 END,
                     f.started_at DESC, f.flag_id DESC
            LIMIT %s OFFSET %s"""
    ).format(columns=sql.SQL(FLAG_COLUMNS.replace("flag_id,", "f.flag_id,", 1)), where=where)
    with conn.cursor(row_factory=class_row(FlagDetailRow)) as cur:
        return cur.execute(query, [*params, limit, offset]).fetchall()


def count_flags_by_kind(conn: psycopg.Connection, spec: FlagFilter) -> dict[str, int]:
    where, params = _flag_conditions(spec)
    query = sql.SQL(
        "SELECT f.kind, count(*) FROM flags AS f WHERE {where} GROUP BY f.kind ORDER BY f.kind"
    ).format(where=where)
    return {kind: n for kind, n in conn.execute(query, params).fetchall()}


def set_flag_status(
    conn: psycopg.Connection,
    flag_ids: list[int],
    *,
    status: str,
    reason: str,
    actor: str,
    expected_use: bool,
) -> list[int]:
    """Set the review status of the flags; returns the ids that exist (and were updated)."""
    rows = conn.execute(
        """UPDATE flags SET status = %s, status_reason = %s, status_by = %s, status_at = now(),
                  expected_use = %s, updated_at = now()
            WHERE flag_id = ANY(%s) RETURNING flag_id""",
        (status, reason, actor, expected_use, flag_ids),
    ).fetchall()
    return sorted(r[0] for r in rows)


# --- alerts, contacts, declarations, audit ------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: int
    alert_id: int
    channel: str
    destination: str
    provider_id: str | None
    status: str
    error: str | None
    attempted_at: datetime


@dataclass(frozen=True)
class AlertRow:
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
    deliveries: list[DeliveryRow]


def account_alerts(conn: psycopg.Connection, account_id: str, limit: int) -> list[AlertRow]:
    """The account's alerts, newest first, each with every delivery attempt (oldest first)."""
    with conn.cursor(row_factory=dict_row) as cur:
        alerts = cur.execute(
            """SELECT alert_id, rule, period_start, period_end, detected_at, created_at, late,
                      status, channels, message, flag_id
                 FROM alerts WHERE account_id = %s
                ORDER BY created_at DESC, alert_id DESC LIMIT %s""",
            (account_id, limit),
        ).fetchall()
    by_alert: dict[int, list[DeliveryRow]] = defaultdict(list)
    if alerts:
        with conn.cursor(row_factory=class_row(DeliveryRow)) as cur:
            for delivery in cur.execute(
                """SELECT delivery_id, alert_id, channel, destination, provider_id, status,
                          error, attempted_at
                     FROM alert_deliveries WHERE alert_id = ANY(%s)
                    ORDER BY attempted_at, delivery_id""",
                ([a["alert_id"] for a in alerts],),
            ):
                by_alert[delivery.alert_id].append(delivery)
    return [AlertRow(**a, deliveries=by_alert.get(a["alert_id"], [])) for a in alerts]


@dataclass(frozen=True)
class ContactRow:
    contact_id: int
    account_id: str
    at: datetime
    actor: str
    channel: str
    summary: str


def contacts(conn: psycopg.Connection, account_id: str, limit: int = 200) -> list[ContactRow]:
    with conn.cursor(row_factory=class_row(ContactRow)) as cur:
        return cur.execute(
            """SELECT contact_id, account_id, at, actor, channel, summary FROM contact_log
                WHERE account_id = %s ORDER BY at DESC, contact_id DESC LIMIT %s""",
            (account_id, limit),
        ).fetchall()


def add_contact(
    conn: psycopg.Connection, account_id: str, actor: str, channel: str, summary: str
) -> ContactRow:
    with conn.cursor(row_factory=class_row(ContactRow)) as cur:
        row = cur.execute(
            """INSERT INTO contact_log (account_id, actor, channel, summary)
               VALUES (%s, %s, %s, %s)
               RETURNING contact_id, account_id, at, actor, channel, summary""",
            (account_id, actor, channel, summary),
        ).fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class DeclaredUsageRow:
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


_DECLARED_COLUMNS = (
    "declaration_id, account_id, meter_id, kind, description, rate_gph, schedule, flag_id, "
    "declared_by, created_at"
)


def declared_usage(conn: psycopg.Connection, account_id: str) -> list[DeclaredUsageRow]:
    with conn.cursor(row_factory=class_row(DeclaredUsageRow)) as cur:
        return cur.execute(
            f"""SELECT {_DECLARED_COLUMNS} FROM declared_usage WHERE account_id = %s
                 ORDER BY created_at DESC, declaration_id DESC""",
            (account_id,),
        ).fetchall()


def add_declared_usage(
    conn: psycopg.Connection,
    account_id: str,
    *,
    meter_id: str | None,
    kind: str,
    description: str,
    rate_gph: float | None,
    schedule: str | None,
    flag_id: int | None,
    declared_by: str,
) -> DeclaredUsageRow:
    with conn.cursor(row_factory=class_row(DeclaredUsageRow)) as cur:
        row = cur.execute(
            f"""INSERT INTO declared_usage (account_id, meter_id, kind, description, rate_gph,
                                           schedule, flag_id, declared_by)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_DECLARED_COLUMNS}""",
            (account_id, meter_id, kind, description, rate_gph, schedule, flag_id, declared_by),
        ).fetchone()
    assert row is not None
    return row


@dataclass(frozen=True)
class AuditRow:
    audit_id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    reason: str | None
    details: dict[str, Any]


def audit_trail(
    conn: psycopg.Connection, account_id: str, flag_ids: list[int], limit: int = 200
) -> list[AuditRow]:
    """Audit entries about the account itself, its settings, contacts and declarations
    (entity_id = the account), and about its flags (entity 'flag'), newest first."""
    with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        return cur.execute(
            """SELECT audit_id, at, actor, action, entity, entity_id, reason, details
                 FROM audit_log
                WHERE entity_id = %s OR (entity = 'flag' AND entity_id = ANY(%s))
                ORDER BY at DESC, audit_id DESC LIMIT %s""",
            (account_id, [str(i) for i in flag_ids], limit),
        ).fetchall()


# --- alert settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertSettingsRow:
    daily_threshold: float | None
    period_threshold: float | None
    projected_bill_threshold: Decimal | None
    leak_alerts: bool
    sms_opt_in: bool
    email_opt_in: bool
    quiet_start: time | None
    quiet_end: time | None
    updated_at: datetime | None


ALERT_SETTING_FIELDS = (
    "daily_threshold",
    "period_threshold",
    "projected_bill_threshold",
    "leak_alerts",
    "sms_opt_in",
    "email_opt_in",
    "quiet_start",
    "quiet_end",
)
# An account without a row has the table's defaults.
DEFAULT_ALERT_SETTINGS = AlertSettingsRow(None, None, None, True, False, False, None, None, None)


def alert_settings(conn: psycopg.Connection, account_id: str) -> AlertSettingsRow | None:
    with conn.cursor(row_factory=class_row(AlertSettingsRow)) as cur:
        return cur.execute(
            f"SELECT {', '.join(ALERT_SETTING_FIELDS)}, updated_at FROM alert_settings "
            "WHERE account_id = %s",
            (account_id,),
        ).fetchone()


def update_alert_settings(
    conn: psycopg.Connection, account_id: str, changes: dict[str, Any]
) -> AlertSettingsRow:
    """Apply `changes` (field → value; only ALERT_SETTING_FIELDS) to the account's settings,
    creating the row with the defaults first if it has none."""
    conn.execute(
        "INSERT INTO alert_settings (account_id) VALUES (%s) ON CONFLICT DO NOTHING",
        (account_id,),
    )
    if changes:
        assignments_sql = sql.SQL(", ").join(
            sql.SQL("{} = %s").format(sql.Identifier(name)) for name in changes
        )
        conn.execute(
            sql.SQL(
                "UPDATE alert_settings SET {}, updated_at = clock_timestamp() WHERE account_id = %s"
            ).format(assignments_sql),
            [*changes.values(), account_id],
        )
    row = alert_settings(conn, account_id)
    assert row is not None
    return row
