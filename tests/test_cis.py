"""meterwatch.cis against real databases: importing the CIS export into TimescaleDB and plain
PostgreSQL, idempotent re-imports, the alert-settings rule, every validation error with its
row and fix, and the meter-on-one-service-point rule in the importer and in the database."""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rich.console import Console

from meterwatch.cis import ImportReport, exclusion_problem, import_cis, read_cis
from meterwatch.settings import Settings

ACCOUNTS_HEADER = [
    *("account_id", "customer_name", "email", "phone", "status", "customer_class"),
    *("rate_plan", "cycle_day", "daily_alert", "period_alert", "sms_opt_in", "email_opt_in"),
    "customer_id",
]
T_2026_03_15 = datetime(2026, 3, 15, tzinfo=UTC)
METERS_HEADER = ["meter_id", "service_point_id", "account_id", "valid_from", "valid_to"]

# A small, complete export: a customer with two accounts, a meter exchange, an inactive
# account, and a move-out/move-in on one service point that overlaps by two weeks.
ACCOUNTS = [
    ["A1", "Ada Lovelace", "ada@example.com", "+15550001", "active", "residential", "R1", "1",
     "500", "12000", "true", "true", "C1"],
    ["A2", "Ada Lovelace", "ada@example.com", "+15550001", "active", "irrigation", "IRR", "1",
     "", "", "false", "true", "C1"],
    ["A3", "Bo Diddley", "", "+15550003", "inactive", "commercial", "", "15",
     "", "", "", "", ""],
    ["A4", "Cy Twombly", "cy@example.com", "", "Active", "Residential", "R1", "28",
     "300.5", "", "", "true", ""],
]  # fmt: skip
METERS = [
    ["M1", "SP1", "A1", "2024-01-01", ""],
    ["M2-OLD", "SP2", "A2", "2023-05-01", "2025-06-01T10:00:00-05:00"],
    ["M2", "SP2", "A2", "2025-06-01T10:00:00-05:00", ""],
    ["M3", "SP3", "A3", "2022-01-01", "2026-03-15"],
    ["M3", "SP3", "A4", "2026-03-01", ""],
]


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_export(
    tmp_path: Path,
    accounts: Sequence[Sequence[str]] = ACCOUNTS,
    meters: Sequence[Sequence[str]] = METERS,
    *,
    accounts_header: Sequence[str] = ACCOUNTS_HEADER,
    name: str = "",
) -> tuple[Path, Path]:
    folder = tmp_path / (name or "export")
    folder.mkdir(exist_ok=True)
    return (
        write_csv(folder / "accounts.csv", accounts_header, accounts),
        write_csv(folder / "meters.csv", METERS_HEADER, meters),
    )


def table_counts(url: str) -> dict[str, int]:
    tables = [
        "customers",
        "accounts",
        "alert_settings",
        "service_points",
        "meters",
        "meter_assignments",
    ]
    with psycopg.connect(url) as conn:
        return {t: one(conn, f"SELECT count(*) FROM {t}") for t in tables}


