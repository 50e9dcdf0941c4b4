"""The pre-go-live audit of meter and service-point records: what would put a wrong bill out
in the first cycle if nobody looked.

The same checks run over the database (`run_audit`) and over a CIS export before it is
imported (`audit_files`): both load `Account` and `Assignment` records (from
`meterwatch.cis`) into an `AuditData`, and `check_records` is the one implementation of the
checks. Each finding is `blocking` (it would produce a wrong bill: the CLI exits non-zero) or
a `warning`:

Blocking:

- `invalid_row` (files): a row the import would refuse;
- `duplicate_meter_id`: ids that differ only by case, surrounding spaces or leading zeros
  (`00012345` and `12345`); one meter current on two assignments;
- `overlapping_assignments`: one meter on two service points, or on two accounts at one
  service point, at the same time;
- `retired_meter_on_active_account`: an active account whose meter was removed and not
  replaced;
- `active_account_without_meter`: an active account that has no meter (or gets one later).

Warnings:

- `silent_meter` (database): a current meter with no read for `silent_days`;
- `inactive_account_with_meter`: an inactive account that still has a current meter;
- `coverage_gap`: an active account that had no meter for a while (exchange dates that do
  not meet);
- `future_assignment`: an assignment that starts after now;
- `alerts_without_contact`: opted in to SMS without a phone, or to email without an address;
- `unknown_customer_class`: a customer class meterwatch has no settings for.

Everything is a sort, a sweep or a dictionary lookup, so a million meters audit in seconds
once loaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from meterwatch.cis import (
    KNOWN_CUSTOMER_CLASSES,
    Account,
    Assignment,
    CisProblem,
    format_span,
    format_time,
    open_connection,
    overlap_span,
    overlapping_pairs,
    read_cis,
)
from meterwatch.settings import get_settings

if TYPE_CHECKING:
    from rich.console import Console

Severity = Literal["blocking", "warning"]

# Check name → (title, severity), in the order the report shows them.
CHECKS: dict[str, tuple[str, Severity]] = {
    "invalid_row": ("Rows the import would refuse", "blocking"),
    "duplicate_meter_id": ("Duplicate meter ids", "blocking"),
    "overlapping_assignments": ("Overlapping assignments", "blocking"),
    "retired_meter_on_active_account": ("Retired meters on active accounts", "blocking"),
    "active_account_without_meter": ("Active accounts with no meter", "blocking"),
    "silent_meter": ("Silent meters", "warning"),
    "inactive_account_with_meter": ("Inactive accounts with a current meter", "warning"),
    "coverage_gap": ("Gaps in an account's metering", "warning"),
    "future_assignment": ("Assignments that start in the future", "warning"),
    "alerts_without_contact": ("Alert opt-ins with nowhere to send", "warning"),
    "unknown_customer_class": ("Unknown customer classes", "warning"),
}
# A finding names at most this many ids of one kind (its message gives the full count).
_MAX_IDS = 20


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: which check, how bad, the ids involved, where they come
    from (file rows or assignment ids), and a message naming the thing and the fix."""

    check: str
    severity: Severity
    message: str
    meter_ids: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()
    service_point_ids: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "meter_ids": list(self.meter_ids),
            "account_ids": list(self.account_ids),
            "service_point_ids": list(self.service_point_ids),
            "origins": list(self.origins),
        }


@dataclass
class AuditData:
    """The records an audit checks, from the database or from a CIS export.

    `last_reads` (database only) maps each meter that has a read to its latest read at or
    before the audit's `now`; None means reads are not known (files), and the silent-meter
    check does not run. `exception_reads` gives each meter's latest unresolved read in the
    exception queue, with its reason. `problems` are the export's rows that the import would
    refuse.
    """

    source: str
    accounts: list[Account]
    assignments: list[Assignment]
    problems: list[CisProblem] = field(default_factory=list)
    last_reads: dict[str, datetime] | None = None
    reads_stored: bool = False
    exception_reads: dict[str, tuple[datetime, str]] = field(default_factory=dict)


