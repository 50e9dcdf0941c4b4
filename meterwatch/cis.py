"""Loading the CIS export — `accounts.csv` and `meters.csv` — into meterwatch.

`read_cis` reads both files into `Account` and `Assignment` records and collects every problem
it finds, each naming the file, the row as a spreadsheet shows it (the header is row 1) and the
fix. `import_cis` refuses to write anything while a problem remains; otherwise it loads the
rows with COPY into temporary tables and merges them into the core tables in one transaction,
so an import is all or nothing and importing the same files again changes nothing.

The records are also what the pre-go-live audit (`meterwatch.audit`) checks, whether they come
from these files or from the database.

Rules the import follows (the README's "Importing the CIS export" is written from these):

- Surrounding spaces are trimmed from every cell (spreadsheets add them; an id with a trailing
  space would never match the head-end's reads). Ids are otherwise kept exactly: `00012` is
  not `12`, and the audit reports such near-duplicates.
- `status` and `customer_class` are case-insensitive and stored in lower case. A class must be
  one word (letters, digits, `_`, `-`); a word meterwatch does not know (see
  `KNOWN_CUSTOMER_CLASSES`) is accepted with a warning, since utilities name their own classes.
- One customer (`customer_id`, defaulting to the account id) has one name, email and phone:
  accounts that share a customer must agree on them. The CIS is the system of record for
  these, so a re-import updates them.
- Alert settings: an account's first import creates its settings from the optional columns
  (an absent column or empty cell means no threshold / not opted in). Later imports change a
  setting only where the column is present and the cell is not empty, and never touch an
  account whose settings were changed by someone else (the customer through the API, staff)
  since an import last wrote them: the customer's own choice wins over the bulk default, and
  such accounts are counted as `kept`. (How: every row an import writes gets the import's
  transaction time as `updated_at`, the same instant as its `audit_log` entry; a row whose
  `updated_at` is no import's time was changed by someone else.)
- Assignments are keyed by (meter_id, service_point_id, account_id, valid_from): a re-import
  updates `valid_to`. Rows the file no longer has are left in the database (the import adds
  and updates; it never deletes history).
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, tzinfo
from datetime import time as clock_time
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from meterwatch.db import connect, record_audit
from meterwatch.settings import get_settings

if TYPE_CHECKING:
    from rich.console import Console

ACCOUNT_COLUMNS = (
    "account_id",
    "customer_name",
    "email",
    "phone",
    "status",
    "customer_class",
    "rate_plan",
    "cycle_day",
)
ACCOUNT_OPTIONAL_COLUMNS = (
    "customer_id",
    "daily_alert",
    "period_alert",
    "sms_opt_in",
    "email_opt_in",
)
METER_COLUMNS = ("meter_id", "service_point_id", "account_id", "valid_from", "valid_to")

# The classes the detectors and rate logic know by name. Others are accepted (with a warning):
# they get the generic settings.
KNOWN_CUSTOMER_CLASSES = frozenset(
    {
        "residential",
        "multifamily",
        "commercial",
        "industrial",
        "institutional",
        "irrigation",
        "municipal",
        "agricultural",
        "fire",
        "wholesale",
    }
)

_CLASS_WORD = re.compile(r"[a-z][a-z0-9_-]*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
# How often (rows) reading and loading report progress.
_PROGRESS_EVERY = 20_000
# At most this many rows of the same warning are named in it.
_NAMED_ROWS = 5


# Told how far a long step has come: (done, total). `import_cis` reports percent (total 100);
# `read_cis` reports bytes of both files read.
ProgressCallback = Callable[[int, int], None]


def _no_progress(done: int, total: int) -> None:
    return None


class _Percent:
    """Lays the import's phases out on one 0–100 scale, calling back only when the whole
    percent changes (a rich bar redraws on every call)."""

    def __init__(self, callback: ProgressCallback) -> None:
        self.callback = callback
        self.shown = -1

    def at(self, percent: float) -> None:
        whole = min(100, int(percent))
        if whole != self.shown:
            self.shown = whole
            self.callback(whole, 100)

    def part(self, start: float, end: float) -> ProgressCallback:
        """A callback for one phase, mapping its (done, total) onto [start, end]."""

        def update(done: int, total: int) -> None:
            self.at(start + (end - start) * (done / total if total else 1.0))

        return update


# --- records -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Account:
    """One account as the CIS describes it, with its customer's contact and alert settings.
    `origin` says where it came from ("accounts.csv row 3"; None from the database).

    Not frozen, though nothing changes one after it is made: a frozen dataclass takes four
    times as long to build, which is seconds at a million rows."""

    account_id: str
    customer_id: str
    customer_name: str
    email: str | None
    phone: str | None
    status: str
    customer_class: str
    rate_plan: str | None
    cycle_day: int
    daily_alert: float | None = None
    period_alert: float | None = None
    sms_opt_in: bool | None = None
    email_opt_in: bool | None = None
    origin: str | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(slots=True)
class Assignment:
    """A meter at a service point, billed to an account, over [valid_from, valid_to)
    (valid_to None: still there). `origin` is "meters.csv row 12" or "assignment 42".

    Times are in UTC (`datetime.UTC`) whichever way they were loaded: aware datetimes that
    share one tzinfo compare several times faster, and the audit compares millions."""

    meter_id: str
    service_point_id: str
    account_id: str
    valid_from: datetime
    valid_to: datetime | None
    origin: str = ""

    @property
    def open_ended(self) -> bool:
        return self.valid_to is None

    def covers(self, when: datetime) -> bool:
        """Whether the meter is in place at `when` under this assignment."""
        return self.valid_from <= when and (self.valid_to is None or when < self.valid_to)

    @property
    def key(self) -> tuple[str, str, str, datetime]:
        """The natural key an import matches on."""
        return (self.meter_id, self.service_point_id, self.account_id, self.valid_from)


def overlapping_pairs(
    assignments: Iterable[Assignment],
) -> Iterator[tuple[Assignment, Assignment]]:
    """Every pair of assignments of the same meter whose periods overlap, the one that starts
    first (then the earlier origin) first.

    A sort and a sweep per meter: O(n log n) plus the number of pairs found, so it copes with
    a million meters. Both the import's validation and the audit use it.
    """
    ordered = sorted(assignments, key=attrgetter("meter_id", "valid_from"))
    active: list[Assignment] = []
    meter: str | None = None
    for item in ordered:
        if item.meter_id != meter:
            meter, active = item.meter_id, []
        elif active:
            # Keep only what is still in place when this one starts.
            active = [a for a in active if a.valid_to is None or a.valid_to > item.valid_from]
        for earlier in active:
            yield earlier, item
        active.append(item)


def overlap_span(a: Assignment, b: Assignment) -> tuple[datetime, datetime | None]:
    """When two overlapping assignments are both in place: [start, end), end None = onward."""
    start = max(a.valid_from, b.valid_from)
    ends = [t for t in (a.valid_to, b.valid_to) if t is not None]
    return start, min(ends) if ends else None


def format_time(when: datetime, tz: tzinfo | None = None) -> str:
    """A timestamp as a billing clerk reads it: a plain date when it is midnight in the
    utility's time zone, otherwise date and time with the offset."""
    local = when.astimezone(tz or get_settings().tz)
    if local.time() == clock_time(0):
        return local.date().isoformat()
    return local.isoformat(timespec="minutes")