def one(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return row[0]


def version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT version FROM data_versions WHERE name = 'assignments'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def counts_of(report: ImportReport) -> dict[str, tuple[int, int, int]]:
    return {n: (c.inserted, c.updated, c.unchanged) for n, c in report.counts.items()}


def errors_of(report: ImportReport) -> list[str]:
    return [str(e) for e in report.errors]


# --- importing valid files -------------------------------------------------------------------


def test_import_valid_export(any_database_url: str, tmp_path: Path) -> None:
    accounts_csv, meters_csv = write_export(tmp_path)

    report = import_cis(any_database_url, accounts_csv, meters_csv, actor="ops@utility")

    assert report.ok, errors_of(report)
    assert counts_of(report) == {
        "customers": (3, 0, 0),
        "accounts": (4, 0, 0),
        "alert_settings": (4, 0, 0),
        "service_points": (3, 0, 0),
        "meters": (4, 0, 0),
        "assignments": (5, 0, 0),
    }
    assert report.data_version == 1
    assert version(any_database_url) == 1
    # The move-out/move-in overlap on SP3 is not an error, but it is said.
    assert any("'M3' (meters.csv row 5 and 6)" in w for w in report.warnings)
    with psycopg.connect(any_database_url) as conn:
        assert conn.execute(
            "SELECT account_id, customer_id, status, customer_class, rate_plan, cycle_day "
            "FROM accounts ORDER BY account_id"
        ).fetchall() == [
            ("A1", "C1", "active", "residential", "R1", 1),
            ("A2", "C1", "active", "irrigation", "IRR", 1),
            ("A3", "A3", "inactive", "commercial", None, 15),
            ("A4", "A4", "active", "residential", "R1", 28),
        ]
        assert conn.execute(
            "SELECT customer_id, name, email, phone FROM customers ORDER BY 1"
        ).fetchall() == [
            ("A3", "Bo Diddley", None, "+15550003"),
            ("A4", "Cy Twombly", "cy@example.com", None),
            ("C1", "Ada Lovelace", "ada@example.com", "+15550001"),
        ]
        assert conn.execute(
            "SELECT account_id, daily_threshold, period_threshold, sms_opt_in, email_opt_in "
            "FROM alert_settings ORDER BY 1"
        ).fetchall() == [
            ("A1", 500.0, 12000.0, True, True),
            ("A2", None, None, False, True),
            ("A3", None, None, False, False),
            ("A4", 300.5, None, False, True),
        ]
        assert conn.execute(
            "SELECT meter_id, service_point_id, account_id, valid_from, valid_to "
            "FROM meter_assignments ORDER BY meter_id, valid_from"
        ).fetchall() == [
            ("M1", "SP1", "A1", datetime(2024, 1, 1, tzinfo=UTC), None),
            ("M2", "SP2", "A2", datetime(2025, 6, 1, 15, tzinfo=UTC), None),
            (
                "M2-OLD",
                "SP2",
                "A2",
                datetime(2023, 5, 1, tzinfo=UTC),
                datetime(2025, 6, 1, 15, tzinfo=UTC),
            ),
            (
                "M3",
                "SP3",
                "A3",
                datetime(2022, 1, 1, tzinfo=UTC),
                datetime(2026, 3, 15, tzinfo=UTC),
            ),
            ("M3", "SP3", "A4", datetime(2026, 3, 1, tzinfo=UTC), None),
        ]
        entry = conn.execute(
            "SELECT actor, action, entity, details FROM audit_log WHERE action = 'import_cis'"
        ).fetchall()
    assert len(entry) == 1
    actor, action, entity, details = entry[0]
    assert (actor, action, entity) == ("ops@utility", "import_cis", "cis")
    assert details["counts"]["assignments"] == {
        "inserted": 5,
        "updated": 0,
        "unchanged": 0,
        "kept": 0,
    }
    assert details["data_version"] == 1
    assert (details["accounts_file"], details["meters_file"]) == ("accounts.csv", "meters.csv")


def test_reimport_changes_nothing(database_url: str, tmp_path: Path) -> None:
    accounts_csv, meters_csv = write_export(tmp_path)
    first = import_cis(database_url, accounts_csv, meters_csv)
    assert first.ok
    before = table_counts(database_url)

    again = import_cis(database_url, accounts_csv, meters_csv)

    assert again.ok
    assert not again.changed
    assert counts_of(again) == {
        "customers": (0, 0, 3),
        "accounts": (0, 0, 4),
        "alert_settings": (0, 0, 4),
        "service_points": (0, 0, 3),
        "meters": (0, 0, 4),
        "assignments": (0, 0, 5),
    }
    assert again.data_version is None
    assert version(database_url) == 1
    assert table_counts(database_url) == before
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'import_cis'").fetchone()
    assert row == (2,)  # every import is recorded, even one that changed nothing


def test_reimport_applies_changes_and_bumps_version_only_when_matching_changes(
    database_url: str, tmp_path: Path
) -> None:
    assert import_cis(database_url, *write_export(tmp_path, name="v1")).ok

    # A rate plan and a phone number: nothing a running dataflow matches on.
    accounts = [list(r) for r in ACCOUNTS]
    accounts[3][6] = "R2"
    accounts[2][3] = "+15559999"
    report = import_cis(database_url, *write_export(tmp_path, accounts, name="v2"))
    assert report.ok
    assert counts_of(report)["accounts"] == (0, 1, 3)
    assert counts_of(report)["customers"] == (0, 1, 2)
    assert report.data_version is None
    assert version(database_url) == 1

    # A meter exchange: M1 ends and M1B takes over; and A3 becomes active.
    meters = [list(r) for r in METERS]
    meters[0][4] = "2026-03-10"
    meters.append(["M1B", "SP1", "A1", "2026-03-10", ""])
    accounts[2][4] = "active"
    report = import_cis(database_url, *write_export(tmp_path, accounts, meters, name="v3"))
    assert report.ok, errors_of(report)
    assert counts_of(report)["assignments"] == (1, 1, 4)
    assert counts_of(report)["meters"] == (1, 0, 4)
    assert counts_of(report)["accounts"] == (0, 1, 3)
    assert report.data_version == 2
    assert version(database_url) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT meter_id, valid_from, valid_to FROM meter_assignments "
            "WHERE service_point_id = 'SP1' ORDER BY valid_from"
        ).fetchall() == [
            ("M1", datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)),
            ("M1B", datetime(2026, 3, 10, tzinfo=UTC), None),
        ]

    # Only a customer class change still bumps the version.
    accounts[1][5] = "commercial"
    report = import_cis(database_url, *write_export(tmp_path, accounts, meters, name="v4"))
    assert report.ok
    assert report.data_version == 3
    assert counts_of(report)["assignments"] == (0, 0, 6)


