"""Pricing a billing period's usage on a rate plan: a fixed charge plus tiered block rates, with
the arithmetic kept line by line so that a clerk can check it. Pure functions, no I/O.

Money is `Decimal`, rounded half-up to the cent on each line; the total is the sum of the lines.
A period of 28 to 31 days is one full cycle: the fixed charge and the tier limits apply as
written. A shorter or longer period (a move-in, a final bill) is prorated by days / 30 — both
the fixed charge and every tier limit — and the bill says so.

>>> plan = RatePlan("RES", "Residential", "USD", Decimal("12.00"), "gal", (
...     Tier(Decimal(0), Decimal(5000), Decimal("0.004")),
...     Tier(Decimal(5000), None, Decimal("0.006"))))
>>> bill = price(plan, 7250, period_days=30)
>>> [(line.description, str(line.amount)) for line in bill.lines]
[('Fixed charge', '12.00'), ('Tier 1: 0 to 5,000 gal at 0.004 USD/gal', '20.00'), \
('Tier 2: above 5,000 gal at 0.006 USD/gal', '13.50')]
>>> bill.total
Decimal('45.50')
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
USAGE_STEP = Decimal("0.001")
# A nominal billing period (days): what a prorated period is measured against.
NOMINAL_PERIOD_DAYS = 30
FULL_CYCLE_DAYS = range(28, 32)


@dataclass(frozen=True)
class Tier:
    """Usage in (tier_from, tier_to] of a period at `price_per_unit`; tier_to None: no limit."""

    tier_from: Decimal
    tier_to: Decimal | None
    price_per_unit: Decimal


@dataclass(frozen=True)
class RatePlan:
    rate_plan: str
    description: str
    currency: str
    fixed_charge: Decimal
    unit: str  # 'gal' or 'kWh'
    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class BillLine:
    """One line of the arithmetic: quantity × price = amount."""

    description: str
    quantity: Decimal
    unit: str
    price: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Bill:
    """A priced usage. `proration` is 1 for a full cycle (see the module docstring)."""

    rate_plan: str
    currency: str
    unit: str
    usage: Decimal
    period_days: int | None
    proration: Decimal
    lines: tuple[BillLine, ...]
    total: Decimal
    notes: tuple[str, ...] = field(default=())


def money(value: Decimal) -> Decimal:
    """`value` rounded half-up to the cent."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def proration_for(period_days: int | None) -> Decimal:
    """1 for a full cycle (or unknown length), days / 30 otherwise."""
    if period_days is None or period_days in FULL_CYCLE_DAYS:
        return Decimal(1)
    if period_days <= 0:
        raise ValueError(f"a billing period of {period_days} days is not a period: use 1 or more")
    return Decimal(period_days) / Decimal(NOMINAL_PERIOD_DAYS)


def _number(value: Decimal) -> str:
    """A quantity as people write it: thousands separators, no trailing zeros."""
    text = f"{value.normalize():,f}"
    return text


def check_tiers(tiers: tuple[Tier, ...] | list[Tier]) -> list[str]:
    """What is wrong with a tier table, as sentences (empty when it is sound): the first block
    starts at 0, each starts where the previous one ends, only the last has no limit."""
    problems = []
    ordered = sorted(tiers, key=lambda t: t.tier_from)
    if not ordered:
        return ["a rate plan needs at least one tier"]
    if ordered[0].tier_from != 0:
        problems.append(f"the first tier starts at {ordered[0].tier_from}: start it at 0")
    for before, after in itertools.pairwise(ordered):
        if before.tier_to is None:
            problems.append(
                f"the tier from {before.tier_from} has no upper limit but another tier follows "
                f"it (from {after.tier_from}): give it tier_to {after.tier_from}"
            )
        elif before.tier_to != after.tier_from:
            problems.append(
                f"the tier from {before.tier_from} ends at {before.tier_to} but the next starts "
                f"at {after.tier_from}: make them meet"
            )
    if ordered[-1].tier_to is not None:
        problems.append(
            f"the last tier ends at {ordered[-1].tier_to}: leave its tier_to empty so that "
            "every usage is priced"
        )
    return problems


def price(plan: RatePlan, usage: float | Decimal, period_days: int | None = None) -> Bill:
    """Price `usage` (in the plan's unit, for one billing period of `period_days` days) on
    `plan`: the fixed charge, then each tier's share of the usage at its price."""
    quantity = Decimal(str(usage)).quantize(USAGE_STEP, rounding=ROUND_HALF_UP)
    notes: list[str] = []
    if quantity < 0:
        notes.append(
            f"net usage is negative ({_number(quantity)} {plan.unit}, reverse flow): priced as 0"
        )
        quantity = Decimal(0).quantize(USAGE_STEP)
    factor = proration_for(period_days)
    lines: list[BillLine] = []
    if factor != 1:
        notes.append(
            f"a {period_days}-day period is not a full cycle: the fixed charge and the tier "
            f"limits are prorated by {period_days}/{NOMINAL_PERIOD_DAYS}"
        )
    if plan.fixed_charge:
        lines.append(
            BillLine(
                "Fixed charge" + ("" if factor == 1 else f" × {period_days}/30 days"),
                factor.quantize(Decimal("0.0001")).normalize(),
                "period",
                plan.fixed_charge,
                money(plan.fixed_charge * factor),
            )
        )
    for number, tier in enumerate(sorted(plan.tiers, key=lambda t: t.tier_from), start=1):
        low = tier.tier_from * factor
        high = None if tier.tier_to is None else tier.tier_to * factor
        in_tier = max(Decimal(0), (quantity if high is None else min(quantity, high)) - low)
        if high is None:
            span = f"above {_number(low.quantize(USAGE_STEP))} {plan.unit}"
        else:
            span = (
                f"{_number(low.quantize(USAGE_STEP))} to {_number(high.quantize(USAGE_STEP))} "
                f"{plan.unit}"
            )
        lines.append(
            BillLine(
                f"Tier {number}: {span} at {_number(tier.price_per_unit)} "
                f"{plan.currency}/{plan.unit}",
                in_tier.quantize(USAGE_STEP),
                plan.unit,
                tier.price_per_unit,
                money(in_tier * tier.price_per_unit),
            )
        )
    total = sum((line.amount for line in lines), Decimal(0)).quantize(CENT)
    return Bill(
        rate_plan=plan.rate_plan,
        currency=plan.currency,
        unit=plan.unit,
        usage=quantity,
        period_days=period_days,
        proration=factor,
        lines=tuple(lines),
        total=total,
        notes=tuple(notes),
    )