@dataclass
class AuditReport:
    """The audit's findings, grouped by check when rendered."""

    source: str
    now: datetime
    # Days without a read that make a meter silent; None when reads were not checked (files).
    silent_days: int | None
    findings: list[Finding] = field(default_factory=list)
    # How many records were checked: accounts, assignments, meters.
    checked: dict[str, int] = field(default_factory=dict)
    # Checks that do not apply to this source, and why.
    not_run: dict[str, str] = field(default_factory=dict)

    @property
    def blocking(self) -> list[Finding]:
        """The findings that would produce a wrong bill (truthy when billing is blocked)."""
        return [f for f in self.findings if f.severity == "blocking"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def by_check(self) -> dict[str, list[Finding]]:
        grouped: dict[str, list[Finding]] = {name: [] for name in CHECKS}
        for finding in self.findings:
            grouped.setdefault(finding.check, []).append(finding)
        return grouped

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "now": self.now.isoformat(),
            "silent_days": self.silent_days,
            "checked": dict(self.checked),
            "not_run": dict(self.not_run),
            "blocking": len(self.blocking),
            "warnings": len(self.warnings),
            "by_check": {name: len(found) for name, found in self.by_check().items()},
            "findings": [f.to_dict() for f in self.findings],
        }

    def render(self, console: Console, *, limit: int = 50) -> None:
        """Print a summary table of every check, then a table per check that found
        something (at most `limit` rows each), then a one-line verdict."""
        from rich.markup import escape
        from rich.table import Table

        grouped = self.by_check()
        counted = ", ".join(f"{n:,} {what}" for what, n in self.checked.items())
        as_of = f"{self.now:%Y-%m-%d %H:%M %Z}"
        console.print(f"[bold]Audit of {escape(self.source)}[/] ({counted}) as of {as_of}")
        summary = Table()
        summary.add_column("check")
        summary.add_column("severity")
        summary.add_column("findings", justify="right")
        for name, found in grouped.items():
            title, severity = CHECKS.get(name, (name, "warning"))
            if name in self.not_run:
                summary.add_row(title, severity, f"[dim]{escape(self.not_run[name])}[/]")
                continue
            style = "green" if not found else ("red" if severity == "blocking" else "yellow")
            summary.add_row(title, severity, f"[{style}]{len(found):,}[/]")
        console.print(summary)

        for name, found in grouped.items():
            if not found:
                continue
            title, severity = CHECKS.get(name, (name, "warning"))
            colour = "red" if severity == "blocking" else "yellow"
            table = Table(
                title=f"[{colour}]{title}[/] — {len(found):,} {severity}",
                title_justify="left",
                show_lines=True,
                expand=True,
            )
            columns: list[tuple[str, Callable[[Finding], tuple[str, ...]]]] = [
                ("meter", lambda f: f.meter_ids),
                ("account", lambda f: f.account_ids),
                ("service point", lambda f: f.service_point_ids),
            ]
            shown = [(label, ids) for label, ids in columns if any(ids(f) for f in found)]
            for label, _ in shown:
                table.add_column(label, no_wrap=True, max_width=24)
            table.add_column("finding and fix", ratio=1)
            for finding in found[:limit]:
                cells = [escape(_short_list(ids(finding))) for _, ids in shown]
                table.add_row(*cells, escape(finding.message))
            console.print(table)
            if len(found) > limit:
                console.print(f"  … and {len(found) - limit:,} more (--json lists them all)")

        blocking, warnings = len(self.blocking), len(self.warnings)
        if blocking:
            console.print(
                f"[bold red]Billing is blocked[/]: {blocking:,} blocking finding(s) and "
                f"{warnings:,} warning(s). Fix the blocking ones and audit again."
            )
        elif warnings:
            console.print(
                f"[bold yellow]Nothing blocks billing[/], but {warnings:,} warning(s) are "
                "worth a look before the first cycle."
            )
        else:
            console.print("[bold green]No findings[/]: the records are ready for billing.")


def _short_list(ids: tuple[str, ...]) -> str:
    return "\n".join(ids[:3]) + (f"\n+{len(ids) - 3}" if len(ids) > 3 else "")


# --- loading -----------------------------------------------------------------------------------