def test_alert_settings_defaults_and_customer_changes(database_url: str, tmp_path: Path) -> None:
    assert import_cis(database_url, *write_export(tmp_path, name="v1")).ok

    def settings() -> dict[str, tuple[Any, ...]]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT account_id, daily_threshold, period_threshold, sms_opt_in, email_opt_in "
                "FROM alert_settings"
            ).fetchall()
        return {r[0]: r[1:] for r in rows}

    # The customer of A1 changes their own daily threshold and opts out of SMS (as the API
    # does it: updated_at moves on).
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE alert_settings SET daily_threshold = 800, sms_opt_in = false, "
            "updated_at = now() WHERE account_id = 'A1'"
        )

    # The utility raises every default; A2's empty cells leave its settings alone.
    accounts = [list(r) for r in ACCOUNTS]
    accounts[0][8] = "600"  # A1: the customer's 800 stays
    accounts[1][10] = ""  # A2: empty sms_opt_in: unchanged
    accounts[3][8] = "350"  # A4: updated
    accounts[3][10] = "true"  # A4: enrolled in SMS
    report = import_cis(database_url, *write_export(tmp_path, accounts, name="v2"))

    assert report.ok
    alerts = report.counts["alert_settings"]
    assert (alerts.inserted, alerts.updated, alerts.kept) == (0, 1, 1)
    assert settings() == {
        "A1": (800.0, 12000.0, False, True),
        "A2": (None, None, False, True),
        "A3": (None, None, False, False),
        "A4": (350.0, None, True, True),
    }

    # Without the optional columns, nothing about alerts changes.
    no_alert_columns = [*ACCOUNTS_HEADER[:8], "customer_id"]
    slim = [[*r[:8], r[12]] for r in accounts]
    report = import_cis(
        database_url,
        *write_export(tmp_path, slim, accounts_header=no_alert_columns, name="v3"),
    )
    assert report.ok
    assert counts_of(report)["alert_settings"] == (0, 0, 4)
    assert settings()["A4"] == (350.0, None, True, True)

    # A new account gets its settings from the file even when others are kept.
    accounts.append(
        ["A5", "Di Prima", "di@example.com", "", "active", "residential", "R1", "3", "400", "",
         "", "true", ""]
    )  # fmt: skip
    report = import_cis(database_url, *write_export(tmp_path, accounts, name="v4"))
    assert report.ok
    assert report.counts["alert_settings"].inserted == 1
    assert settings()["A5"] == (400.0, None, False, True)
    assert settings()["A1"] == (800.0, 12000.0, False, True)


def test_plain_dates_are_midnight_in_the_utility_time_zone(
    database_url: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    make_settings(utility_tz="America/Chicago")
    meters = [["M1", "SP1", "A1", "2026-03-01", "2026-07-01"]]
    report = import_cis(database_url, *write_export(tmp_path, ACCOUNTS[:1], meters))
    assert report.ok
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT valid_from, valid_to FROM meter_assignments").fetchone()
    # CST in March, CDT in July
    assert row == (datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 7, 1, 5, tzinfo=UTC))


