"""What usage costs, for the projected-bill rule and the "about $12 so far" in messages.

The projection is deliberately simple and independent of how a utility prices water: the
period's usage so far divided by the elapsed fraction of the period, priced by a *price
function* (usage in one billing period → the bill for it, in currency). Where the account's rate
plan is known to the billing package (issue 5: `billing.rates.load_plan` and
`billing.tiers.price`, tiered block rates plus a fixed charge), its arithmetic is the price
function; otherwise a flat price per unit plus a fixed charge from the settings
(`ALERT_PRICE_PER_GAL`, `ALERT_PRICE_PER_KWH`, `ALERT_FIXED_CHARGE`) stands in.

>>> price = flat_price(0.01, fixed_charge=10.0)
>>> p = project_bill(1500.0, elapsed=0.25, price=price)
>>> p.projected_usage, p.amount
(6000.0, 70.0)
>>> round(usage_reaching(price, 70.0), 3)
6000.0
>>> marginal_cost(price, before=1000.0, extra=200.0)
2.0
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

log = logging.getLogger(__name__)

# Usage in one billing period (in the account's unit) → the bill for it (in currency).
PriceFn = Callable[[float], float]


def flat_price(per_unit: float, fixed_charge: float = 0.0) -> PriceFn:
    """A price function: `fixed_charge` plus `per_unit` for every unit (negative usage is 0)."""

    def price(usage: float) -> float:
        return fixed_charge + per_unit * max(usage, 0.0)

    return price


@dataclass(frozen=True, slots=True)
class Projection:
    """Where a billing period is heading: usage so far over the elapsed fraction, priced."""

    usage: float
    elapsed: float
    projected_usage: float
    amount: float


def project_bill(usage: float, elapsed: float, price: PriceFn) -> Projection:
    """The projected bill of a period with `usage` so far after `elapsed` (0-1] of it."""
    if not 0 < elapsed <= 1:
        raise ValueError(f"elapsed fraction {elapsed} must be in (0, 1]")
    projected = usage / elapsed
    return Projection(usage, elapsed, projected, price(projected))


def marginal_cost(price: PriceFn, before: float, extra: float) -> float:
    """What `extra` units cost on top of `before` units in the same period (tiers included)."""
    return round(price(before + extra) - price(before), 2)


def usage_reaching(price: PriceFn, amount: float, ceiling: float = 1e12) -> float:
    """The smallest usage whose bill reaches `amount` (bisection on a non-decreasing price
    function, to 0.001 units); infinity when not even `ceiling` units cost that much."""
    if price(0.0) >= amount:
        return 0.0
    if price(ceiling) < amount:
        return math.inf
    low, high = 0.0, 1.0
    while price(high) < amount:
        low, high = high, high * 2
    while high - low > 0.001:
        middle = (low + high) / 2
        if price(middle) >= amount:
            high = middle
        else:
            low = middle
    return high


@dataclass(frozen=True, slots=True)
class Tariff:
    """How one account's period is priced, and in which currency; `source` says where the
    price comes from (shown to staff in an alert's details)."""

    price: PriceFn
    currency: str
    source: str


class Tariffs:
    """Finds an account's tariff: its rate plan's tiers when the billing package knows the plan
    in the account's unit, else the flat price of the settings. Plans are cached for
    `refresh_s` seconds, and so are the usage levels at which a bill reaches a threshold."""

    def __init__(
        self,
        per_unit: dict[str, float],
        fixed_charge: float,
        currency: str,
        refresh_s: float = 60.0,
    ) -> None:
        self.per_unit = per_unit
        self.fixed_charge = fixed_charge
        self.currency = currency
        self.refresh_s = refresh_s
        self._plans: dict[str, tuple[float, Any]] = {}
        self._cutoffs: dict[tuple[str, str, int, float], float] = {}
        self._cutoffs_at = time.monotonic()

    def flat(self, unit: str) -> Tariff:
        per_unit = self.per_unit.get(unit, 0.0)
        return Tariff(
            flat_price(per_unit, self.fixed_charge),
            self.currency,
            f"flat {per_unit:g} {self.currency}/{unit} + {self.fixed_charge:g} fixed",
        )

    def for_account(
        self, conn: psycopg.Connection, rate_plan: str | None, unit: str, period_days: int
    ) -> Tariff:
        plan = self._plan(conn, rate_plan) if rate_plan else None
        if plan is None or plan.unit != unit:
            return self.flat(unit)
        from billing.tiers import price as price_on_plan

        def price(usage: float) -> float:
            return float(price_on_plan(plan, usage, period_days).total)

        return Tariff(price, plan.currency, f"rate plan {plan.rate_plan}")

    def usage_cutoff(
        self,
        conn: psycopg.Connection,
        rate_plan: str | None,
        unit: str,
        period_days: int,
        amount: float,
    ) -> float:
        """The period usage at which the bill reaches `amount` (cached: a batch compares many
        accounts on few plans, and pricing tiers with Decimal is not free)."""
        now = time.monotonic()
        if now - self._cutoffs_at > self.refresh_s or len(self._cutoffs) > 100_000:
            self._cutoffs.clear()
            self._cutoffs_at = now
        key = (rate_plan or "", unit, period_days, amount)
        cutoff = self._cutoffs.get(key)
        if cutoff is None:
            tariff = self.for_account(conn, rate_plan, unit, period_days)
            cutoff = self._cutoffs[key] = usage_reaching(tariff.price, amount)
        return cutoff

    def _plan(self, conn: psycopg.Connection, name: str) -> Any:
        now = time.monotonic()
        cached = self._plans.get(name)
        if cached is not None and now - cached[0] < self.refresh_s:
            return cached[1]
        plan = None
        try:
            from billing.rates import load_plan
        except ImportError:  # the billing package (issue 5) is not installed
            pass
        else:
            try:
                with conn.transaction():  # a savepoint: a missing table must not spoil the batch
                    plan = load_plan(conn, name)
            except psycopg.errors.UndefinedTable:
                plan = None
        self._plans[name] = (now, plan)
        return plan
