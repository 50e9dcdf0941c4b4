"""Deciding alerts inside the dataflow's transaction: the `stream.sink.AfterStore` hook.

`AlertDecider` is called by the database sink with the reads each batch stored now (never a
read stored before) and the flag writes it applied, in the batch's own transaction. It

1. adds the batch's reads to exact running totals per account, commodity and local day
   (`account_daily_usage`) and billing period (`account_period_usage`), only for accounts with
   a usage rule (*tracked* accounts), with one COPY and one upsert statement for both;
2. compares the new totals with the customer's daily, period and projected-bill thresholds, and
   turns new `leak` and `burst` flags into leak notices;
3. inserts each alert into the outbox (`alerts`) with `ON CONFLICT DO NOTHING` on
   (account, rule, period_start): the database, not memory, guarantees one alert per rule and
   period, across replays, restarts and several dataflow workers;
4. NOTIFYs the notifiers, which the database delivers when the batch commits.

Because all of this commits with the reads (or not at all), an alert exists exactly when the
read that crossed the threshold is stored.

Exact totals while accounts come and go. A row is created from a recount of `reads` (so usage
stored before the account was tracked counts) and only incremented afterwards. Which accounts
are tracked lives in `alert_tracked_accounts`, changed only under an exclusive advisory lock
that every batch holds in shared mode while it counts; so a batch either counts an account's
reads (the account was tracked when it began) or commits them before the change, and then the
recount sees them. Changes to thresholds, cycle days and rate plans reach that table through
`alert_tracking_queue`, filled by triggers (sql/010_alerts.sql) and applied here every
`refresh_s` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from alerts.messages import AlertFacts, email_text, sms_text
from alerts.periods import BillingPeriod, billing_period, day_bounds, read_day
from alerts.pricing import Tariffs, marginal_cost
from meterwatch.settings import Settings

if TYPE_CHECKING:  # the notifier imports this module without the dataflow's engine
    from stream.meter import StoredRead
    from stream.sink import AfterStore, StoredFlag

log = logging.getLogger(__name__)

# The channel the notifiers LISTEN on; the hook NOTIFYs it when it inserted a pending alert.
NOTIFY_CHANNEL = "meterwatch_alerts"
# Names "alert tracking" among advisory locks: batches hold it shared, changes take it alone.
TRACKING_LOCK = 0x616C7274  # "alrt"
USAGE_RULES = ("daily", "period", "projected_bill")
FLAG_RULES = ("leak", "burst")
# How long `apply_tracking_changes` waits for running batches before trying again later.
_SYNC_LOCK_TIMEOUT = "5s"

# IF NOT EXISTS every batch (a fraction of a millisecond): a table created in a transaction that
# rolled back is gone, and the sink goes on with the same connection.
_TEMP_TABLE = """
CREATE TEMP TABLE IF NOT EXISTS alert_usage_delta (
  account_id text, unit text, day date, period_start date, period_end date, delta float8,
  daily bool, period bool
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS alert_usage_new (
  account_id text, unit text, key date, lo timestamptz, hi timestamptz, period bool
) ON COMMIT DELETE ROWS
"""

# One statement for both tables. A row created now starts at the batch's delta and is recounted
# right after (`_RECOUNT_*`); an existing row gets the delta. ORDER BY takes row locks in one
# order in every worker, so two workers never deadlock on them. `xmax = 0` tells an inserted
# row from an updated one.
_UPSERT_USAGE = """
WITH days AS (
  INSERT INTO account_daily_usage AS u (account_id, unit, day, usage)
  SELECT account_id, unit, day, delta FROM alert_usage_delta WHERE daily
   ORDER BY account_id, unit, day
  ON CONFLICT (account_id, unit, day) DO UPDATE SET usage = u.usage + EXCLUDED.usage
  RETURNING account_id, unit, day, usage, xmax = 0 AS created
), periods AS (
  INSERT INTO account_period_usage AS u (account_id, unit, period_start, period_end, usage)
  SELECT account_id, unit, period_start, max(period_end), sum(delta) FROM alert_usage_delta
   WHERE period GROUP BY account_id, unit, period_start ORDER BY account_id, unit, period_start
  ON CONFLICT (account_id, unit, period_start) DO UPDATE SET usage = u.usage + EXCLUDED.usage
  RETURNING account_id, unit, period_start, usage, xmax = 0 AS created
)
SELECT false, * FROM days UNION ALL SELECT true, * FROM periods
"""

# A row created by this transaction is set from the reads: those stored before (also before the
# account was tracked) and this batch's own. A concurrent batch of another worker cannot have
# counted its reads here (uncommitted), and it adds them when it meets this row, after this
# transaction commits: exact either way.
# The rows to recount come by COPY into `alert_usage_new` (`_store_usage`): passing them as
# array parameters cost more Python time (psycopg builds arrays element by element) than the
# rest of the hook when a batch opens a day for thousands of accounts.
_RECOUNT = """
UPDATE {table} u
   SET usage = (SELECT coalesce(sum(r.value), 0) FROM reads r
                 WHERE r.account_id = c.account_id AND r.ts > c.lo AND r.ts <= c.hi
                   AND (r.reported_unit = 'kWh') = (c.unit = 'kWh'))
  FROM alert_usage_new c
 WHERE c.period = {period} AND u.account_id = c.account_id AND u.unit = c.unit
   AND u.{key} = c.key
RETURNING u.account_id, u.unit, u.{key}, u.usage
"""
_RECOUNT_DAYS = _RECOUNT.format(table="account_daily_usage", key="day", period="false")
_RECOUNT_PERIODS = _RECOUNT.format(table="account_period_usage", key="period_start", period="true")

# Late: the account already had reads after the period's end, stored before this transaction
# (`received_at` is the storing transaction's start; this batch's reads have now()).
_LATE = """
SELECT c.n FROM unnest(%s::text[], %s::timestamptz[]) WITH ORDINALITY AS c(account_id, hi, n)
 WHERE EXISTS (SELECT 1 FROM reads r
                WHERE r.account_id = c.account_id AND r.ts > c.hi AND r.received_at < now())
"""

_RECIPIENTS = """
SELECT a.account_id, a.rate_plan, c.name AS customer, c.email, c.phone,
       s.daily_threshold, s.period_threshold, s.projected_bill_threshold::float8
         AS projected_bill_threshold,
       coalesce(s.leak_alerts, true) AS leak_alerts,
       coalesce(s.email_opt_in, false) AS email_opt_in,
       coalesce(s.sms_opt_in, false) AS sms_opt_in
  FROM accounts a JOIN customers c USING (customer_id)
  LEFT JOIN alert_settings s USING (account_id)
 WHERE a.account_id = ANY(%s)
"""

_INSERT_ALERT = """
INSERT INTO alerts (account_id, rule, period_start, period_end, detected_at, late, status,
                    channels, message, flag_id, details)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (account_id, rule, period_start) DO NOTHING
RETURNING alert_id
"""


@dataclass(slots=True)
class Tracked:
    """What the decider keeps in memory about a tracked account."""

    account_id: str
    cycle_day: int
    rate_plan: str | None
    daily_threshold: float | None
    period_threshold: float | None
    projected_bill_threshold: float | None


@dataclass(slots=True)
class Recipient:
    """An account's current settings and contact details, read when an alert is decided."""

    account_id: str
    rate_plan: str | None
    customer: str
    email: str | None
    phone: str | None
    daily_threshold: float | None
    period_threshold: float | None
    projected_bill_threshold: float | None
    leak_alerts: bool
    email_opt_in: bool
    sms_opt_in: bool

    @property
    def channels(self) -> list[str]:
        """The channels the customer opted in to and can be reached on."""
        found = []
        if self.email_opt_in and self.email:
            found.append("email")
        if self.sms_opt_in and self.phone:
            found.append("sms")
        return found


@dataclass(slots=True)
class _Span:
    """A batch's usage of one account and commodity on one day, or in one period (made of
    `days`): (lo, hi] in UTC, the sum, and — only where a threshold was reached — the reads."""

    lo: datetime
    hi: datetime
    delta: float = 0.0
    reads: list[tuple[datetime, float]] = field(default_factory=list)
    days: list[_Span] = field(default_factory=list)

    def all_reads(self) -> list[tuple[datetime, float]]:
        return [r for day in self.days for r in day.reads] if self.days else self.reads


@dataclass(slots=True)
class Candidate:
    """An alert the totals call for, before its recipient and lateness are known."""

    account_id: str
    rule: str
    unit: str
    period_start: date
    period_end: date
    hi: datetime
    detected_at: datetime
    usage: float
    threshold: float
    period_usage: float | None = None
    projected_usage: float | None = None
    projected_amount: float | None = None


@dataclass(frozen=True, slots=True)
class DeciderConfig:
    """What the decider needs from the settings."""

    tz: tzinfo
    utility: str
    link: str
    refresh_s: float
    projection_min_days: float
    tariffs: Tariffs

    @classmethod
    def from_settings(cls, settings: Settings) -> DeciderConfig:
        return cls(
            tz=settings.tz,
            utility=settings.utility_name,
            link=settings.portal_url,
            refresh_s=settings.alert_refresh_s,
            projection_min_days=settings.alert_projection_min_days,
            tariffs=Tariffs(
                {"gal": settings.alert_price_per_gal, "kWh": settings.alert_price_per_kwh},
                settings.alert_fixed_charge,
                settings.currency,
            ),
        )


def _unit(reported_unit: str) -> str:
    return "kWh" if reported_unit == "kWh" else "gal"


def _crossing(reads: list[tuple[datetime, float]], before: float, threshold: float) -> datetime:
    """The timestamp of the read at which the running total first reached `threshold` (the
    first read when it was reached before this batch, e.g. after a threshold was lowered)."""
    ordered = sorted(reads)
    total = before
    for ts, value in ordered:
        total += value
        if total >= threshold:
            return ts
    return ordered[-1][0]


class AlertDecider:
    """The alerts hook of the database sink (see the module docstring). One instance may serve
    several sink workers (threads); `database_url` is for the short transactions that apply
    tracking changes, outside the batches' own."""

    def __init__(self, database_url: str, config: DeciderConfig) -> None:
        self.database_url = database_url
        self.config = config
        self._tracked: dict[str, Tracked] = {}
        self._version: int | None = None
        self._cache_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._synced_at = -float("inf")
        # (account, rule, period_start) known to be in the outbox already: saves composing a
        # message for an account that stays over its threshold all day. Only committed rows
        # (found by a conflict) go in, so a rolled-back batch never hides an alert.
        self._decided: set[tuple[str, str, date]] = set()

    @classmethod
    def from_settings(cls, database_url: str, settings: Settings) -> AlertDecider:
        return cls(database_url, DeciderConfig.from_settings(settings))

    # --- the hook -------------------------------------------------------------------------------

    def __call__(
        self, conn: psycopg.Connection, reads: list[StoredRead], flags: list[StoredFlag]
    ) -> None:
        pending = 0
        if reads:
            self._maybe_apply_tracking_changes(conn)
            candidates = self._usage_candidates(conn, reads)
            if candidates:
                pending += self._insert_usage_alerts(conn, candidates)
        notices = [f for f in flags if f.created and f.write.change.kind in FLAG_RULES]
        if notices:
            pending += self._insert_flag_alerts(conn, notices)
        if pending:
            conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))

    # --- which accounts are tracked ---------------------------------------------------------------

    def _maybe_apply_tracking_changes(self, conn: psycopg.Connection) -> None:
        """Every `refresh_s`, when changes are queued, apply them in a short transaction of its
        own, before this batch takes the tracking lock (shared): never while holding it."""
        now = time.monotonic()
        if now - self._synced_at < self.config.refresh_s:
            return
        if not self._sync_lock.acquire(blocking=False):
            return  # another worker thread is at it
        try:
            self._synced_at = now
            queued = conn.execute("SELECT EXISTS (SELECT 1 FROM alert_tracking_queue)").fetchone()
            if queued and queued[0]:
                with psycopg.connect(self.database_url) as sync:
                    apply_tracking_changes(sync)
        except psycopg.errors.LockNotAvailable:
            log.info("alert tracking changes wait for running batches; trying again later")
        except psycopg.OperationalError as exc:
            log.warning("could not apply alert tracking changes (%s); trying again later", exc)
        finally:
            self._sync_lock.release()

    def _tracked_accounts(self, conn: psycopg.Connection) -> dict[str, Tracked]:
        """The tracked accounts as of this batch: takes the tracking lock (shared, until the
        batch commits) and reloads what changed since the version in memory."""
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (TRACKING_LOCK,))
        row = conn.execute(
            "SELECT version FROM data_versions WHERE name = 'alert_tracking'"
        ).fetchone()
        version = row[0] if row else 0
        with self._cache_lock:
            if version == self._version:
                return self._tracked
            query = (
                "SELECT account_id, active, cycle_day, rate_plan, daily_threshold, "
                "period_threshold, projected_bill_threshold::float8 FROM alert_tracked_accounts"
            )
            if self._version is None or version < self._version:
                rows = conn.execute(query + " WHERE active").fetchall()
                tracked: dict[str, Tracked] = {}
            else:
                rows = conn.execute(
                    query + " WHERE changed_version > %s", (self._version,)
                ).fetchall()
                tracked = dict(self._tracked)
            for account_id, active, cycle_day, plan, daily, period, bill in rows:
                if active:
                    tracked[account_id] = Tracked(account_id, cycle_day, plan, daily, period, bill)
                else:
                    tracked.pop(account_id, None)
            # A new dict, swapped in whole: other worker threads may be reading the old one.
            self._tracked, self._version = tracked, version
            return tracked

    # --- usage rules ------------------------------------------------------------------------------

    def _usage_candidates(
        self, conn: psycopg.Connection, reads: list[StoredRead]
    ) -> list[Candidate]:
        tracked = self._tracked_accounts(conn)
        if not tracked:
            return []
        tz = self.config.tz
        # The hot loop (every read of the batch): plain dicts and locals only.
        totals: dict[tuple[str, str, date], float] = {}
        day_of: dict[datetime, date] = {}
        for read in reads:
            account_id = read.account_id
            value = read.value
            if value is None or account_id not in tracked:
                continue
            ts = read.ts
            day = day_of.get(ts)
            if day is None:
                day = day_of[ts] = read_day(ts, tz)
            key = (account_id, "kWh" if read.reported_unit == "kWh" else "gal", day)
            totals[key] = totals.get(key, 0.0) + value
        if not totals:
            return []
        days: dict[tuple[str, str, date], _Span] = {}
        periods: dict[tuple[str, str, date], tuple[BillingPeriod, _Span]] = {}
        day_period: dict[tuple[str, str, date], tuple[str, str, date]] = {}
        day_span: dict[date, tuple[datetime, datetime]] = {}
        period_of: dict[tuple[date, int], BillingPeriod] = {}
        period_span: dict[BillingPeriod, tuple[datetime, datetime]] = {}
        for key, delta in totals.items():
            account_id, unit, day = key
            bounds = day_span.get(day)
            if bounds is None:
                bounds = day_span[day] = day_bounds(day, tz)
            span = days[key] = _Span(*bounds, delta)
            cycle_day = tracked[account_id].cycle_day
            period = period_of.get((day, cycle_day))
            if period is None:
                period = period_of[(day, cycle_day)] = billing_period(day, cycle_day)
            period_key = day_period[key] = (account_id, unit, period.start)
            known = periods.get(period_key)
            if known is None:
                bounds = period_span.get(period)
                if bounds is None:
                    bounds = period_span[period] = period.bounds(tz)
                known = periods[period_key] = (period, _Span(*bounds))
            known[1].delta += delta
            known[1].days.append(span)

        day_usage, period_usage = self._store_usage(conn, tracked, days, periods, day_period)

        # Which totals reached a threshold; the reads behind them are gathered afterwards, for
        # these few only, to find the read that crossed.
        daily: list[tuple[str, str, date]] = []
        for key in days:
            account_id, _, day = key
            threshold = tracked[account_id].daily_threshold
            if (
                threshold is not None
                and day_usage[key] >= threshold
                and (account_id, "daily", day) not in self._decided
            ):
                daily.append(key)
        over_period: list[tuple[str, str, date]] = []
        projected: list[tuple[str, str, date]] = []
        for key in period_usage:
            account = tracked[key[0]]
            if (
                account.period_threshold is not None
                and period_usage[key] >= account.period_threshold
                and (key[0], "period", key[2]) not in self._decided
            ):
                over_period.append(key)
            if (
                account.projected_bill_threshold is not None
                and (key[0], "projected_bill", key[2]) not in self._decided
            ):
                projected.append(key)
        if not (daily or over_period or projected):
            return []
        wanted = {key[0] for key in (*daily, *over_period, *projected)}
        for read in reads:
            if read.account_id in wanted and read.value is not None:
                key = (read.account_id, _unit(read.reported_unit), day_of[read.ts])
                days[key].reads.append((read.ts, read.value))

        candidates: list[Candidate] = []
        for key in daily:
            account_id, unit, day = key
            span = days[key]
            usage = day_usage[key]
            threshold = tracked[account_id].daily_threshold
            assert threshold is not None
            candidates.append(
                Candidate(
                    account_id, "daily", unit, day, day, span.hi,
                    _crossing(span.reads, usage - span.delta, threshold), usage, threshold,
                    period_usage=period_usage.get(day_period[key]),
                )
            )  # fmt: skip
        for key in over_period:
            account_id, unit, _ = key
            period, span = periods[key]
            usage = period_usage[key]
            threshold = tracked[account_id].period_threshold
            assert threshold is not None
            candidates.append(
                Candidate(
                    account_id, "period", unit, period.start, period.end, span.hi,
                    _crossing(span.all_reads(), usage - span.delta, threshold), usage, threshold,
                )
            )  # fmt: skip
        for key in projected:
            period, span = periods[key]
            found = self._projected(conn, tracked[key[0]], key[1], period, span, period_usage[key])
            if found is not None:
                candidates.append(found)
        return candidates

    def _store_usage(
        self,
        conn: psycopg.Connection,
        tracked: dict[str, Tracked],
        days: dict[tuple[str, str, date], _Span],
        periods: dict[tuple[str, str, date], tuple[BillingPeriod, _Span]],
        day_period: dict[tuple[str, str, date], tuple[str, str, date]],
    ) -> tuple[dict[tuple[str, str, date], float], dict[tuple[str, str, date], float]]:
        """Add the batch's usage to the daily and period totals (only where the account has a
        rule that needs them); returns the totals after this batch."""
        day_usage: dict[tuple[str, str, date], float] = {}
        period_usage: dict[tuple[str, str, date], float] = {}
        new_days: list[tuple[str, str, date]] = []
        new_periods: list[tuple[str, str, date]] = []
        with conn.cursor() as cur:
            cur.execute(_TEMP_TABLE)
            with cur.copy(
                "COPY alert_usage_delta (account_id, unit, day, period_start, period_end, delta,"
                " daily, period) FROM STDIN"
            ) as copy:
                for key, span in days.items():
                    account = tracked[key[0]]
                    period = periods[day_period[key]][0]
                    copy.write_row(
                        (
                            *key, period.start, period.end, span.delta,
                            account.daily_threshold is not None,
                            account.period_threshold is not None
                            or account.projected_bill_threshold is not None,
                        )
                    )  # fmt: skip
            for is_period, account_id, unit, when, usage, created in cur.execute(_UPSERT_USAGE):
                key = (account_id, unit, when)
                if is_period:
                    period_usage[key] = usage
                    if created:
                        new_periods.append(key)
                else:
                    day_usage[key] = usage
                    if created:
                        new_days.append(key)
            if not (new_days or new_periods):
                return day_usage, period_usage
            with cur.copy(
                "COPY alert_usage_new (account_id, unit, key, lo, hi, period) FROM STDIN"
            ) as copy:
                for key in new_days:
                    span = days[key]
                    copy.write_row((*key, span.lo, span.hi, False))
                for key in new_periods:
                    span = periods[key][1]
                    copy.write_row((*key, span.lo, span.hi, True))
            for new, statement, totals in (
                (new_days, _RECOUNT_DAYS, day_usage),
                (new_periods, _RECOUNT_PERIODS, period_usage),
            ):
                if new:
                    for account_id, unit, when, usage in cur.execute(statement):
                        totals[(account_id, unit, when)] = usage
        return day_usage, period_usage

    def _projected(
        self,
        conn: psycopg.Connection,
        account: Tracked,
        unit: str,
        period: BillingPeriod,
        span: _Span,
        usage: float,
    ) -> Candidate | None:
        """The projected-bill candidate of one period, if the projection crosses the threshold
        at one of this batch's reads (data time decides the elapsed fraction)."""
        assert account.projected_bill_threshold is not None
        length = (span.hi - span.lo).total_seconds()
        min_elapsed = self.config.projection_min_days * 86_400
        cutoff = self.config.tariffs.usage_cutoff(
            conn, account.rate_plan, unit, period.days, account.projected_bill_threshold
        )
        total = usage - span.delta
        for ts, value in sorted(span.all_reads()):
            total += value
            elapsed = (ts - span.lo).total_seconds()
            if elapsed < min_elapsed or elapsed <= 0:
                continue
            projected = total * length / elapsed
            if projected >= cutoff:
                return Candidate(
                    account.account_id, "projected_bill", unit, period.start, period.end,
                    span.hi, ts, usage, account.projected_bill_threshold,
                    projected_usage=projected,
                )  # fmt: skip
        return None

    def _insert_usage_alerts(self, conn: psycopg.Connection, candidates: list[Candidate]) -> int:
        recipients = _recipients(conn, {c.account_id for c in candidates})
        late_rows = conn.execute(
            _LATE, ([c.account_id for c in candidates], [c.hi for c in candidates])
        ).fetchall()
        late = {row[0] - 1 for row in late_rows}
        rows: list[tuple[Any, ...]] = []
        for index, c in enumerate(candidates):
            recipient = recipients.get(c.account_id)
            if recipient is None:
                continue
            # The settings as they are now: a threshold raised or removed since the tracked
            # accounts were last refreshed no longer fires.
            current = {
                "daily": recipient.daily_threshold,
                "period": recipient.period_threshold,
                "projected_bill": recipient.projected_bill_threshold,
            }[c.rule]
            if current is None or (c.rule != "projected_bill" and c.usage < current):
                continue
            c.threshold = current
            row = self._usage_alert_row(conn, c, recipient, index in late)
            if row is not None:
                rows.append(row)
        return self._insert(conn, rows)

    def _usage_alert_row(
        self, conn: psycopg.Connection, c: Candidate, recipient: Recipient, late: bool
    ) -> tuple[Any, ...] | None:
        period = BillingPeriod(c.period_start, c.period_end)
        tariff = self.config.tariffs.for_account(conn, recipient.rate_plan, c.unit, period.days)
        facts = AlertFacts(
            rule=c.rule,
            utility=self.config.utility,
            customer=recipient.customer,
            account_id=c.account_id,
            unit=c.unit,
            currency=tariff.currency,
            link=self.config.link,
            usage=c.usage,
            threshold=c.threshold if c.rule != "projected_bill" else None,
            day=c.period_start if c.rule == "daily" else None,
            period_start=c.period_start,
            period_end=c.period_end,
            late=late,
        )
        extra: dict[str, Any] = {"tariff": tariff.source}
        if c.rule == "daily":
            # What the day's use adds to the bill: its cost on top of the rest of the period's
            # use (tiers make a gallon dearer late in the period).
            before = max((c.period_usage or c.usage) - c.usage, 0.0)
            cost = marginal_cost(tariff.price, before, c.usage)
            facts = _replace(facts, cost=cost)
        elif c.rule == "period":
            facts = _replace(facts, cost=round(tariff.price(c.usage), 2))
        else:
            assert c.projected_usage is not None
            amount = round(tariff.price(c.projected_usage), 2)
            if amount < c.threshold:  # the threshold was raised since it was last read
                return None
            facts = _replace(
                facts,
                projected_usage=c.projected_usage,
                projected_amount=amount,
                bill_threshold=c.threshold,
            )
        return self._alert_row(
            facts, recipient, c.detected_at, late, flag_id=None, critical=False, extra=extra
        )

    # --- leak notices -----------------------------------------------------------------------------

    def _insert_flag_alerts(self, conn: psycopg.Connection, notices: list[StoredFlag]) -> int:
        recipients = _recipients(conn, {f.write.account_id for f in notices})
        rows: list[tuple[Any, ...]] = []
        for notice in notices:
            change = notice.write.change
            recipient = recipients.get(notice.write.account_id)
            if recipient is None or not recipient.leak_alerts:
                continue
            detected = datetime.fromtimestamp(change.detected_at, UTC)
            day = read_day(detected, self.config.tz)
            if (recipient.account_id, change.kind, day) in self._decided:
                continue
            details = change.details or {}
            # The detectors name their numbers differently (leak: leak_rate, volume_lost;
            # burst: highest_rate, volume); the span comes from the flag itself.
            rate = _number(details, "leak_rate", "highest_rate", "rate")
            lost = _number(details, "volume_lost", "volume")
            hours = _number(details, "hours")
            if hours is None:
                hours = round(max(change.detected_at - change.started_at, 0) / 3600.0, 1)
            tariff = self.config.tariffs.for_account(conn, recipient.rate_plan, "gal", 30)
            facts = AlertFacts(
                rule=change.kind,
                utility=self.config.utility,
                customer=recipient.customer,
                account_id=recipient.account_id,
                unit="gal",
                currency=tariff.currency,
                link=self.config.link,
                day=day,
                period_start=day,
                period_end=day,
                meter_id=notice.write.meter_id,
                leak_rate=rate,
                hours=hours,
                volume_lost=lost,
                cost=marginal_cost(tariff.price, 0.0, lost) if lost else None,
                severity=change.severity,
            )
            # A burst, or a leak the detector rates critical, cannot wait for quiet hours.
            critical = change.kind == "burst" or change.severity == "critical"
            extra = {"tariff": tariff.source, "evidence": change.evidence}
            rows.append(
                self._alert_row(facts, recipient, detected, False, notice.flag_id, critical, extra)
            )
        return self._insert(conn, rows)

    # --- the outbox -------------------------------------------------------------------------------

    def _alert_row(
        self,
        facts: AlertFacts,
        recipient: Recipient,
        detected_at: datetime,
        late: bool,
        flag_id: int | None,
        critical: bool,
        extra: dict[str, Any],
    ) -> tuple[Any, ...]:
        channels = recipient.channels
        subject, body = email_text(facts)
        message = sms_text(facts)
        details = {
            **{k: _plain(v) for k, v in _facts_dict(facts).items() if v is not None},
            **extra,
            "critical": critical,
            "email_subject": subject,
            "email_body": body,
        }
        assert facts.period_start is not None and facts.period_end is not None
        return (
            facts.account_id,
            facts.rule,
            facts.period_start,
            facts.period_end,
            detected_at,
            late,
            "pending" if channels else "suppressed",
            channels,
            message,
            flag_id,
            Jsonb(details),
        )

    def _insert(self, conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> int:
        """Insert alerts, skipping those already in the outbox; returns how many new ones
        wait for delivery."""
        if not rows:
            return 0
        pending = 0
        with conn.cursor() as cur:
            cur.executemany(_INSERT_ALERT, rows, returning=True)
            for row in rows:
                inserted = cur.fetchone()
                if inserted is None:  # already in the outbox (committed: conflicts wait)
                    self._remember((row[0], row[1], row[2]))
                elif row[6] == "pending":
                    pending += 1
                cur.nextset()
        return pending

    def _remember(self, key: tuple[str, str, date]) -> None:
        if len(self._decided) > 500_000:
            self._decided.clear()
        self._decided.add(key)


def _number(details: dict[str, Any], *names: str) -> float | None:
    """The first of `names` that `details` has as a number."""
    for name in names:
        value = details.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _replace(facts: AlertFacts, **changes: Any) -> AlertFacts:
    return replace(facts, **changes)


def _facts_dict(facts: AlertFacts) -> dict[str, Any]:
    return {name: getattr(facts, name) for name in facts.__slots__}


def _plain(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 3)
    return value


def _recipients(conn: psycopg.Connection, account_ids: Iterable[str]) -> dict[str, Recipient]:
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return {r.account_id: r for r in cur.execute(_RECIPIENTS, (sorted(account_ids),))}


# --- applying tracking changes ----------------------------------------------------------------


# The accounts whose tracking changes, worked out in the database (a CIS import of a million
# enrolled accounts queues a million: row by row from Python that took minutes). `reset_all`:
# tracking starts or stops, every usage row goes; `reset_periods`: the cycle day moved, the
# period rows go. An account that stops being tracked keeps its last settings.
_TRACKING_CHANGES = """
CREATE TEMP TABLE alert_tracking_changes ON COMMIT DROP AS
WITH wanted AS (
  SELECT a.account_id, a.cycle_day, a.rate_plan, s.daily_threshold, s.period_threshold,
         s.projected_bill_threshold
    FROM alert_tracking_ids JOIN accounts a USING (account_id)
    JOIN alert_settings s USING (account_id)
   WHERE s.daily_threshold IS NOT NULL OR s.period_threshold IS NOT NULL
      OR s.projected_bill_threshold IS NOT NULL
)
SELECT i.account_id, w.account_id IS NOT NULL AS active,
       CASE WHEN w.account_id IS NULL THEN t.cycle_day ELSE w.cycle_day END AS cycle_day,
       CASE WHEN w.account_id IS NULL THEN t.rate_plan ELSE w.rate_plan END AS rate_plan,
       CASE WHEN w.account_id IS NULL THEN t.daily_threshold ELSE w.daily_threshold END
         AS daily_threshold,
       CASE WHEN w.account_id IS NULL THEN t.period_threshold ELSE w.period_threshold END
         AS period_threshold,
       CASE WHEN w.account_id IS NULL THEN t.projected_bill_threshold
            ELSE w.projected_bill_threshold END AS projected_bill_threshold,
       w.account_id IS NULL OR t.account_id IS NULL OR NOT t.active AS reset_all,
       w.account_id IS NOT NULL AND t.active AND t.cycle_day <> w.cycle_day AS reset_periods
  FROM alert_tracking_ids i
  LEFT JOIN wanted w USING (account_id)
  LEFT JOIN alert_tracked_accounts t USING (account_id)
 WHERE CASE WHEN w.account_id IS NULL THEN coalesce(t.active, false)
            WHEN t.account_id IS NULL OR NOT t.active THEN true
            ELSE (w.cycle_day, w.rate_plan, w.daily_threshold, w.period_threshold,
                  w.projected_bill_threshold)
                 IS DISTINCT FROM (t.cycle_day, t.rate_plan, t.daily_threshold,
                                   t.period_threshold, t.projected_bill_threshold) END
"""

_APPLY_TRACKING_CHANGES = """
INSERT INTO alert_tracked_accounts
  (account_id, active, cycle_day, rate_plan, daily_threshold, period_threshold,
   projected_bill_threshold, changed_version)
SELECT account_id, active, cycle_day, rate_plan, daily_threshold, period_threshold,
       projected_bill_threshold, %s
  FROM alert_tracking_changes ORDER BY account_id
ON CONFLICT (account_id) DO UPDATE
   SET active = EXCLUDED.active, cycle_day = EXCLUDED.cycle_day,
       rate_plan = EXCLUDED.rate_plan, daily_threshold = EXCLUDED.daily_threshold,
       period_threshold = EXCLUDED.period_threshold,
       projected_bill_threshold = EXCLUDED.projected_bill_threshold,
       changed_version = EXCLUDED.changed_version, changed_at = now()
"""


def apply_tracking_changes(conn: psycopg.Connection) -> int:
    """Apply the queued changes of thresholds, cycle days and rate plans to
    `alert_tracked_accounts`, in one transaction on `conn` under the exclusive tracking lock;
    returns how many accounts changed. An account that starts or stops being tracked loses its
    usage rows (they are recounted from `reads` when next needed), and so do its period rows
    when its cycle day changed. Raises LockNotAvailable when batches hold the lock too long."""
    with conn.transaction():
        queued = conn.execute("SELECT EXISTS (SELECT 1 FROM alert_tracking_queue)").fetchone()
        if not queued or not queued[0]:
            return 0
        conn.execute(f"SET LOCAL lock_timeout = '{_SYNC_LOCK_TIMEOUT}'")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (TRACKING_LOCK,))
        conn.execute("DROP TABLE IF EXISTS alert_tracking_ids, alert_tracking_changes")
        conn.execute(
            "CREATE TEMP TABLE alert_tracking_ids (account_id text PRIMARY KEY) ON COMMIT DROP"
        )
        # What was queued before this statement's snapshot goes; a change queued meanwhile
        # stays for the next time.
        conn.execute(
            """WITH queued AS (DELETE FROM alert_tracking_queue RETURNING account_id)
               INSERT INTO alert_tracking_ids SELECT DISTINCT account_id FROM queued"""
        )
        conn.execute("ANALYZE alert_tracking_ids")  # a million ids want a hash join
        conn.execute(_TRACKING_CHANGES)
        counted = conn.execute("SELECT count(*) FROM alert_tracking_changes").fetchone()
        changed = int(counted[0]) if counted else 0
        if not changed:
            return 0
        row = conn.execute(
            "UPDATE data_versions SET version = version + 1, changed_at = now() "
            "WHERE name = 'alert_tracking' RETURNING version"
        ).fetchone()
        assert row is not None, "migration 010 inserts the alert_tracking data version"
        version = row[0]
        conn.execute(_APPLY_TRACKING_CHANGES, (version,))
        conn.execute(
            """DELETE FROM account_daily_usage u USING alert_tracking_changes c
                WHERE c.reset_all AND u.account_id = c.account_id"""
        )
        conn.execute(
            """DELETE FROM account_period_usage u USING alert_tracking_changes c
                WHERE (c.reset_all OR c.reset_periods) AND u.account_id = c.account_id"""
        )
        log.info("alert rules changed for %d account(s) (tracking version %d)", changed, version)
        return changed


def alert_hooks(database_url: str, settings: Settings) -> list[AfterStore]:
    """The sink hooks the dataflow runs by default: the alert decider."""
    return [AlertDecider.from_settings(database_url, settings)]


__all__ = [
    "FLAG_RULES",
    "NOTIFY_CHANNEL",
    "TRACKING_LOCK",
    "USAGE_RULES",
    "AlertDecider",
    "Candidate",
    "DeciderConfig",
    "Recipient",
    "Tracked",
    "alert_hooks",
    "apply_tracking_changes",
]