def test_progress_is_reported_as_percent(database_url: str, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = import_cis(
        database_url, *write_export(tmp_path), progress=lambda d, t: seen.append((d, t))
    )
    assert report.ok
    assert seen[0] == (0, 100)
    assert seen[-1] == (100, 100)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_import_inside_a_callers_transaction(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1")  # the caller's transaction is open
        report = import_cis(conn, *write_export(tmp_path))
        assert report.ok
        # A second import on the same connection and transaction finds its tables again.
        assert import_cis(conn, *write_export(tmp_path)).ok
        conn.rollback()
    assert table_counts(database_url)["accounts"] == 0


def test_render_and_to_dict(database_url: str, tmp_path: Path) -> None:
    console = Console(record=True, width=120)
    report = import_cis(database_url, *write_export(tmp_path))
    report.render(console)
    text = console.export_text()
    assert "assignments" in text and "Imported" in text
    assert report.to_dict()["counts"]["accounts"]["inserted"] == 4

    bad = [list(r) for r in ACCOUNTS]
    bad[0][7] = "35"
    failed = import_cis(database_url, *write_export(tmp_path, bad, name="bad"))
    console = Console(record=True, width=200)
    failed.render(console)
    text = console.export_text()
    assert "Nothing imported" in text
    assert "accounts.csv row 2: cycle_day '35' is not a day of the month (1–31)" in text
    assert failed.to_dict()["ok"] is False


# --- validation ------------------------------------------------------------------------------


def account(**changes: str) -> list[str]:
    row = dict(zip(ACCOUNTS_HEADER, ACCOUNTS[0], strict=True))
    row.update(changes)
    return [row[c] for c in ACCOUNTS_HEADER]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (
            account(cycle_day="35"),
            "accounts.csv row 4: cycle_day '35' is not a day of the month (1–31)",
        ),
        (
            account(cycle_day="first"),
            "accounts.csv row 4: cycle_day 'first' is not a day of the month (1–31)",
        ),
        (
            account(status="closed"),
            "accounts.csv row 4: status 'closed' must be 'active' or 'inactive'",
        ),
        (
            account(account_id=""),
            "accounts.csv row 4: account_id is empty (every row needs the account number)",
        ),
        (
            account(customer_name=""),
            "accounts.csv row 4: customer_name is empty (every account needs its customer's name)",
        ),
        (
            account(email="ada.example.com"),
            "accounts.csv row 4: email 'ada.example.com' is not an email address "
            "(fix it or leave the cell empty)",
        ),
        (
            account(daily_alert="-5"),
            "accounts.csv row 4: daily_alert '-5' is not a positive number: give the threshold "
            "in the account's unit (gal or kWh) with a decimal point, or leave it empty for no "
            "alert",
        ),
        (
            account(period_alert="1,5"),
            "accounts.csv row 4: period_alert '1,5' is not a positive number",
        ),
        (
            account(sms_opt_in="maybe"),
            "accounts.csv row 4: sms_opt_in 'maybe' must be true or false "
            "(or empty to leave it as it is)",
        ),
        (
            account(customer_class="Small Commercial"),
            "accounts.csv row 4: customer_class 'Small Commercial' must be one word of letters, "
            "digits, '_' or '-' (e.g. 'small_commercial')",
        ),
        (
            account(account_id="A1", customer_name="Someone Else", customer_id="X"),
            "accounts.csv row 4: account 'A1' is already in row 2 "
            "(list each account once: remove or merge the rows)",
        ),
        (
            account(account_id="A9", phone="+15550002"),
            "accounts.csv row 4: customer 'C1' has a different phone than in row 2: one "
            "customer has one name, email and phone (make the rows agree, or give the accounts "
            "different customer_id)",
        ),
    ],
)
def test_account_row_errors(database_url: str, tmp_path: Path, row: list[str], error: str) -> None:
    report = import_cis(database_url, *write_export(tmp_path, [*ACCOUNTS[:2], row, *ACCOUNTS[2:]]))
    assert not report.ok
    assert len(report.errors) == 1, errors_of(report)
    assert errors_of(report)[0].startswith(error)
    assert table_counts(database_url)["accounts"] == 0


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (
            ["M9", "SP9", "A17", "2026-01-01", ""],
            "meters.csv row 4: unknown account 'A17': not in accounts.csv "
            "(add the account or fix the id)",
        ),
        (
            ["M9", "SP9", "A1", "2026-03-01", "2026-01-01"],
            "meters.csv row 4: valid_to 2026-01-01 is before valid_from 2026-03-01 (an "
            "assignment ends after it starts: correct one of the dates, or leave valid_to "
            "empty if the meter is still there)",
        ),
        (
            ["M9", "SP9", "A1", "2026-03-01", "2026-03-01T00:00:00Z"],
            "meters.csv row 4: valid_to 2026-03-01T00:00:00Z is the same as valid_from 2026-03-01",
        ),
        (
            ["M9", "SP9", "A1", "2026-03-01T08:00:00", ""],
            "meters.csv row 4: valid_from '2026-03-01T08:00:00' has no UTC offset: add one "
            "(e.g. 2026-03-01T08:00:00-05:00 or 2026-03-01T08:00:00Z) or give a plain date",
        ),
        (
            ["M9", "SP9", "A1", "03/01/2026", ""],
            "meters.csv row 4: valid_from '03/01/2026' is not a date or timestamp: write it as "
            "2026-03-01 or 2026-03-01T08:00:00-05:00",
        ),
        (
            ["M9", "SP9", "A1", "", ""],
            "meters.csv row 4: valid_from is empty (give the day the assignment starts",
        ),
        (["", "SP9", "A1", "2026-01-01", ""], "meters.csv row 4: meter_id is empty"),
        (
            ["M1", "SP1", "A1", "2024-01-01", "2026-01-01"],
            "meters.csv row 4: repeats row 2 (same meter, service point, account and "
            "valid_from): remove one of them",
        ),
        (
            ["M1", "SP9", "A2", "2025-12-01", ""],
            "meters.csv row 4: meter 'M1' would be on service points 'SP1' (row 2) and 'SP9' "
            "(row 4) at the same time from 2025-12-01 onward: a meter is in one place at a "
            "time (end row 2 with a valid_to no later than row 4's valid_from, or fix the "
            "dates)",
        ),
        (
            ["M9", "SP9", "A1", "2026-01-01", "", "extra"],
            "meters.csv row 4: has 6 cells but the header has 5 (a comma inside a value needs "
            "the value in double quotes)",
        ),
    ],
)
def test_meter_row_errors(database_url: str, tmp_path: Path, row: list[str], error: str) -> None:
    meters = [METERS[0], METERS[1], row, *METERS[2:]]
    report = import_cis(database_url, *write_export(tmp_path, meters=meters))
    assert not report.ok
    assert len(report.errors) == 1, errors_of(report)
    assert errors_of(report)[0].startswith(error)
    assert table_counts(database_url)["meter_assignments"] == 0