def load_database(conn: psycopg.Connection, *, now: datetime) -> AuditData:
    """Every account and assignment in the database, and the latest read of each meter that
    has a current assignment. Runs in a transaction (a savepoint in the caller's)."""
    with conn.transaction():
        # Timestamps come back with the session's time zone; in UTC they share one tzinfo
        # with the files' records and `now`, which makes comparing them several times faster.
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        return _load_database(conn, now)


# Rows fetched per round trip: bounds the client's buffer at a million rows.
_FETCH_ROWS = 50_000


def _load_database(conn: psycopg.Connection, now: datetime) -> AuditData:
    with conn.cursor("audit_accounts", row_factory=class_row(Account)) as cursor:
        cursor.itersize = _FETCH_ROWS
        cursor.execute(
            """SELECT a.account_id, a.customer_id, c.name AS customer_name, c.email, c.phone,
                      a.status, a.customer_class, a.rate_plan, a.cycle_day,
                      s.daily_threshold AS daily_alert, s.period_threshold AS period_alert,
                      s.sms_opt_in, s.email_opt_in, NULL::text AS origin
               FROM accounts a
               JOIN customers c USING (customer_id)
               LEFT JOIN alert_settings s USING (account_id)
               ORDER BY a.account_id"""
        )
        accounts = list(cursor)
    with conn.cursor("audit_assignments", row_factory=class_row(Assignment)) as cursor:
        cursor.itersize = _FETCH_ROWS
        cursor.execute(
            """SELECT meter_id, service_point_id, account_id, valid_from, valid_to,
                      'assignment ' || assignment_id AS origin
               FROM meter_assignments
               ORDER BY assignment_id"""
        )
        assignments = list(cursor)
    reads_stored = _any_rows(conn, "reads")
    # One index probe per meter (both primary keys are (meter_id, ts)) rather than a scan of
    # the reads: the cost follows the number of meters, not the years of reads.
    last_reads: dict[str, datetime] = {}
    if reads_stored:
        last_reads = dict(
            conn.execute(
                """SELECT m.meter_id, r.ts FROM meters m
                   CROSS JOIN LATERAL (
                     SELECT ts FROM reads
                     WHERE reads.meter_id = m.meter_id AND ts <= %(now)s
                     ORDER BY ts DESC LIMIT 1) r""",
                {"now": now},
            ).fetchall()
        )
    exception_reads: dict[str, tuple[datetime, str]] = {}
    if _any_rows(conn, "unmatched_reads"):
        exception_reads = {
            meter_id: (ts, reason)
            for meter_id, ts, reason in conn.execute(
                """SELECT m.meter_id, u.ts, u.reason FROM meters m
                   CROSS JOIN LATERAL (
                     SELECT ts, reason FROM unmatched_reads
                     WHERE unmatched_reads.meter_id = m.meter_id AND ts <= %(now)s
                       AND resolved_at IS NULL
                     ORDER BY ts DESC LIMIT 1) u""",
                {"now": now},
            )
        }
    return AuditData(
        source="the database",
        accounts=accounts,
        assignments=assignments,
        last_reads=last_reads,
        reads_stored=reads_stored,
        exception_reads=exception_reads,
    )


def _any_rows(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    ).fetchone()
    return bool(row and row[0])


def load_files(accounts_csv: Path, meters_csv: Path, *, tz: tzinfo | None = None) -> AuditData:
    """The records of a CIS export, and the rows that the import would refuse."""
    data = read_cis(accounts_csv, meters_csv, tz=tz)
    return AuditData(
        source=f"{data.accounts_file} and {data.meters_file}",
        accounts=data.accounts,
        assignments=data.assignments,
        problems=data.problems,
    )


def run_audit(
    conn: psycopg.Connection | str, *, silent_days: int = 7, now: datetime | None = None
) -> AuditReport:
    """Audit the accounts and assignments in the database (a connection or a URL) as of
    `now` (default: the wall clock), calling a meter silent after `silent_days` without a
    read."""
    if silent_days < 1:
        raise ValueError(f"silent_days must be at least 1 (got {silent_days})")
    now = now or datetime.now(UTC)
    with open_connection(conn) as connection:
        data = load_database(connection, now=now)
    return check_records(data, now=now, silent_days=silent_days)


