"""meterwatch.audit: every check on crafted records, from the database (after a real import)
and from the CIS files, which must agree; the silent-meter check against real reads; the
report's rendering and JSON."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from meterwatch.audit import AuditReport, Finding, audit_files, run_audit
from meterwatch.cis import import_cis

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)

ACCOUNTS_HEADER = [
    *("account_id", "customer_name", "email", "phone", "status", "customer_class"),
    *("rate_plan", "cycle_day", "sms_opt_in", "email_opt_in"),
]
METERS_HEADER = ["meter_id", "service_point_id", "account_id", "valid_from", "valid_to"]

# Clean records: an exchanged meter, an inactive account whose meter was removed.
ACCOUNTS = [
    ["A1", "Ada", "ada@example.com", "+15550001", "active", "residential", "R1", "1", "true", ""],
    ["A2", "Bo", "", "+15550002", "active", "commercial", "C1", "15", "", ""],
    ["A3", "Cy", "cy@example.com", "", "inactive", "residential", "R1", "1", "", "true"],
]
METERS = [
    ["M1", "SP1", "A1", "2024-01-01", ""],
    ["M2-OLD", "SP2", "A2", "2023-01-01", "2025-06-01"],
    ["M2", "SP2", "A2", "2025-06-01", ""],
    ["M3", "SP3", "A3", "2022-01-01", "2025-12-01"],
]


def account(account_id: str, status: str = "active", **changes: str) -> list[str]:
    row = dict(zip(ACCOUNTS_HEADER, ACCOUNTS[1], strict=True))
    row.update(account_id=account_id, customer_name=f"Customer {account_id}", status=status)
    row.update(changes)
    return [row[c] for c in ACCOUNTS_HEADER]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


class Auditor:
    """Writes a CIS export and audits it: from the files, or from the database after a real
    import (with a read an hour ago from every current meter unless told otherwise)."""

    def __init__(self, tmp_path: Path, database: Callable[[], str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.database = database
        self._url: str | None = None

    @property
    def source(self) -> str:
        return "files" if self.database is None else "database"

    @property
    def url(self) -> str:
        assert self.database is not None
        if self._url is None:
            self._url = self.database()
        return self._url

    def __call__(
        self,
        accounts: Sequence[Sequence[str]] = ACCOUNTS,
        meters: Sequence[Sequence[str]] = METERS,
        *,
        reads: bool = True,
    ) -> AuditReport:
        files = (
            write_csv(self.tmp_path / "accounts.csv", ACCOUNTS_HEADER, accounts),
            write_csv(self.tmp_path / "meters.csv", METERS_HEADER, meters),
        )
        if self.database is None:
            return audit_files(*files, now=NOW)
        imported = import_cis(self.url, *files)
        assert imported.ok, [str(e) for e in imported.errors]
        if reads:
            self.read_current_meters(NOW - timedelta(hours=1))
        return run_audit(self.url, now=NOW)

    def read_current_meters(self, ts: datetime) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(
                """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id,
                                      service_point_id)
                   SELECT DISTINCT ON (meter_id) meter_id, %(ts)s, 1.0, 'gal', account_id,
                          service_point_id
                   FROM meter_assignments
                   WHERE valid_from <= %(now)s AND (valid_to IS NULL OR valid_to > %(now)s)
                   ON CONFLICT DO NOTHING""",
                {"ts": ts, "now": NOW},
            )


@pytest.fixture(params=["database", "files"])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> Auditor:
    """Runs the test on both audits: of the database after an import, and of the files."""
    if request.param == "files":
        return Auditor(tmp_path)
    return Auditor(tmp_path, lambda: str(request.getfixturevalue("database_url")))


def found(report: AuditReport, check: str | None = None) -> list[Finding]:
    return [f for f in report.findings if check is None or f.check == check]


def summary(report: AuditReport) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [(f.check, f.severity, f.meter_ids, f.account_ids) for f in report.findings]


# --- each check ------------------------------------------------------------------------------


def test_clean_records_have_no_findings(audit: Auditor) -> None:
    report = audit()
    assert report.findings == []
    assert not report.blocking
    assert report.checked == {"accounts": 3, "assignments": 4, "meters": 4}


def test_duplicate_meter_ids(audit: Auditor) -> None:
    accounts = [*ACCOUNTS, account("A4"), account("A5"), account("A6"), account("A7")]
    meters = [
        *METERS,
        ["00012345", "SP4", "A4", "2024-01-01", ""],
        ["12345", "SP5", "A5", "2024-01-01", ""],
        ["ab-1", "SP6", "A6", "2024-01-01", ""],
        ["AB-1", "SP7", "A7", "2024-01-01", ""],
    ]
    report = audit(accounts, meters)
    assert summary(report) == [
        ("duplicate_meter_id", "blocking", ("00012345", "12345"), ("A4", "A5")),
        ("duplicate_meter_id", "blocking", ("AB-1", "ab-1"), ("A7", "A6")),
    ]
    assert found(report)[0].message.startswith(
        "meter ids '00012345' (account 'A4'), '12345' (account 'A5') differ only by leading "
        "zeros: probably one meter recorded twice by a migration."
    )
    assert "differ only by letter case" in found(report)[1].message
    assert report.blocking


def test_meter_ids_with_spaces_in_the_database(database_url: str, tmp_path: Path) -> None:
    """The importer trims cells, but a migration by other means may not have."""
    auditor = Auditor(tmp_path, lambda: database_url)
    auditor()
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO meters VALUES ('M1 '), ('m2')")
        conn.execute(
            "INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from) "
            "VALUES ('M1 ', 'SP3', 'A3', '2021-01-01'), ('m2', 'SP3', 'A3', '2020-01-01')"
        )
        conn.execute("UPDATE meter_assignments SET valid_to = '2021-01-01' WHERE meter_id = 'm2'")
    report = run_audit(database_url, now=NOW)
    assert [(f.check, f.meter_ids) for f in report.findings] == [
        ("duplicate_meter_id", ("M1", "M1 ")),
        ("duplicate_meter_id", ("M2", "m2")),
        ("silent_meter", ("M1 ",)),  # the head-end's reads never match it
        ("inactive_account_with_meter", ("M1 ",)),
    ]
    assert "differ only by surrounding spaces:" in report.findings[0].message
    assert "'m2' (no current account)" in report.findings[1].message


def test_meter_current_on_two_assignments(audit: Auditor) -> None:
    # Two accounts at one service point, both current: possible in the files and the database.
    accounts = [*ACCOUNTS, account("A4")]
    meters = [*METERS, ["M1", "SP1", "A4", "2026-03-01", ""]]
    report = audit(accounts, meters)
    assert summary(report) == [("duplicate_meter_id", "blocking", ("M1",), ("A1", "A4"))]
    origin = "meters.csv row" if audit.source == "files" else "assignment"
    assert found(report)[0].message.startswith(f"meter 'M1' is current on 2 assignments ({origin} ")


def test_meter_current_on_two_service_points_in_files(tmp_path: Path) -> None:
    # The importer refuses this and the database cannot hold it; the file audit names it.
    auditor = Auditor(tmp_path)
    meters = [*METERS, ["M1", "SP9", "A2", "2026-01-01", ""]]
    report = auditor(ACCOUNTS, meters)
    assert [(f.check, f.service_point_ids, f.origins) for f in report.findings] == [
        ("duplicate_meter_id", ("SP1", "SP9"), ("meters.csv row 2", "meters.csv row 6")),
    ]


def test_overlapping_assignments(audit: Auditor) -> None:
    # A move-out and move-in on one service point that overlap by five days.
    accounts = [*ACCOUNTS, account("A4", "inactive"), account("A5")]
    meters = [
        *METERS,
        ["M4", "SP4", "A4", "2024-01-01", "2026-03-06"],
        ["M4", "SP4", "A5", "2026-03-01", ""],
    ]
    report = audit(accounts, meters)
    assert summary(report) == [("overlapping_assignments", "blocking", ("M4",), ("A4", "A5"))]
    message = found(report)[0].message
    assert message.startswith("meter 'M4' at service point 'SP4' is on accounts 'A4' (")
    assert "at the same time, from 2026-03-01 to 2026-03-06: reads in that span go to" in message
    assert message.endswith(f"(when {found(report)[0].origins[1]} starts).")


def test_overlap_on_two_service_points_in_files(tmp_path: Path) -> None:
    auditor = Auditor(tmp_path)
    meters = [*METERS, ["M2-OLD", "SP9", "A1", "2025-01-01", "2025-02-01"]]
    report = auditor(ACCOUNTS, meters)
    assert [(f.check, f.meter_ids, f.service_point_ids, f.origins) for f in report.findings] == [
        (
            "overlapping_assignments",
            ("M2-OLD",),
            ("SP2", "SP9"),
            ("meters.csv row 3", "meters.csv row 6"),
        ),
    ]
    assert "from 2025-01-01 to 2025-02-01: a meter is in one place at a time" in (
        report.findings[0].message
    )


def test_retired_meter_on_active_account(audit: Auditor) -> None:
    accounts = [*ACCOUNTS, account("A4"), account("A5")]
    meters = [
        *METERS,
        ["M4", "SP4", "A4", "2024-01-01", "2026-02-01"],
        # SP4 has a new occupant with a new meter; A4 is still active.
        ["M5", "SP4", "A5", "2026-02-01", ""],
    ]
    report = audit(accounts, meters)
    assert summary(report) == [
        ("retired_meter_on_active_account", "blocking", ("M4",), ("A4",)),
    ]
    assert found(report)[0].message == (
        f"account 'A4' is active, but its meter 'M4' left service point 'SP4' on 2026-02-01 "
        f"({found(report)[0].origins[0]}) and no meter replaced it: the account would bill on "
        "no reads. Service point 'SP4' now has meter 'M5' on account 'A5'. Add the new meter's "
        "assignment, or set the account inactive if the customer moved out."
    )


def test_active_account_without_meter(audit: Auditor) -> None:
    accounts = [*ACCOUNTS, account("A4"), account("A5")]
    meters = [*METERS, ["M5", "SP5", "A5", "2026-04-01", ""]]
    report = audit(accounts, meters)
    assert summary(report) == [
        ("active_account_without_meter", "blocking", (), ("A4",)),
        ("active_account_without_meter", "blocking", ("M5",), ("A5",)),
        ("future_assignment", "warning", ("M5",), ("A5",)),
    ]
    assert found(report)[0].message.startswith(
        "account 'A4' is active but has no meter: it would bill on no reads."
    )
    assert found(report)[1].message.startswith(
        "account 'A5' is active but has no meter (meter 'M5' is assigned only from 2026-04-01)"
    )


def test_inactive_account_with_meter(audit: Auditor) -> None:
    accounts = [*ACCOUNTS, account("A4", "inactive")]
    meters = [*METERS, ["M4", "SP4", "A4", "2024-01-01", ""]]
    report = audit(accounts, meters)
    assert summary(report) == [("inactive_account_with_meter", "warning", ("M4",), ("A4",))]
    assert not report.blocking


def test_coverage_gap(audit: Auditor) -> None:
    meters = [
        ["M1", "SP1", "A1", "2024-01-01", "2025-09-01"],
        ["M1B", "SP1", "A1", "2025-09-10", ""],
        *METERS[1:],
    ]
    report = audit(ACCOUNTS, meters)
    assert summary(report) == [("coverage_gap", "warning", ("M1", "M1B"), ("A1",))]
    assert found(report)[0].message.startswith(
        "account 'A1' had no meter from 2025-09-01 to 2025-09-10, between meter 'M1'"
    )


def test_alerts_without_contact(audit: Auditor) -> None:
    accounts = [
        *ACCOUNTS,
        account("A4", phone="", sms_opt_in="true", email="", email_opt_in="true"),
    ]
    meters = [*METERS, ["M4", "SP4", "A4", "2024-01-01", ""]]
    report = audit(accounts, meters)
    assert summary(report) == [("alerts_without_contact", "warning", (), ("A4",))]
    assert found(report)[0].message.startswith(
        "account 'A4' (customer 'A4') is opted in to SMS alerts but has no phone number and to "
        "email alerts but has no email address"
    )


def test_unknown_customer_class(audit: Auditor) -> None:
    accounts = [*ACCOUNTS, account("A4", customer_class="hydrant")]
    meters = [*METERS, ["M4", "SP4", "A4", "2024-01-01", ""]]
    report = audit(accounts, meters)
    assert summary(report) == [("unknown_customer_class", "warning", (), ("A4",))]


def test_rows_the_import_would_refuse(tmp_path: Path) -> None:
    auditor = Auditor(tmp_path)
    accounts = [*ACCOUNTS, account("A4", cycle_day="35")]
    meters = [
        *METERS,
        ["M4", "SP4", "A4", "2024-01-01", ""],
        ["M5", "SP5", "A17", "2024-01-01", ""],
    ]
    report = auditor(accounts, meters)
    assert [(f.check, f.severity, f.origins) for f in report.findings] == [
        ("invalid_row", "blocking", ("accounts.csv row 5",)),
        ("invalid_row", "blocking", ("meters.csv row 7",)),
    ]
    assert report.findings[0].message == (
        "accounts.csv row 5: cycle_day '35' is not a day of the month (1–31). The import "
        "refuses the whole export until this is fixed."
    )


# --- silent meters (database only) -----------------------------------------------------------


def test_silent_meters(database_url: str, tmp_path: Path) -> None:
    auditor = Auditor(tmp_path, lambda: database_url)
    accounts = [*ACCOUNTS, account("A4"), account("A5"), account("A6")]
    meters = [
        *METERS,
        ["M4", "SP4", "A4", "2024-01-01", ""],  # never read
        ["M5", "SP5", "A5", "2026-03-18", ""],  # installed two days ago: not silent yet
        ["M6", "SP6", "A6", "2024-01-01", ""],  # reads go to the exception queue
    ]
    auditor(accounts, meters, reads=False)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            """INSERT INTO reads (meter_id, ts, value, reported_unit, account_id,
                                  service_point_id)
               VALUES ('M1', %(recent)s, 1, 'gal', 'A1', 'SP1'),
                      ('M2', %(old)s, 1, 'gal', 'A2', 'SP2'),
                      ('M2-OLD', %(recent)s, 1, 'gal', 'A2', 'SP2'),
                      ('M1', %(future)s, 1, 'gal', 'A1', 'SP1')""",
            {
                "recent": NOW - timedelta(days=2),
                "old": NOW - timedelta(days=10),
                "future": NOW + timedelta(days=30),
            },
        )
        conn.execute(
            """INSERT INTO unmatched_reads (meter_id, ts, value, reported_unit, reason, detail,
                                            delivery)
               VALUES ('M6', %s, 1, 'gal', 'ambiguous_assignment', 'two accounts', 'x:1')""",
            (NOW - timedelta(hours=3),),
        )
    report = run_audit(database_url, now=NOW, silent_days=7)
    assert summary(report) == [
        ("silent_meter", "warning", ("M2",), ("A2",)),
        ("silent_meter", "warning", ("M4",), ("A4",)),
        ("silent_meter", "warning", ("M6",), ("A6",)),
    ]
    messages = [f.message for f in report.findings]
    assert messages[0] == (
        "meter 'M2' (account 'A2', service point 'SP2') has sent no read for 7 days (last read "
        "on 2026-03-10T12:00+00:00). Check the meter and its radio, and that the head-end uses "
        "this meter id."
    )
    assert "(no read ever stored)" in messages[1]
    assert messages[2].endswith(
        "Its reads do arrive but go to the exception queue (ambiguous_assignment, latest "
        "2026-03-20T09:00+00:00): resolve why they do not match."
    )
    assert not report.blocking

    # With a shorter window, M1 (two days) is silent too; with a longer one, M2 is not.
    assert {f.meter_ids[0] for f in run_audit(database_url, now=NOW, silent_days=1).findings} >= {
        "M1"
    }
    assert "M2" not in {
        f.meter_ids[0] for f in run_audit(database_url, now=NOW, silent_days=11).findings
    }


def test_no_reads_stored_yet(database_url: str, tmp_path: Path) -> None:
    auditor = Auditor(tmp_path, lambda: database_url)
    report = auditor(reads=False)
    assert [(f.check, f.severity) for f in report.findings] == [("silent_meter", "warning")]
    assert report.findings[0].message.startswith("no reads are stored yet")


# --- both audits agree -------------------------------------------------------------------------

MESSY_ACCOUNTS = [
    *ACCOUNTS,
    account("A4"),
    account("A5"),
    account("A6", "inactive"),
    account("A7", customer_class="fireline", sms_opt_in="true", phone=""),
    account("A8"),
    account("A9"),
    account("A10", "inactive"),
]
MESSY_METERS = [
    *METERS,
    ["0M4", "SP4", "A4", "2024-01-01", "2026-01-01"],  # retired on active A4
    ["m4", "SP4", "A5", "2025-12-01", ""],  # the same meter as 0M4?
    ["M6", "SP6", "A6", "2024-01-01", "2026-03-10"],
    ["M6", "SP6", "A9", "2026-03-01", ""],  # move-in before the move-out
    ["M7", "SP7", "A7", "2024-01-01", "2025-01-01"],
    ["M7B", "SP7", "A7", "2025-02-01", ""],  # a month without a meter
    ["M8", "SP8", "A8", "2026-06-01", ""],  # not installed yet
    ["M10", "SP10", "A10", "2024-01-01", ""],  # still on an inactive account
]
_ORIGIN = re.compile(r"(meters|accounts)\.csv row \d+|assignment \d+")


def test_database_and_file_audits_agree(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    files_report = Auditor(tmp_path / "files")(MESSY_ACCOUNTS, MESSY_METERS)
    database_report = Auditor(tmp_path, lambda: database_url)(MESSY_ACCOUNTS, MESSY_METERS)

    # Files list findings in row order, the database in id order.
    assert sorted(summary(files_report)) == sorted(summary(database_report))
    assert [f.check for f in files_report.findings] == [
        "duplicate_meter_id",
        "overlapping_assignments",
        "retired_meter_on_active_account",
        "active_account_without_meter",
        "inactive_account_with_meter",
        "coverage_gap",
        "future_assignment",
        "alerts_without_contact",
        "unknown_customer_class",
    ]
    # The messages differ only in where a record came from: a file row or an assignment id.
    assert sorted(_ORIGIN.sub("…", f.message) for f in files_report.findings) == sorted(
        _ORIGIN.sub("…", f.message) for f in database_report.findings
    )


# --- the report --------------------------------------------------------------------------------


def test_render_and_json(tmp_path: Path) -> None:
    auditor = Auditor(tmp_path)
    report = auditor(MESSY_ACCOUNTS, MESSY_METERS)
    console = Console(record=True, width=160)
    report.render(console)
    text = console.export_text()
    assert (
        "Audit of accounts.csv and meters.csv (10 accounts, 12 assignments, 11 meters) as of "
        "2026-03-20 12:00 UTC"
    ) in text
    assert "Duplicate meter ids — 1 blocking" in text
    assert "Silent meters" in text and "database only" in text
    assert "Billing is blocked: 4 blocking finding(s) and 5 warning(s)." in text

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["blocking"] == 4
    assert as_json["silent_days"] is None
    assert as_json["by_check"]["duplicate_meter_id"] == 1
    assert as_json["findings"][0]["check"] == "duplicate_meter_id"
    assert as_json["findings"][0]["meter_ids"] == ["0M4", "m4"]

    clean = auditor()
    console = Console(record=True, width=160)
    clean.render(console)
    assert "No findings: the records are ready for billing." in console.export_text()