def format_span(start: datetime, end: datetime | None, tz: tzinfo | None = None) -> str:
    if end is None:
        return f"from {format_time(start, tz)} onward"
    return f"from {format_time(start, tz)} to {format_time(end, tz)}"


# --- reading the files -----------------------------------------------------------------------


@dataclass(frozen=True)
class CisProblem:
    """Something in the export that stops it from being imported. `row` is the spreadsheet
    row (header = 1); None when the problem is about the whole file."""

    file: str
    row: int | None
    message: str

    def __str__(self) -> str:
        if self.row is None:
            return f"{self.file}: {self.message}"
        return f"{self.file} row {self.row}: {self.message}"

    @property
    def origin(self) -> str:
        return self.file if self.row is None else f"{self.file} row {self.row}"


@dataclass
class CisData:
    """What `read_cis` found: the records that parsed, the problems, and warnings (things
    worth knowing that do not stop an import)."""

    accounts_file: str
    meters_file: str
    accounts: list[Account] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    problems: list[CisProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Table:
    """Reads one CSV export: checks its header, then yields (spreadsheet row, cells by column)
    with every cell trimmed, reporting rows that do not fit the header."""

    def __init__(
        self,
        path: Path,
        required: Sequence[str],
        optional: Sequence[str],
        problems: list[CisProblem],
        progress: Callable[[int], None],
    ) -> None:
        self.path = path
        self.name = path.name
        self.required = required
        self.optional = optional
        self.problems = problems
        self.progress = progress
        self.columns: list[str] = []
        # Whether the header was right and every row could be read: only then does the
        # absence of an id from this file mean something.
        self.complete = False

    def problem(self, row: int | None, message: str) -> None:
        self.problems.append(CisProblem(self.name, row, message))

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            raw = self.path.open("rb")
        except FileNotFoundError:
            self.problem(None, f"file not found at {self.path} (check the path)")
            return
        except OSError as exc:
            self.problem(None, f"cannot be read: {exc.strerror} (check the path and permissions)")
            return
        row_no = 1
        # Undecodable bytes are kept as surrogates so that the rows that have them can be
        # named (a decoding error would only say which 8 kB block had one).
        not_utf8: list[int] = []
        try:
            with (
                raw,
                io.TextIOWrapper(
                    raw, encoding="utf-8-sig", newline="", errors="surrogateescape"
                ) as text,
            ):
                reader = csv.reader(text)
                header = next(reader, None)
                if header is None or not any(cell.strip() for cell in header):
                    self.problem(
                        None,
                        f"is empty: the first row must be the header {','.join(self.required)}",
                    )
                    return
                if not _utf8(header):
                    not_utf8.append(1)
                if not self._header_ok([cell.strip() for cell in header]):
                    return
                self.complete = True
                width = len(self.columns)
                for row_no, cells in enumerate(reader, start=2):
                    if row_no % _PROGRESS_EVERY == 0:
                        self.progress(raw.tell())
                    if not cells or not any(cells):
                        continue  # a blank line: spreadsheets leave them at the end
                    if not _utf8(cells):
                        not_utf8.append(row_no)
                    if len(cells) != width:
                        self.problem(
                            row_no,
                            f"has {len(cells)} cells but the header has {width} "
                            "(a comma inside a value needs the value in double quotes)",
                        )
                        continue
                    yield row_no, dict(zip(self.columns, [c.strip() for c in cells], strict=True))
        except csv.Error as exc:
            self.complete = False
            self.problem(row_no + 1, f"is not valid CSV ({exc}): check the quoting")
        finally:
            if not_utf8:
                more = f", nor are {_rows_named(not_utf8[1:])}" if len(not_utf8) > 1 else ""
                self.problem(
                    not_utf8[0],
                    f"is not UTF-8 text{more}: save the export as 'CSV UTF-8' and import it again",
                )

    def _header_ok(self, header: list[str]) -> bool:
        self.columns = header
        allowed = f"the columns are {','.join(self.required)}"
        if self.optional:
            allowed += f" and optionally any of {','.join(self.optional)}"
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            self.problem(
                1,
                "the header is a single column: the file looks semicolon- or tab-separated; "
                f"export it comma-separated ({allowed})",
            )
            return False
        ok = True
        repeated = sorted(name for name, n in Counter(header).items() if n > 1)
        if repeated:
            self.problem(1, f"column {_names(repeated)} appears more than once (keep one)")
            ok = False
        missing = [name for name in self.required if name not in header]
        if missing:
            word = "column" if len(missing) == 1 else "columns"
            self.problem(1, f"missing {word} {_names(missing)} ({allowed})")
            ok = False
        known = set(self.required) | set(self.optional)
        extra = [name for name in header if name not in known]
        if extra:
            word = "column" if len(extra) == 1 else "columns"
            self.problem(1, f"unexpected {word} {_names(extra)}: remove {_it(extra)} ({allowed})")
            ok = False
        return ok


def _utf8(cells: list[str]) -> bool:
    try:
        "".join(cells).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _it(items: Sequence[object]) -> str:
    return "it" if len(items) == 1 else "them"


class _Cells:
    """Parses the cells of one row, recording a problem for each bad one."""

    def __init__(self, table: _Table, row: int, cells: dict[str, str], tz: tzinfo) -> None:
        self.table = table
        self.row = row
        self.cells = cells
        self.tz = tz
        self.ok = True

    def bad(self, message: str) -> None:
        self.ok = False
        self.table.problem(self.row, message)

    def required(self, column: str, what: str) -> str:
        value = self.cells[column]
        if not value:
            self.bad(f"{column} is empty ({what})")
        return value

    def optional(self, column: str) -> str | None:
        return self.cells.get(column) or None

    def threshold(self, column: str) -> float | None:
        raw = self.cells.get(column)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            self.bad(
                f"{column} {raw!r} is not a positive number: give the threshold in the "
                "account's unit (gal or kWh) with a decimal point, or leave it empty for no alert"
            )
            return None
        return value

    def flag(self, column: str) -> bool | None:
        raw = self.cells.get(column)
        if not raw:
            return None
        value = _BOOLEANS.get(raw.lower())
        if value is None:
            self.bad(f"{column} {raw!r} must be true or false (or empty to leave it as it is)")
        return value

    def timestamp(
        self, column: str, *, required: bool, cache: dict[str, datetime]
    ) -> datetime | None:
        raw = self.cells[column]
        if not raw:
            if required:
                self.bad(f"{column} is empty (give the day the assignment starts, e.g. 2026-03-01)")
            return None
        parsed = cache.get(raw)
        if parsed is not None:
            return parsed
        if len(raw) == 10:
            # A plain date is midnight in the utility's time zone, as the CIS means it.
            try:
                day = date.fromisoformat(raw)
            except ValueError:
                pass
            else:
                parsed = datetime.combine(day, clock_time(0), tzinfo=self.tz).astimezone(UTC)
                cache[raw] = parsed
                return parsed
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            self.bad(
                f"{column} {raw!r} is not a date or timestamp: write it as 2026-03-01 or "
                "2026-03-01T08:00:00-05:00"
            )
            return None
        if parsed.tzinfo is None:
            self.bad(
                f"{column} {raw!r} has no UTC offset: add one (e.g. {raw}-05:00 or {raw}Z) "
                "or give a plain date (YYYY-MM-DD, midnight in the utility's time zone)"
            )
            return None
        return parsed.astimezone(UTC)


def read_cis(
    accounts_csv: Path,
    meters_csv: Path,
    *,
    tz: tzinfo | None = None,
    progress: ProgressCallback | None = None,
) -> CisData:
    """Read and check both files of a CIS export.

    Every row is checked, and every problem is reported at once; `problems` empty means the
    files can be imported (bar a meter on two service points at once, which `import_cis`
    checks with `overlapping_pairs`). Rows with a problem are left out of `accounts` and
    `assignments`. Plain dates are midnight in `tz` (default: the utility's time zone).
    """
    tz = tz or get_settings().tz
    report = progress or _no_progress
    accounts_csv, meters_csv = Path(accounts_csv), Path(meters_csv)
    sizes = [_size(accounts_csv), _size(meters_csv)]
    total = sum(sizes)
    report(0, total)
    data = CisData(accounts_file=accounts_csv.name, meters_file=meters_csv.name)
    if accounts_csv.name == meters_csv.name:
        # Messages name files by their name alone; keep them tellable apart.
        data.accounts_file, data.meters_file = str(accounts_csv), str(meters_csv)

    accounts_table = _Table(
        accounts_csv,
        ACCOUNT_COLUMNS,
        ACCOUNT_OPTIONAL_COLUMNS,
        data.problems,
        lambda done: report(done, total),
    )
    accounts_table.name = data.accounts_file
    account_rows: dict[str, int] = {}
    customers: dict[str, tuple[int, str, str | None, str | None]] = {}
    classes: dict[str, list[int]] = defaultdict(list)
    for row, cells in accounts_table.rows():
        account = _parse_account(_Cells(accounts_table, row, cells, tz))
        if account is None:
            # Still note the id, so that its assignments are not also called unknown.
            if cells["account_id"]:
                account_rows.setdefault(cells["account_id"], row)
            continue
        first = account_rows.get(account.account_id)
        if first is not None:
            accounts_table.problem(
                row,
                f"account {account.account_id!r} is already in row {first} "
                "(list each account once: remove or merge the rows)",
            )
            continue
        account_rows[account.account_id] = row
        contact = (row, account.customer_name, account.email, account.phone)
        earlier = customers.setdefault(account.customer_id, contact)
        if earlier is not contact and earlier[1:] != contact[1:]:
            differs = [
                name
                for name, mine, theirs in zip(
                    ("customer_name", "email", "phone"), contact[1:], earlier[1:], strict=True
                )
                if mine != theirs
            ]
            accounts_table.problem(
                row,
                f"customer {account.customer_id!r} has a different {' and '.join(differs)} "
                f"than in row {earlier[0]}: one customer has one name, email and phone "
                "(make the rows agree, or give the accounts different customer_id)",
            )
            continue
        if account.customer_class not in KNOWN_CUSTOMER_CLASSES:
            classes[account.customer_class].append(row)
        data.accounts.append(account)
    accounts_known = accounts_table.complete
    for name, rows in sorted(classes.items()):
        data.warnings.append(
            f"{data.accounts_file}: customer_class {name!r} ({_rows_named(rows)}) is not one "
            f"meterwatch knows ({', '.join(sorted(KNOWN_CUSTOMER_CLASSES))}): imported as "
            "given; the detectors use their generic settings for it"
        )

    meters_table = _Table(
        meters_csv, METER_COLUMNS, (), data.problems, lambda done: report(sizes[0] + done, total)
    )
    meters_table.name = data.meters_file
    keys: dict[tuple[str, str, str, datetime], int] = {}
    cache: dict[str, datetime] = {}
    for row, cells in meters_table.rows():
        assignment = _parse_assignment(_Cells(meters_table, row, cells, tz), cache)
        if assignment is None:
            continue
        if accounts_known and assignment.account_id not in account_rows:
            meters_table.problem(
                row,
                f"unknown account {assignment.account_id!r}: not in {data.accounts_file} "
                "(add the account or fix the id)",
            )
            continue
        first = keys.setdefault(assignment.key, row)
        if first != row:
            meters_table.problem(
                row,
                f"repeats row {first} (same meter, service point, account and valid_from): "
                "remove one of them",
            )
            continue
        data.assignments.append(assignment)
    report(total, total)
    return data


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # reported when the file is opened


def _rows_named(rows: Sequence[int]) -> str:
    named = ", ".join(str(r) for r in rows[:_NAMED_ROWS])
    more = f" and {len(rows) - _NAMED_ROWS:,} more" if len(rows) > _NAMED_ROWS else ""
    word = "row" if len(rows) == 1 else "rows"
    return f"{word} {named}{more}"


def _parse_account(cells: _Cells) -> Account | None:
    account_id = cells.required("account_id", "every row needs the account number")
    name = cells.required("customer_name", "every account needs its customer's name")
    email = cells.optional("email")
    if email is not None and not _EMAIL.fullmatch(email):
        cells.bad(f"email {email!r} is not an email address (fix it or leave the cell empty)")
    status_raw = cells.required("status", "write active or inactive")
    # Interned: a million rows share a handful of these words.
    status = sys.intern(status_raw.lower())
    if status_raw and status not in ("active", "inactive"):
        cells.bad(f"status {status_raw!r} must be 'active' or 'inactive'")
    class_raw = cells.required("customer_class", "e.g. residential or commercial")
    customer_class = sys.intern(class_raw.lower())
    if class_raw and not _CLASS_WORD.fullmatch(customer_class):
        cells.bad(
            f"customer_class {class_raw!r} must be one word of letters, digits, '_' or '-' "
            f"(e.g. {re.sub(r'[^a-z0-9]+', '_', customer_class).strip('_') or 'residential'!r})"
        )
    rate_plan = cells.optional("rate_plan")
    cycle_raw = cells.required("cycle_day", "the day of the month the billing cycle starts")
    cycle_day = 0
    if cycle_raw:
        try:
            cycle_day = int(cycle_raw)
        except ValueError:
            cycle_day = 0
        if not 1 <= cycle_day <= 31:
            cells.bad(f"cycle_day {cycle_raw!r} is not a day of the month (1–31)")
    daily = cells.threshold("daily_alert")
    period = cells.threshold("period_alert")
    sms = cells.flag("sms_opt_in")
    by_email = cells.flag("email_opt_in")
    if not cells.ok:
        return None
    return Account(
        account_id=account_id,
        customer_id=cells.optional("customer_id") or account_id,
        customer_name=name,
        email=email,
        phone=cells.optional("phone"),
        status=status,
        customer_class=customer_class,
        rate_plan=sys.intern(rate_plan) if rate_plan else None,
        cycle_day=cycle_day,
        daily_alert=daily,
        period_alert=period,
        sms_opt_in=sms,
        email_opt_in=by_email,
        origin=f"{cells.table.name} row {cells.row}",
    )


def _parse_assignment(cells: _Cells, cache: dict[str, datetime]) -> Assignment | None:
    meter_id = cells.required("meter_id", "the meter's serial as the head-end knows it")
    service_point = cells.required("service_point_id", "where the meter is installed")
    account_id = cells.required("account_id", "the account the meter bills to")
    valid_from = cells.timestamp("valid_from", required=True, cache=cache)
    valid_to = cells.timestamp("valid_to", required=False, cache=cache)
    if valid_from is not None and valid_to is not None and valid_to <= valid_from:
        relation = "is before" if valid_to < valid_from else "is the same as"
        cells.bad(
            f"valid_to {cells.cells['valid_to']} {relation} valid_from "
            f"{cells.cells['valid_from']} (an assignment ends after it starts: correct one of "
            "the dates, or leave valid_to empty if the meter is still there)"
        )
    if not cells.ok or valid_from is None:
        return None
    return Assignment(
        meter_id=meter_id,
        service_point_id=service_point,
        account_id=account_id,
        valid_from=valid_from,
        valid_to=valid_to,
        origin=f"{cells.table.name} row {cells.row}",
    )


def _row_of(origin: str) -> int | None:
    match = re.search(r" row (\d+)$", origin)
    return int(match.group(1)) if match else None


def meter_place_conflicts(
    data: CisData,
    pairs: Iterable[tuple[Assignment, Assignment]] | None = None,
    tz: tzinfo | None = None,
) -> list[CisProblem]:
    """Rows that put one meter on two service points at the same time, each reported on the
    later row and naming the earlier one. `pairs`: the assignments' `overlapping_pairs`, when
    the caller has them already."""
    problems = []
    for first, second in overlapping_pairs(data.assignments) if pairs is None else pairs:
        if first.service_point_id == second.service_point_id:
            continue  # two accounts on one service point: the audit's business, not an error
        start, end = overlap_span(first, second)
        first_row, second_row = _row_of(first.origin), _row_of(second.origin)
        later, earlier = (second_row, first_row)
        if later is not None and earlier is not None and later < earlier:
            later, earlier = earlier, later
        problems.append(
            CisProblem(
                data.meters_file,
                later,
                f"meter {first.meter_id!r} would be on service points "
                f"{first.service_point_id!r} (row {first_row}) and "
                f"{second.service_point_id!r} (row {second_row}) at the same time "
                f"{format_span(start, end, tz)}: a meter is in one place at a time (end row "
                f"{first_row} with a valid_to no later than row {second_row}'s valid_from, "
                "or fix the dates)",
            )
        )
    problems.sort(key=lambda p: p.row or 0)
    return problems


def _shared_service_point_warning(
    data: CisData, pairs: Iterable[tuple[Assignment, Assignment]]
) -> str | None:
    """Meters on two accounts at one service point at once: allowed (a move-in/move-out
    overlap in the CIS) but the reads in the overlap bill to nobody until someone decides."""
    meters: dict[str, str] = {}
    for first, second in pairs:
        if first.service_point_id == second.service_point_id:
            meters.setdefault(first.meter_id, f"{first.origin} and {_row_of(second.origin)}")
    if not meters:
        return None
    named = "; ".join(f"{m!r} ({where})" for m, where in list(meters.items())[:_NAMED_ROWS])
    more = f" and {len(meters) - _NAMED_ROWS:,} more" if len(meters) > _NAMED_ROWS else ""
    return (
        f"{data.meters_file}: {len(meters):,} meter(s) are on two accounts at one service point "
        f"at the same time: {named}{more}. Imported as given; reads in the overlap go to the "
        "exception queue as ambiguous. `meterwatch audit` lists them all."
    )


# --- importing -----------------------------------------------------------------------------


@dataclass
class TableCounts:
    """Rows of one table an import inserted, updated and left as they were. For alert
    settings, `kept` counts accounts whose settings someone changed since the last import
    and whose file values were therefore not applied."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    kept: int = 0

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


@dataclass
class ImportReport:
    """What `import_cis` did, or why it did nothing (`errors`)."""

    accounts_file: str
    meters_file: str
    errors: list[CisProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, TableCounts] = field(default_factory=dict)
    # The new 'assignments' data version when this import bumped it, else None.
    data_version: int | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return any(c.changed for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accounts_file": self.accounts_file,
            "meters_file": self.meters_file,
            "errors": [str(e) for e in self.errors],
            "warnings": list(self.warnings),
            "counts": {name: asdict(c) for name, c in self.counts.items()},
            "data_version": self.data_version,
            "seconds": round(self.seconds, 3),
        }

    def render(self, console: Console, *, limit: int = 50) -> None:
        """Print the report: every error (up to `limit`), warnings, then what was written."""
        from rich.markup import escape
        from rich.table import Table

        if self.errors:
            console.print(
                f"[bold red]Nothing imported[/]: {len(self.errors):,} problem(s) in "
                f"{self.accounts_file} / {self.meters_file}. Fix them and import again."
            )
            for problem in self.errors[:limit]:
                console.print(f"  [red]✗[/] {escape(str(problem))}")
            if len(self.errors) > limit:
                console.print(f"  … and {len(self.errors) - limit:,} more (--json lists them all)")
        for warning in self.warnings:
            console.print(f"  [yellow]![/] {escape(warning)}")
        if not self.ok:
            return
        table = Table(title="CIS import", title_justify="left")
        table.add_column("table")
        for column in ("inserted", "updated", "unchanged", "kept"):
            table.add_column(column, justify="right")
        for name, c in self.counts.items():
            kept = f"{c.kept:,}" if name == "alert_settings" else ""
            table.add_row(name, f"{c.inserted:,}", f"{c.updated:,}", f"{c.unchanged:,}", kept)
        console.print(table)
        if self.data_version is not None:
            note = f"assignments are now version {self.data_version}: running dataflows reload"
        else:
            note = "no assignment or account status change: dataflows keep what they have"
        console.print(f"[green]Imported[/] in {self.seconds:.1f}s; {note}.")


@contextmanager
def open_connection(conn_or_url: psycopg.Connection | str) -> Iterator[psycopg.Connection]:
    """Use the caller's connection as it is, or open (and afterwards close) one for a URL."""
    if isinstance(conn_or_url, str):
        with connect(conn_or_url) as conn:
            yield conn
    else:
        yield conn_or_url


class _Rejected(Exception):
    """Rolls the import back, carrying the problems that made it refuse."""

    def __init__(self, problems: list[CisProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


def import_cis(
    conn_or_url: psycopg.Connection | str,
    accounts_csv: Path,
    meters_csv: Path,
    *,
    actor: str = "cli",
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Load or update the CIS export: all of it in one transaction, or — when any row is
    invalid — nothing, with every problem in the report.

    Idempotent: importing the same files again reports every row unchanged and leaves the
    'assignments' data version alone. The version is bumped (so that running dataflows reload)
    when assignments, or the status or class of an account, changed. One `audit_log` entry
    ('import_cis', by `actor`) records the counts. With a connection, the import runs in a
    transaction (a savepoint inside the caller's) on it; with a URL it opens its own.
    """
    started = time.monotonic()
    percent = _Percent(progress or _no_progress)
    # Where the time goes on a first import of 100,000 meters: reading 15 %, loading 10 %,
    # merging 75 % (most of it the exclusion constraint's GiST index on assignments).
    data = read_cis(accounts_csv, meters_csv, progress=percent.part(0, 15))
    report = ImportReport(accounts_file=data.accounts_file, meters_file=data.meters_file)
    pairs = list(overlapping_pairs(data.assignments))
    report.errors = data.problems + meter_place_conflicts(data, pairs)
    report.warnings = list(data.warnings)
    if report.errors:
        report.seconds = time.monotonic() - started
        return report
    shared = _shared_service_point_warning(data, pairs)
    if shared:
        report.warnings.append(shared)

    with open_connection(conn_or_url) as conn:
        try:
            with conn.transaction():
                _write(conn, data, report, actor, percent)
        except _Rejected as rejected:
            report.errors = rejected.problems
        except psycopg.errors.ExclusionViolation as exc:
            # Only when another session added a clashing assignment while this one ran:
            # the check against the database's rows in _write sees everything committed.
            report.errors = [exclusion_problem(exc, data)]
    if report.errors:
        report.counts = {}
        report.data_version = None
    else:
        percent.at(100)
    report.seconds = time.monotonic() - started
    return report


_TEMP_TABLES = {
    "cis_customers": "customer_id text, name text, email text, phone text",
    "cis_accounts": (
        "account_id text, customer_id text, status text, customer_class text, rate_plan text, "
        "cycle_day smallint, daily_alert double precision, period_alert double precision, "
        "sms_opt_in boolean, email_opt_in boolean"
    ),
    "cis_assignments": (
        "origin text, meter_id text, service_point_id text, account_id text, "
        "valid_from timestamptz, valid_to timestamptz"
    ),
}


# The report's name for each table an import writes.
_TABLES = {
    "customers": "customers",
    "accounts": "accounts",
    "alert_settings": "alert_settings",
    "service_points": "service_points",
    "meters": "meters",
    "assignments": "meter_assignments",
}


def _write(
    conn: psycopg.Connection,
    data: CisData,
    report: ImportReport,
    actor: str,
    percent: _Percent,
) -> None:
    """The import's transaction: load the temporary tables, check them against what the
    database already holds, merge, bump the data version, record the audit entry."""
    for name, columns in _TEMP_TABLES.items():
        # A caller's outer transaction may still hold the tables of an earlier import.
        conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                sql.Identifier(name),
                sql.SQL(columns),
            )
        )

    customers = {a.customer_id: (a.customer_name, a.email, a.phone) for a in data.accounts}
    total = len(customers) + len(data.accounts) + len(data.assignments)
    progress = percent.part(15, 25)
    loaded = 0

    def load(table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
        nonlocal loaded
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table),
            sql.SQL(columns),
        )
        with conn.cursor().copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                loaded += 1
                if loaded % _PROGRESS_EVERY == 0:
                    progress(loaded, total)

    load(
        "cis_customers",
        "customer_id, name, email, phone",
        ((cid, *contact) for cid, contact in customers.items()),
    )
    load(
        "cis_accounts",
        "account_id, customer_id, status, customer_class, rate_plan, cycle_day, "
        "daily_alert, period_alert, sms_opt_in, email_opt_in",
        (
            (
                a.account_id,
                a.customer_id,
                a.status,
                a.customer_class,
                a.rate_plan,
                a.cycle_day,
                a.daily_alert,
                a.period_alert,
                a.sms_opt_in,
                a.email_opt_in,
            )
            for a in data.accounts
        ),
    )
    load(
        "cis_assignments",
        "origin, meter_id, service_point_id, account_id, valid_from, valid_to",
        (
            (a.origin, a.meter_id, a.service_point_id, a.account_id, a.valid_from, a.valid_to)
            for a in data.assignments
        ),
    )
    progress(total, total)
    for name in _TEMP_TABLES:
        # Temporary tables are never analysed automatically; the merges below join them.
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))

    clashes = _clashes_with_database(conn, data)
    if clashes:
        raise _Rejected(clashes)
    percent.at(27)

    counts = report.counts
    counts["customers"] = _upsert_counts(
        conn,
        """
        WITH merged AS (
          INSERT INTO customers AS t (customer_id, name, email, phone)
          SELECT customer_id, name, email, phone FROM cis_customers
          ON CONFLICT (customer_id) DO UPDATE
            SET name = EXCLUDED.name, email = EXCLUDED.email, phone = EXCLUDED.phone,
                updated_at = now()
            WHERE (t.name, t.email, t.phone)
                  IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.email, EXCLUDED.phone)
          RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
        """,
        len(customers),
    )
    percent.at(30)

    # Whether a running dataflow's view of accounts changes: asked before the merge, since
    # the merge's RETURNING only sees the new values.
    row = conn.execute(
        """SELECT count(*) FROM cis_accounts s JOIN accounts a USING (account_id)
           WHERE (a.status, a.customer_class) IS DISTINCT FROM (s.status, s.customer_class)"""
    ).fetchone()
    status_changes = row[0] if row else 0
    counts["accounts"] = _upsert_counts(
        conn,
        """
        WITH merged AS (
          INSERT INTO accounts AS t
            (account_id, customer_id, status, customer_class, rate_plan, cycle_day)
          SELECT account_id, customer_id, status, customer_class, rate_plan, cycle_day
          FROM cis_accounts
          ON CONFLICT (account_id) DO UPDATE
            SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,
                customer_class = EXCLUDED.customer_class, rate_plan = EXCLUDED.rate_plan,
                cycle_day = EXCLUDED.cycle_day, updated_at = now()
            WHERE (t.customer_id, t.status, t.customer_class, t.rate_plan, t.cycle_day)
                  IS DISTINCT FROM (EXCLUDED.customer_id, EXCLUDED.status,
                                    EXCLUDED.customer_class, EXCLUDED.rate_plan,
                                    EXCLUDED.cycle_day)
          RETURNING (xmax = 0) AS inserted)
        SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM merged
        """,
        len(data.accounts),
    )
    percent.at(36)

    counts["alert_settings"] = _merge_alert_settings(conn, len(data.accounts))
    percent.at(42)

    service_points = {a.service_point_id for a in data.assignments}
    counts["service_points"] = _insert_new(
        conn,
        """INSERT INTO service_points (service_point_id)
           SELECT DISTINCT service_point_id FROM cis_assignments
           ON CONFLICT (service_point_id) DO NOTHING""",
        len(service_points),
    )
    percent.at(46)
    meters = {a.meter_id for a in data.assignments}
    counts["meters"] = _insert_new(
        conn,
        """INSERT INTO meters (meter_id)
           SELECT DISTINCT meter_id FROM cis_assignments
           ON CONFLICT (meter_id) DO NOTHING""",
        len(meters),
    )
    percent.at(50)

    # Ends first, then new rows: the exclusion constraint is checked row by row, so a new
    # assignment must not meet the old one it replaces before that one has its valid_to.
    # (A start never moves — it is part of the key — so the updates cannot clash among
    # themselves.)
    updated = conn.execute(
        """UPDATE meter_assignments t SET valid_to = s.valid_to, updated_at = now()
           FROM cis_assignments s
           WHERE (t.meter_id, t.service_point_id, t.account_id, t.valid_from)
                 = (s.meter_id, s.service_point_id, s.account_id, s.valid_from)
             AND t.valid_to IS DISTINCT FROM s.valid_to"""
    ).rowcount
    percent.at(55)
    inserted = conn.execute(
        """INSERT INTO meter_assignments
             (meter_id, service_point_id, account_id, valid_from, valid_to)
           SELECT meter_id, service_point_id, account_id, valid_from, valid_to
           FROM cis_assignments
           ON CONFLICT (meter_id, service_point_id, account_id, valid_from) DO NOTHING"""
    ).rowcount
    counts["assignments"] = TableCounts(
        inserted=inserted,
        updated=updated,
        unchanged=len(data.assignments) - inserted - updated,
    )
    percent.at(99)

    # A first import (or any that changes much) leaves the planner with no idea of the new
    # rows until autovacuum gets round to them; the dataflow's next reload should not wait.
    for name, table in _TABLES.items():
        c = counts[name]
        if c.changed and c.changed >= 0.1 * (c.changed + c.unchanged):
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))

    if counts["assignments"].changed or counts["accounts"].inserted or status_changes:
        row = conn.execute(
            """UPDATE data_versions SET version = version + 1, changed_at = now()
               WHERE name = 'assignments' RETURNING version"""
        ).fetchone()
        report.data_version = row[0] if row else None

    record_audit(
        conn,
        actor=actor,
        action="import_cis",
        entity="cis",
        details={
            "accounts_file": data.accounts_file,
            "meters_file": data.meters_file,
            "counts": {name: asdict(c) for name, c in counts.items()},
            "account_status_or_class_changes": status_changes,
            "data_version": report.data_version,
            "warnings": len(report.warnings),
        },
    )


def _upsert_counts(conn: psycopg.Connection, statement: str, total: int) -> TableCounts:
    row = conn.execute(statement).fetchone()
    inserted, updated = (row[0], row[1]) if row else (0, 0)
    return TableCounts(inserted=inserted, updated=updated, unchanged=total - inserted - updated)


def _insert_new(conn: psycopg.Connection, statement: str, total: int) -> TableCounts:
    inserted = conn.execute(statement).rowcount
    return TableCounts(inserted=inserted, unchanged=total - inserted)


def _merge_alert_settings(conn: psycopg.Connection, total: int) -> TableCounts:
    """Alert settings: created on an account's first import; afterwards only the non-empty
    cells of present columns apply, and only to settings no one else has changed since an
    import last wrote them (see the module docstring)."""
    inserted = conn.execute(
        """INSERT INTO alert_settings
             (account_id, daily_threshold, period_threshold, sms_opt_in, email_opt_in)
           SELECT account_id, daily_alert, period_alert,
                  coalesce(sms_opt_in, false), coalesce(email_opt_in, false)
           FROM cis_accounts
           ON CONFLICT (account_id) DO NOTHING"""
    ).rowcount
    differs = """
        (t.daily_threshold, t.period_threshold, t.sms_opt_in, t.email_opt_in)
        IS DISTINCT FROM (coalesce(s.daily_alert, t.daily_threshold),
                          coalesce(s.period_alert, t.period_threshold),
                          coalesce(s.sms_opt_in, t.sms_opt_in),
                          coalesce(s.email_opt_in, t.email_opt_in))"""
    # Every row an import wrote carries that import's transaction time, which is also the
    # time of its audit_log entry (this import's own rows carry now()).
    written_by_import = """
        (t.updated_at = now() OR t.updated_at IN (
           SELECT at FROM audit_log WHERE entity = 'cis' AND action = 'import_cis'))"""
    updated = conn.execute(
        f"""UPDATE alert_settings t SET
              daily_threshold = coalesce(s.daily_alert, t.daily_threshold),
              period_threshold = coalesce(s.period_alert, t.period_threshold),
              sms_opt_in = coalesce(s.sms_opt_in, t.sms_opt_in),
              email_opt_in = coalesce(s.email_opt_in, t.email_opt_in),
              updated_at = now()
            FROM cis_accounts s
            WHERE t.account_id = s.account_id AND {differs} AND {written_by_import}"""
    ).rowcount
    row = conn.execute(
        f"""SELECT count(*) FROM alert_settings t JOIN cis_accounts s USING (account_id)
            WHERE {differs} AND NOT {written_by_import}"""
    ).fetchone()
    kept = row[0] if row else 0
    return TableCounts(
        inserted=inserted, updated=updated, unchanged=total - inserted - updated, kept=kept
    )


def _clashes_with_database(conn: psycopg.Connection, data: CisData) -> list[CisProblem]:
    """File rows that would put a meter on a second service point while an assignment the
    database already has (and the file does not mention) keeps it on another. The file's own
    rows were checked against each other before; this names the rows before the database's
    exclusion constraint would refuse them without naming any."""
    rows = conn.execute(
        """SELECT s.origin, s.meter_id, s.service_point_id, s.valid_from, s.valid_to,
                  t.assignment_id, t.service_point_id, t.account_id, t.valid_from, t.valid_to
           FROM cis_assignments s
           JOIN meter_assignments t
             ON t.meter_id = s.meter_id AND t.service_point_id <> s.service_point_id
            AND tstzrange(t.valid_from, t.valid_to) && tstzrange(s.valid_from, s.valid_to)
           WHERE NOT EXISTS (
             SELECT 1 FROM cis_assignments f
             WHERE (f.meter_id, f.service_point_id, f.account_id, f.valid_from)
                   = (t.meter_id, t.service_point_id, t.account_id, t.valid_from))"""
    ).fetchall()
    problems = []
    for origin, meter, sp, start, end, old_id, old_sp, old_account, old_start, old_end in rows:
        problems.append(
            CisProblem(
                data.meters_file,
                _row_of(origin),
                f"meter {meter!r} would be on service point {sp!r} {format_span(start, end)} "
                f"while the database already has it on service point {old_sp!r} (account "
                f"{old_account!r}, {format_span(old_start, old_end)}, assignment {old_id}, "
                "loaded by an earlier import): add that assignment to the file with the "
                "valid_to it really has, or fix this row's dates",
            )
        )
    problems.sort(key=lambda p: p.row or 0)
    return problems


_EXCLUSION_DETAIL = re.compile(
    r"\)=\((?P<meter>.*?), (?P<sp>.*?), (?P<span>[\[(].*?[\])])\) conflicts with existing key "
    r"\(.*?\)=\((?P<old_meter>.*?), (?P<old_sp>.*?), (?P<old_span>[\[(].*?[\])])\)"
)


def exclusion_problem(exc: psycopg.errors.ExclusionViolation, data: CisData) -> CisProblem:
    """The database's `meter_on_one_service_point_at_a_time` refusal in the import's words:
    which meter, which service points, and the file row when it can be told."""
    detail = exc.diag.message_detail or str(exc)
    match = _EXCLUSION_DETAIL.search(detail)
    if not match:
        return CisProblem(
            data.meters_file,
            None,
            f"the database refused an assignment: a meter would be on two service points at "
            f"the same time ({detail}); another import or user changed assignments meanwhile: "
            "import again, and fix the rows it names",
        )
    meter, sp, old_sp = match["meter"], match["sp"], match["old_sp"]
    rows = sorted(
        r
        for a in data.assignments
        if a.meter_id == meter and a.service_point_id == sp
        if (r := _row_of(a.origin)) is not None
    )
    return CisProblem(
        data.meters_file,
        rows[0] if rows else None,
        f"meter {meter!r} would be on service points {sp!r} {match['span']} and {old_sp!r} "
        f"{match['old_span']} at the same time: the database already holds the second "
        "(another import or user added it while this one ran); end that assignment with a "
        "valid_to in the file, or fix this row's dates, and import again",
    )