def audit_files(
    accounts_csv: Path, meters_csv: Path, *, now: datetime | None = None
) -> AuditReport:
    """Audit a CIS export before importing it, as of `now` (default: the wall clock). Rows the
    import would refuse are blocking `invalid_row` findings (except a meter on two service
    points at once, which is an overlap like any other); meters' reads are not known, so
    there is no silent-meter check."""
    now = now or datetime.now(UTC)
    return check_records(load_files(accounts_csv, meters_csv), now=now)


# --- the checks ------------------------------------------------------------------------------


class _Records:
    """The records indexed once for every check."""

    def __init__(self, data: AuditData, now: datetime, silent_days: int, tz: tzinfo) -> None:
        self.data = data
        self.now = now.astimezone(UTC)  # the records' tzinfo: see `Assignment`
        self.silent_days = silent_days
        self.tz = tz
        # In start order; ties keep the input's order (file rows, assignment ids).
        self.by_start = sorted(data.assignments, key=attrgetter("valid_from"))
        self.by_account: dict[str, list[Assignment]] = defaultdict(list)
        self.current_by_meter: dict[str, list[Assignment]] = defaultdict(list)
        self.first_installed: dict[str, datetime] = {}
        for a in self.by_start:
            self.by_account[a.account_id].append(a)
            self.first_installed.setdefault(a.meter_id, a.valid_from)
            if a.covers(self.now):
                self.current_by_meter[a.meter_id].append(a)
        self.pairs = list(overlapping_pairs(data.assignments))

    @cached_property
    def current_by_service_point(self) -> dict[str, list[Assignment]]:
        by_service_point: dict[str, list[Assignment]] = defaultdict(list)
        for assignments in self.current_by_meter.values():
            for a in assignments:
                by_service_point[a.service_point_id].append(a)
        return by_service_point

    def when(self, moment: datetime) -> str:
        return format_time(moment, self.tz)

    def span(self, start: datetime, end: datetime | None) -> str:
        return format_span(start, end, self.tz)


def check_records(
    data: AuditData, *, now: datetime, silent_days: int = 7, tz: tzinfo | None = None
) -> AuditReport:
    """Run every check over `data` as of `now`: the one implementation behind both audits.
    Times in messages are in `tz` (default: the utility's time zone)."""
    records = _Records(data, now, silent_days, tz or get_settings().tz)
    findings: list[Finding] = []
    for check in _CHECKS:
        findings.extend(check(records))
    order = {name: i for i, name in enumerate(CHECKS)}
    findings.sort(key=lambda f: order.get(f.check, len(order)))  # stable: checks keep order
    return AuditReport(
        source=data.source,
        now=now,
        silent_days=silent_days if data.last_reads is not None else None,
        not_run=(
            {"silent_meter": "database only"}
            if data.last_reads is None
            else {"invalid_row": "files only"}
        ),
        findings=findings,
        checked={
            "accounts": len(data.accounts),
            "assignments": len(data.assignments),
            "meters": len(records.first_installed),
        },
    )


def _finding(
    check: str,
    message: str,
    *,
    meters: Iterable[str] = (),
    accounts: Iterable[str] = (),
    service_points: Iterable[str] = (),
    origins: Iterable[str | None] = (),
) -> Finding:
    return Finding(
        check=check,
        severity=CHECKS[check][1],
        message=message,
        meter_ids=_unique(meters),
        account_ids=_unique(accounts),
        service_point_ids=_unique(service_points),
        origins=_unique(o for o in origins if o),
    )


def _unique(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))[:_MAX_IDS]


def _invalid_rows(r: _Records) -> Iterator[Finding]:
    for problem in r.data.problems:
        yield _finding(
            "invalid_row",
            f"{problem}. The import refuses the whole export until this is fixed.",
            origins=[problem.origin],
        )


def _near_duplicate_key(meter_id: str) -> str:
    """What a meter id is once migration noise is taken out: case, spaces, leading zeros."""
    folded = meter_id.strip().casefold()
    return folded.lstrip("0") or ("0" if folded else "")