def test_every_problem_is_reported_at_once(database_url: str, tmp_path: Path) -> None:
    accounts = [
        ACCOUNTS[0],
        account(account_id="A2", cycle_day="0", status="gone"),
        [],  # a blank line still counts as a spreadsheet row
        account(account_id="A3", email="nope"),
    ]
    meters = [
        ["M1", "SP1", "A1", "2024-01-01", ""],
        ["M2", "SP2", "A17", "2024-01-01", ""],
        ["M3", "SP3", "A1", "yesterday", ""],
        ["M1", "SP4", "A1", "2025-01-01", "2025-02-01"],
    ]
    report = import_cis(database_url, *write_export(tmp_path, accounts, meters))
    assert [(e.file, e.row) for e in report.errors] == [
        ("accounts.csv", 3),
        ("accounts.csv", 3),
        ("accounts.csv", 5),
        ("meters.csv", 3),
        ("meters.csv", 4),
        ("meters.csv", 5),
    ]
    assert table_counts(database_url) == dict.fromkeys(table_counts(database_url), 0)


def test_an_invalid_account_row_does_not_make_its_meters_unknown(tmp_path: Path) -> None:
    data = read_cis(*write_export(tmp_path, [account(cycle_day="99")], [METERS[0]]))
    assert [str(p) for p in data.problems] == [
        "accounts.csv row 2: cycle_day '99' is not a day of the month (1–31)"
    ]


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (
            [c for c in ACCOUNTS_HEADER if c != "cycle_day"],
            "accounts.csv row 1: missing column 'cycle_day' (the columns are account_id,"
            "customer_name,email,phone,status,customer_class,rate_plan,cycle_day and optionally "
            "any of customer_id,daily_alert,period_alert,sms_opt_in,email_opt_in)",
        ),
        (
            [*ACCOUNTS_HEADER, "region"],
            "accounts.csv row 1: unexpected column 'region': remove it (the columns are",
        ),
        (
            [*ACCOUNTS_HEADER[:-1], "email"],
            "accounts.csv row 1: column 'email' appears more than once (keep one)",
        ),
        (
            [";".join(ACCOUNTS_HEADER)],
            "accounts.csv row 1: the header is a single column: the file looks semicolon- or "
            "tab-separated; export it comma-separated",
        ),
    ],
)
def test_header_errors(database_url: str, tmp_path: Path, header: list[str], error: str) -> None:
    rows = [r[: len(header)] + [""] * (len(header) - len(r)) for r in ACCOUNTS]
    report = import_cis(database_url, *write_export(tmp_path, rows, accounts_header=header))
    assert errors_of(report)[0].startswith(error), errors_of(report)
    # The meters are not called unknown because the accounts file could not be read.
    assert all(e.file == "accounts.csv" for e in report.errors)


