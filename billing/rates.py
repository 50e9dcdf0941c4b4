"""Rate plans in the database: reading them, pricing a usage on one (`price_usage`, what the
projected-bill alerts call), and loading them from the rates CSV (`meterwatch import-rates`).

The rates CSV has one row per tier; the plan's own columns repeat on each of its rows and must
agree:

    rate_plan,description,currency,fixed_charge,tier_from,tier_to,price_per_unit,unit
    RES-W,Residential water,USD,12.00,0,5000,0.0040,gal
    RES-W,Residential water,USD,12.00,5000,,0.0060,gal

`fixed_charge` is per billing period, `tier_from`/`tier_to` are usage in the period (in `unit`:
`gal` or `kWh`), the last tier's `tier_to` is empty. `import_rates` validates every row first
and writes nothing while a problem remains (each problem names the row and the fix); then it
creates or replaces the plans in the file in one transaction, leaving plans the file does not
mention alone. Importing the same file again changes nothing.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import psycopg

from billing.tiers import Bill, RatePlan, Tier, check_tiers, price
from meterwatch.db import record_audit

RATE_COLUMNS = (
    "rate_plan",
    "description",
    "currency",
    "fixed_charge",
    "tier_from",
    "tier_to",
    "price_per_unit",
    "unit",
)
RATE_UNITS = ("gal", "kWh")
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/ ]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")


class UnknownRatePlan(LookupError):
    """No rate plan of that name has been imported."""


def load_plan(conn: psycopg.Connection, rate_plan: str) -> RatePlan | None:
    """The plan named `rate_plan` with its tiers, or None."""
    row = conn.execute(
        "SELECT rate_plan, description, currency, fixed_charge, unit FROM rate_plans "
        "WHERE rate_plan = %s",
        (rate_plan,),
    ).fetchone()
    if row is None:
        return None
    tiers = conn.execute(
        "SELECT tier_from, tier_to, price_per_unit FROM rate_tiers WHERE rate_plan = %s "
        "ORDER BY tier_from",
        (rate_plan,),
    ).fetchall()
    return RatePlan(row[0], row[1], row[2], row[3], row[4], tuple(Tier(*tier) for tier in tiers))


def list_plans(conn: psycopg.Connection) -> list[RatePlan]:
    """Every plan, by name."""
    names = [r[0] for r in conn.execute("SELECT rate_plan FROM rate_plans ORDER BY rate_plan")]
    return [plan for name in names if (plan := load_plan(conn, name)) is not None]


def price_usage(
    conn: psycopg.Connection,
    rate_plan_id: str,
    usage: float | Decimal,
    period_days: int | None = None,
) -> Bill:
    """Price `usage` (in the plan's unit) for one billing period of `period_days` days on the
    plan `rate_plan_id` (see `billing.tiers.price` for proration). Raises UnknownRatePlan when
    the plan has not been imported."""
    plan = load_plan(conn, rate_plan_id)
    if plan is None:
        raise UnknownRatePlan(
            f"rate plan {rate_plan_id!r} is not known: import it with `meterwatch import-rates`"
        )
    return price(plan, usage, period_days)


# --- the CSV import ---------------------------------------------------------------------------


@dataclass
class RatesReport:
    """What an import found and did."""

    path: Path
    problems: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _decimal(text: str, what: str, where: str, problems: list[str]) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        problems.append(f"{where}: {what} {text!r} is not a number: write it like 12.50")
        return None
    if not value.is_finite() or value < 0:
        problems.append(f"{where}: {what} {text!r} must be a number of 0 or more")
        return None
    return value


def read_rates_csv(path: Path) -> tuple[list[RatePlan], list[str]]:
    """The plans in a rates CSV and every problem found (each naming the row and the fix)."""
    problems: list[str] = []
    name = path.name
    if not path.is_file():
        raise FileNotFoundError(f"rates file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in RATE_COLUMNS if c not in header]
        if missing:
            return [], [
                f"{name} row 1: missing column(s) {', '.join(missing)}: the header must be "
                f"{','.join(RATE_COLUMNS)}"
            ]
        plans: dict[str, dict[str, str]] = {}
        first_row: dict[str, int] = {}
        tiers: dict[str, list[Tier]] = defaultdict(list)
        for number, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
            where = f"{name} row {number}"
            plan = row["rate_plan"]
            if not _PLAN_NAME.fullmatch(plan):
                problems.append(
                    f"{where}: rate_plan {plan!r} must be 1-64 letters, digits, spaces or "
                    "_ . - / (it is what accounts.csv names in its rate_plan column)"
                )
                continue
            own = {k: row[k] for k in ("description", "currency", "fixed_charge", "unit")}
            if not _CURRENCY.fullmatch(own["currency"]):
                problems.append(
                    f"{where}: currency {own['currency']!r} is not an ISO 4217 code: write "
                    "it like USD"
                )
            if own["unit"] not in RATE_UNITS:
                problems.append(f"{where}: unit {own['unit']!r} is not gal or kWh")
            _decimal(own["fixed_charge"], "fixed_charge", where, problems)
            if plan in plans and plans[plan] != own:
                changed = [k for k in own if own[k] != plans[plan][k]]
                problems.append(
                    f"{where}: {', '.join(changed)} of plan {plan!r} differ from row "
                    f"{first_row[plan]}: a plan's own columns must be the same on all its rows"
                )
            plans.setdefault(plan, own)
            first_row.setdefault(plan, number)
            low = _decimal(row["tier_from"], "tier_from", where, problems)
            high = _decimal(row["tier_to"], "tier_to", where, problems) if row["tier_to"] else None
            unit_price = _decimal(row["price_per_unit"], "price_per_unit", where, problems)
            if low is None or unit_price is None or (row["tier_to"] and high is None):
                continue
            if high is not None and high <= low:
                problems.append(
                    f"{where}: tier_to {high} is not above tier_from {low}: a tier ends after "
                    "it starts"
                )
                continue
            tiers[plan].append(Tier(low, high, unit_price))
    found: list[RatePlan] = []
    for plan, own in plans.items():
        for problem in check_tiers(tiers[plan]):
            problems.append(f"{name}, plan {plan!r} (from row {first_row[plan]}): {problem}")
        try:
            fixed = Decimal(own["fixed_charge"]).quantize(Decimal("0.01"))
        except InvalidOperation:
            continue
        found.append(
            RatePlan(
                plan,
                own["description"],
                own["currency"],
                fixed,
                own["unit"],
                tuple(sorted(tiers[plan], key=lambda t: t.tier_from)),
            )
        )
    if not plans and not problems:
        problems.append(f"{name}: no rate rows below the header: add one row per tier")
    return found, problems


def _same(a: RatePlan, b: RatePlan) -> bool:
    def key(plan: RatePlan) -> tuple[object, ...]:
        return (
            plan.description,
            plan.currency,
            plan.fixed_charge.normalize(),
            plan.unit,
            tuple(
                (t.tier_from.normalize(), None if t.tier_to is None else t.tier_to.normalize(),
                 t.price_per_unit.normalize())
                for t in plan.tiers
            ),
        )  # fmt: skip

    return key(a) == key(b)


def import_rates(conn: psycopg.Connection, path: Path, *, actor: str) -> RatesReport:
    """Validate the rates CSV at `path` and, when it has no problem, create or replace its plans
    in one transaction with an audit entry. Nothing is written while a problem remains."""
    report = RatesReport(path)
    plans, report.problems = read_rates_csv(path)
    if report.problems:
        return report
    with conn.transaction():
        for plan in plans:
            stored = load_plan(conn, plan.rate_plan)
            if stored is not None and _same(stored, plan):
                report.unchanged.append(plan.rate_plan)
                continue
            conn.execute(
                """INSERT INTO rate_plans (rate_plan, description, currency, fixed_charge, unit)
                   VALUES (%s, %s, %s, %s, %s)
                   ON CONFLICT (rate_plan) DO UPDATE SET description = EXCLUDED.description,
                     currency = EXCLUDED.currency, fixed_charge = EXCLUDED.fixed_charge,
                     unit = EXCLUDED.unit, updated_at = now()""",
                (plan.rate_plan, plan.description, plan.currency, plan.fixed_charge, plan.unit),
            )
            conn.execute("DELETE FROM rate_tiers WHERE rate_plan = %s", (plan.rate_plan,))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO rate_tiers (rate_plan, tier_from, tier_to, price_per_unit) "
                    "VALUES (%s, %s, %s, %s)",
                    [
                        (plan.rate_plan, t.tier_from, t.tier_to, t.price_per_unit)
                        for t in plan.tiers
                    ],
                )
            (report.created if stored is None else report.updated).append(plan.rate_plan)
        if report.created or report.updated:
            record_audit(
                conn,
                actor=actor,
                action="import_rates",
                entity="rate_plans",
                entity_id=None,
                reason=f"imported {path.name}",
                details={"created": report.created, "updated": report.updated},
            )
    return report