def _how_they_differ(ids: list[str]) -> str:
    ways = []
    if any(i != i.strip() for i in ids):
        ways.append("surrounding spaces")
    stripped = {i.strip() for i in ids}
    unzeroed = {i.lstrip("0") for i in stripped}
    folded = {i.casefold() for i in stripped}
    if len({i.casefold() for i in unzeroed}) < len(unzeroed) or len(folded) < len(stripped):
        ways.append("letter case")
    if len({i.lstrip("0") for i in folded}) < len(folded):
        ways.append("leading zeros")
    return " and ".join([", ".join(ways[:-1]), ways[-1]] if len(ways) > 2 else ways)


def _duplicate_meter_ids(r: _Records) -> Iterator[Finding]:
    by_key: dict[str, list[str]] = defaultdict(list)
    for meter_id in sorted(r.first_installed):
        by_key[_near_duplicate_key(meter_id)].append(meter_id)
    for ids in by_key.values():
        if len(ids) < 2:
            continue
        on = []
        for meter_id in ids:
            current = r.current_by_meter.get(meter_id)
            place = f"account {current[0].account_id!r}" if current else "no current account"
            on.append(f"{meter_id!r} ({place})")
        yield _finding(
            "duplicate_meter_id",
            f"meter ids {', '.join(on)} differ only by {_how_they_differ(ids)}: probably one "
            "meter recorded twice by a migration. Reads carry one spelling, so the other "
            "account gets none. Keep the spelling the head-end sends and move the other's "
            "assignments to it; if they really are different meters, ignore this finding.",
            meters=ids,
            accounts=[a.account_id for m in ids for a in r.current_by_meter.get(m, [])],
        )

    # One meter current (no valid_to) on more than one row.
    open_rows: dict[str, list[Assignment]] = defaultdict(list)
    for first, second in r.pairs:
        if first.open_ended and second.open_ended:
            rows = open_rows[first.meter_id]
            for a in (first, second):
                if a not in rows:
                    rows.append(a)
    for meter_id, rows in open_rows.items():
        listed = "; ".join(
            f"{a.origin}: service point {a.service_point_id!r}, account {a.account_id!r}, "
            f"since {r.when(a.valid_from)}"
            for a in rows
        )
        yield _finding(
            "duplicate_meter_id",
            f"meter {meter_id!r} is current on {len(rows)} assignments ({listed}): a meter "
            "has one current assignment. Give the older ones the valid_to on which the meter "
            "moved (the next one's valid_from), or fix the meter id on the wrong row.",
            meters=[meter_id],
            accounts=[a.account_id for a in rows],
            service_points=[a.service_point_id for a in rows],
            origins=[a.origin for a in rows],
        )


def _overlapping_assignments(r: _Records) -> Iterator[Finding]:
    for first, second in r.pairs:
        if first.open_ended and second.open_ended:
            continue  # reported with the duplicate meter ids: current twice
        span = r.span(*overlap_span(first, second))
        ids = {
            "meters": [first.meter_id],
            "accounts": [first.account_id, second.account_id],
            "service_points": [first.service_point_id, second.service_point_id],
            "origins": [first.origin, second.origin],
        }
        end_first = (
            f"end {first.origin} on {r.when(second.valid_from)} (when {second.origin} starts)"
        )
        if first.service_point_id != second.service_point_id:
            message = (
                f"meter {first.meter_id!r} is on service point {first.service_point_id!r} "
                f"({first.origin}, account {first.account_id!r}) and on "
                f"{second.service_point_id!r} ({second.origin}, account "
                f"{second.account_id!r}) at the same time, {span}: a meter is in one place "
                f"at a time. Fix the dates: {end_first}."
            )
        elif first.account_id != second.account_id:
            message = (
                f"meter {first.meter_id!r} at service point {first.service_point_id!r} is on "
                f"accounts {first.account_id!r} ({first.origin}) and {second.account_id!r} "
                f"({second.origin}) at the same time, {span}: reads in that span go to the "
                "exception queue as ambiguous, not to either bill. Fix the move-out/move-in "
                f"dates: {end_first}."
            )
        else:
            message = (
                f"meter {first.meter_id!r} is assigned to account {first.account_id!r} at "
                f"service point {first.service_point_id!r} twice over the same time, {span} "
                f"({first.origin} and {second.origin}): remove the duplicate or merge the "
                "two into one assignment."
            )
        yield _finding("overlapping_assignments", message, **ids)