def test_missing_and_empty_files(database_url: str, tmp_path: Path) -> None:
    _, meters_csv = write_export(tmp_path)
    meters_csv.write_text("")
    report = import_cis(database_url, tmp_path / "nowhere.csv", meters_csv)
    assert errors_of(report) == [
        f"nowhere.csv: file not found at {tmp_path / 'nowhere.csv'} (check the path)",
        "meters.csv: is empty: the first row must be the header "
        "meter_id,service_point_id,account_id,valid_from,valid_to",
    ]


def test_excel_exports_with_bom_and_spaces(database_url: str, tmp_path: Path) -> None:
    accounts_csv, meters_csv = write_export(tmp_path)
    text = accounts_csv.read_text(encoding="utf-8").replace("A1,Ada", " A1 ,Ada")
    accounts_csv.write_text("\ufeff" + text, encoding="utf-8")
    assert import_cis(database_url, accounts_csv, meters_csv).ok
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT 1 FROM accounts WHERE account_id = 'A1'").fetchone()


def test_not_utf8(database_url: str, tmp_path: Path) -> None:
    accounts_csv, meters_csv = write_export(tmp_path)
    accounts_csv.write_bytes(accounts_csv.read_bytes().replace(b"Bo Diddley", b"Bo D\xefddley"))
    report = import_cis(database_url, accounts_csv, meters_csv)
    assert errors_of(report) == [
        "accounts.csv row 4: is not UTF-8 text: save the export as 'CSV UTF-8' and import it again"
    ]


# --- a meter in one place at a time ----------------------------------------------------------


def test_database_refuses_a_meter_on_two_service_points(database_url: str, tmp_path: Path) -> None:
    assert import_cis(database_url, *write_export(tmp_path)).ok
    with psycopg.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.ExclusionViolation) as refused:
            conn.execute(
                "INSERT INTO meter_assignments (meter_id, service_point_id, account_id, "
                "valid_from) VALUES ('M1', 'SP2', 'A2', '2025-01-01')"
            )
        assert refused.value.diag.constraint_name == "meter_on_one_service_point_at_a_time"
        conn.rollback()
        # Two accounts on one service point at once is allowed (the audit reports it).
        conn.execute(
            "INSERT INTO meter_assignments (meter_id, service_point_id, account_id, "
            "valid_from) VALUES ('M1', 'SP1', 'A2', '2025-01-01')"
        )

    # The importer's words for the database's refusal.
    data = read_cis(
        *write_export(tmp_path, meters=[*METERS, ["M1", "SP2", "A2", "2025-01-01", ""]])
    )
    problem = exclusion_problem(refused.value, data)
    assert str(problem).startswith(
        "meters.csv row 7: meter 'M1' would be on service points 'SP2' "
        '["2025-01-01 00:00:00+00",) and \'SP1\' ["2024-01-01 00:00:00+00",) at the same time'
    )