def _accounts_without_current_meter(r: _Records) -> Iterator[Finding]:
    """Active accounts with no meter now: `retired_meter_on_active_account` when a meter was
    removed and not replaced, `active_account_without_meter` when there never was one."""
    for account in r.data.accounts:
        if not account.active:
            continue
        assignments = r.by_account.get(account.account_id, [])
        if any(a.covers(r.now) for a in assignments):
            continue
        ended = [a for a in assignments if a.valid_to is not None and a.valid_to <= r.now]
        upcoming = [a for a in assignments if a.valid_from > r.now]
        later = ""
        if upcoming:
            nxt = upcoming[0]
            later = f" (meter {nxt.meter_id!r} is assigned only from {r.when(nxt.valid_from)})"
        if ended:
            last = max(ended, key=lambda a: a.valid_to or a.valid_from)
            successors = [
                a
                for a in r.current_by_service_point.get(last.service_point_id, [])
                if a.account_id != account.account_id
            ]
            now_there = ""
            if successors:
                s = successors[0]
                now_there = (
                    f" Service point {last.service_point_id!r} now has meter {s.meter_id!r} "
                    f"on account {s.account_id!r}."
                )
            yield _finding(
                "retired_meter_on_active_account",
                f"account {account.account_id!r} is active, but its meter {last.meter_id!r} "
                f"left service point {last.service_point_id!r} on "
                f"{r.when(last.valid_to or last.valid_from)} ({last.origin}) and no meter "
                f"replaced it{later}: the account would bill on no reads.{now_there} Add the "
                "new meter's assignment, or set the account inactive if the customer moved out.",
                meters=[last.meter_id],
                accounts=[account.account_id],
                service_points=[last.service_point_id],
                origins=[last.origin, account.origin],
            )
        else:
            yield _finding(
                "active_account_without_meter",
                f"account {account.account_id!r} is active but has no meter{later}: it would "
                "bill on no reads. Assign its meter (meters.csv), or set the account inactive.",
                meters=[a.meter_id for a in upcoming],
                accounts=[account.account_id],
                origins=[account.origin],
            )


def _silent_meters(r: _Records) -> Iterator[Finding]:
    last_reads = r.data.last_reads
    if last_reads is None:
        return  # reads are not known (a CIS export)
    if not r.data.reads_stored:
        if r.current_by_meter:
            yield _finding(
                "silent_meter",
                "no reads are stored yet, so no meter can be checked for silence: run the "
                "audit again after the head-end's first deliveries.",
            )
        return
    cutoff = r.now - timedelta(days=r.silent_days)
    for meter_id in sorted(r.current_by_meter):
        if r.first_installed[meter_id] > cutoff:
            continue  # installed too recently to have been silent that long
        last = last_reads.get(meter_id)
        if last is not None and last >= cutoff:
            continue
        current = r.current_by_meter[meter_id]
        heard = f"last read on {r.when(last)}" if last else "no read ever stored"
        fix = "Check the meter and its radio, and that the head-end uses this meter id."
        if meter_id in r.data.exception_reads:
            ts, reason = r.data.exception_reads[meter_id]
            fix = (
                f"Its reads do arrive but go to the exception queue ({reason}, latest "
                f"{r.when(ts)}): resolve why they do not match."
            )
        yield _finding(
            "silent_meter",
            f"meter {meter_id!r} (account {current[0].account_id!r}, service point "
            f"{current[0].service_point_id!r}) has sent no read for {r.silent_days} days "
            f"({heard}). {fix}",
            meters=[meter_id],
            accounts=[a.account_id for a in current],
            service_points=[a.service_point_id for a in current],
            origins=[a.origin for a in current],
        )


def _inactive_accounts_with_meter(r: _Records) -> Iterator[Finding]:
    for account in r.data.accounts:
        if account.active:
            continue
        current = [a for a in r.by_account.get(account.account_id, []) if a.covers(r.now)]
        if not current:
            continue
        meters = ", ".join(repr(a.meter_id) for a in current)
        yield _finding(
            "inactive_account_with_meter",
            f"account {account.account_id!r} is inactive but meter {meters} is still assigned "
            f"to it ({', '.join(a.origin for a in current)}): its usage will be flagged as "
            "usage on an inactive account and billed to no one. End the assignment (valid_to) "
            "or reactivate the account.",
            meters=[a.meter_id for a in current],
            accounts=[account.account_id],
            service_points=[a.service_point_id for a in current],
            origins=[a.origin for a in current],
        )