def test_import_names_the_row_that_clashes_with_an_earlier_import(
    database_url: str, tmp_path: Path
) -> None:
    assert import_cis(database_url, *write_export(tmp_path, name="v1")).ok
    before = table_counts(database_url)

    # The new export moves M1 to SP4 but no longer lists its assignment on SP1.
    meters = [["M1", "SP4", "A2", "2025-01-01", ""], *METERS[1:]]
    report = import_cis(database_url, *write_export(tmp_path, meters=meters, name="v2"))

    assert errors_of(report) == [
        "meters.csv row 2: meter 'M1' would be on service point 'SP4' from 2025-01-01 onward "
        "while the database already has it on service point 'SP1' (account 'A1', from "
        "2024-01-01 onward, assignment 1, loaded by an earlier import): add that assignment to "
        "the file with the valid_to it really has, or fix this row's dates"
    ]
    assert table_counts(database_url) == before

    # Listing the old assignment with its end fixes it.
    meters.append(["M1", "SP1", "A1", "2024-01-01", "2025-01-01"])
    report = import_cis(database_url, *write_export(tmp_path, meters=meters, name="v3"))
    assert report.ok, errors_of(report)
    assert counts_of(report)["assignments"] == (1, 1, 4)


def test_clash_with_a_concurrent_writer_is_mapped(database_url: str, tmp_path: Path) -> None:
    """Another session adds a clashing assignment while the import runs: the database's
    constraint refuses the import's row, and the report says so in plain words."""
    assert import_cis(database_url, *write_export(tmp_path, name="v1")).ok
    meters = [*METERS, ["M5", "SP5", "A1", "2026-01-01", ""]]
    accounts_csv, meters_csv = write_export(tmp_path, meters=meters, name="v2")

    with (
        psycopg.connect(database_url) as other,
        psycopg.connect(database_url, autocommit=True) as watcher,
    ):
        other.execute("INSERT INTO service_points VALUES ('SP9')")
        other.execute("INSERT INTO meters VALUES ('M5')")
        other.execute(
            "INSERT INTO meter_assignments (meter_id, service_point_id, account_id, valid_from) "
            "VALUES ('M5', 'SP9', 'A1', '2025-01-01')"
        )
        result: list[ImportReport] = []
        importer = threading.Thread(
            target=lambda: result.append(import_cis(database_url, accounts_csv, meters_csv))
        )
        importer.start()
        # Wait until the import is blocked on the other session's uncommitted rows.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the import never waited for the other session")
        other.commit()
        importer.join(30)

    (report,) = result
    assert errors_of(report) == [
        "meters.csv row 7: meter 'M5' would be on service points 'SP5' "
        '["2026-01-01 00:00:00+00",) and \'SP9\' ["2025-01-01 00:00:00+00",) at the same '
        "time: the database already holds the second (another import or user added it while "
        "this one ran); end that assignment with a valid_to in the file, or fix this row's "
        "dates, and import again"
    ]
    assert not report.counts
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'import_cis'").fetchone()
    assert row == (1,)


# --- scale -------------------------------------------------------------------------------------


def synthetic_export(tmp_path: Path, meters: int) -> tuple[Path, Path]:
    """`meters` accounts with one meter each; one in twenty was exchanged (two rows)."""
    accounts = [
        [f"A{i:07d}", f"Customer {i}", f"c{i}@example.com", "", "active", "residential", "R1",
         str(1 + i % 28), "500", "", "false", "true", ""]
        for i in range(meters)
    ]  # fmt: skip
    rows = []
    for i in range(meters):
        if i % 20 == 0:
            rows.append([f"M{i:08d}X", f"SP{i:07d}", f"A{i:07d}", "2020-01-01", "2024-06-01"])
            rows.append([f"M{i:08d}", f"SP{i:07d}", f"A{i:07d}", "2024-06-01", ""])
        else:
            rows.append([f"M{i:08d}", f"SP{i:07d}", f"A{i:07d}", "2021-03-01", ""])
    return write_export(tmp_path, accounts, rows, name=f"synthetic{meters}")


@pytest.mark.slow
def test_twenty_thousand_meters_import_and_reimport(database_url: str, tmp_path: Path) -> None:
    files = synthetic_export(tmp_path, 20_000)
    first = import_cis(database_url, *files)
    assert first.ok
    assert counts_of(first)["assignments"] == (21_000, 0, 0)
    again = import_cis(database_url, *files)
    assert counts_of(again)["assignments"] == (0, 0, 21_000)
    assert again.data_version is None