def _coverage_gaps(r: _Records) -> Iterator[Finding]:
    for account in r.data.accounts:
        if not account.active:
            continue
        # Sweep the account's assignments in start order, tracking how far the metering
        # reaches so far (None: onward) and the assignment that reaches that far.
        reach: datetime | None = None
        last: Assignment | None = None
        for a in r.by_account.get(account.account_id, []):
            if a.valid_from > r.now:
                break  # a gap lasting until now is the no-current-meter checks' business
            if last is not None:
                if reach is None:
                    break
                if a.valid_from > reach:
                    yield _finding(
                        "coverage_gap",
                        f"account {account.account_id!r} had no meter "
                        f"{r.span(reach, a.valid_from)}, between meter {last.meter_id!r} "
                        f"({last.origin}) and meter {a.meter_id!r} ({a.origin}): usage in "
                        "that span is on no bill. Check the exchange dates (the new meter's "
                        "valid_from is usually the old one's valid_to).",
                        meters=[last.meter_id, a.meter_id],
                        accounts=[account.account_id],
                        service_points=[last.service_point_id, a.service_point_id],
                        origins=[last.origin, a.origin],
                    )
            if last is None or reach is None or a.valid_to is None or a.valid_to > reach:
                reach, last = a.valid_to, a


def _future_assignments(r: _Records) -> Iterator[Finding]:
    for a in r.by_start:
        if a.valid_from <= r.now:
            continue
        yield _finding(
            "future_assignment",
            f"meter {a.meter_id!r} is assigned to account {a.account_id!r} at service point "
            f"{a.service_point_id!r} only from {r.when(a.valid_from)} ({a.origin}): its reads "
            "before then go to the exception queue as not yet installed. Fine for a scheduled "
            "exchange; otherwise correct valid_from.",
            meters=[a.meter_id],
            accounts=[a.account_id],
            service_points=[a.service_point_id],
            origins=[a.origin],
        )


def _alerts_without_contact(r: _Records) -> Iterator[Finding]:
    for account in r.data.accounts:
        missing = []
        if account.sms_opt_in and not account.phone:
            missing.append("SMS alerts but has no phone number")
        if account.email_opt_in and not account.email:
            missing.append("email alerts but has no email address")
        if not missing:
            continue
        yield _finding(
            "alerts_without_contact",
            f"account {account.account_id!r} (customer {account.customer_id!r}) is opted in "
            f"to {' and to '.join(missing)}: its alerts cannot be delivered. Add the contact "
            "in the CIS, or opt the account out.",
            accounts=[account.account_id],
            origins=[account.origin],
        )


def _unknown_customer_classes(r: _Records) -> Iterator[Finding]:
    by_class: dict[str, list[Account]] = defaultdict(list)
    for account in r.data.accounts:
        if account.customer_class not in KNOWN_CUSTOMER_CLASSES:
            by_class[account.customer_class].append(account)
    for name, accounts in sorted(by_class.items()):
        yield _finding(
            "unknown_customer_class",
            f"customer class {name!r} ({len(accounts):,} account(s), e.g. "
            f"{accounts[0].account_id!r}) is not one meterwatch knows "
            f"({', '.join(sorted(KNOWN_CUSTOMER_CLASSES))}): the detectors use their generic "
            "settings for it. Fine if intended; otherwise correct the class.",
            accounts=[a.account_id for a in accounts],
            origins=[a.origin for a in accounts],
        )


_CHECKS: list[Callable[[_Records], Iterator[Finding]]] = [
    _invalid_rows,
    _duplicate_meter_ids,
    _overlapping_assignments,
    _accounts_without_current_meter,
    _silent_meters,
    _inactive_accounts_with_meter,
    _coverage_gaps,
    _future_assignments,
    _alerts_without_contact,
    _unknown_customer_classes,
]
