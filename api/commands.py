"""`meterwatch users …` and `meterwatch import-rates`: the command-line side of access and
billing. `meterwatch.cli` registers these; each change is written with its audit entry in one
transaction.

    meterwatch users create ada@example.com --role customer --customer-id C1   (password prompt)
    echo "$PASSWORD" | meterwatch users create clerk --role billing --password-stdin
    meterwatch users token dashboard-bot --name dashboard     (prints a new API token once)
    meterwatch users deactivate clerk --reason "left the utility"
    meterwatch import-rates rates.csv
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console

from api.security import hash_password, new_api_token
from meterwatch.db import connect, record_audit
from meterwatch.settings import MissingSetting, get_settings

users_app = typer.Typer(help="API users: create them, give machines API tokens, deactivate.")
console = Console(stderr=True)
out = Console()
MIN_PASSWORD = 10


class Role(StrEnum):
    customer = "customer"
    operator = "operator"
    billing = "billing"
    admin = "admin"
    headend = "headend"


class CommandError(Exception):
    """A mistake the person running the command can fix; the message says how."""


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(2)


def _connect() -> psycopg.Connection:
    return connect(get_settings().require_database_url())


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise CommandError(
            f"the password is shorter than {MIN_PASSWORD} characters: use a longer one"
        )
    return password


def create_user(
    conn: psycopg.Connection,
    username: str,
    role: str,
    *,
    customer_id: str | None,
    password: str | None,
    actor: str,
) -> int:
    """Create an API user (in the caller's transaction, with its audit entry); returns its id.
    CommandError names what is wrong."""
    username = username.strip().lower()
    if not username or len(username) > 254 or not username.isprintable() or " " in username:
        raise CommandError(
            f"username {username!r} must be 1-254 printable characters without spaces (an "
            "email address does well)"
        )
    if role == "customer":
        if not customer_id:
            raise CommandError("a customer user needs --customer-id (the CIS customer_id)")
        if (
            conn.execute(
                "SELECT 1 FROM customers WHERE customer_id = %s", (customer_id,)
            ).fetchone()
            is None
        ):
            raise CommandError(
                f"no customer {customer_id!r}: import the CIS export first (meterwatch "
                "import-accounts), or check the id"
            )
    elif customer_id:
        raise CommandError(f"--customer-id is for customers only, not for role {role}")
    if conn.execute("SELECT 1 FROM api_users WHERE username = %s", (username,)).fetchone():
        raise CommandError(f"user {username!r} exists already")
    row = conn.execute(
        """INSERT INTO api_users (username, role, customer_id, password_hash)
           VALUES (%s, %s, %s, %s) RETURNING user_id""",
        (username, role, customer_id, hash_password(password) if password else None),
    ).fetchone()
    assert row is not None
    record_audit(
        conn,
        actor=actor,
        action="create_user",
        entity="api_user",
        entity_id=customer_id or username,
        reason=None,
        details={"user_id": row[0], "username": username, "role": role},
    )
    return int(row[0])


def create_api_token(conn: psycopg.Connection, username: str, name: str, *, actor: str) -> str:
    """A new API token for the user (returned once; only its hash is kept)."""
    row = conn.execute(
        "SELECT user_id, role FROM api_users WHERE username = %s AND active",
        (username.strip().lower(),),
    ).fetchone()
    if row is None:
        raise CommandError(f"no active user {username!r}: create it with `meterwatch users create`")
    token, digest = new_api_token()
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO api_tokens (user_id, name, token_sha256) VALUES (%s, %s, %s)",
                (row[0], name, digest),
            )
    except psycopg.errors.UniqueViolation:
        raise CommandError(
            f"user {username!r} has a token named {name!r} already: pick another --name"
        ) from None
    record_audit(
        conn,
        actor=actor,
        action="create_api_token",
        entity="api_user",
        entity_id=username,
        reason=None,
        details={"name": name, "role": row[1]},
    )
    return token


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name, e.g. an email address.")],
    role: Annotated[Role, typer.Option(help="What the user may do.")],
    customer_id: Annotated[
        str | None, typer.Option("--customer-id", help="For --role customer: whose accounts.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password: API tokens only (machines).")
    ] = False,
) -> None:
    """Create an API user. The password is asked for (or read from stdin)."""
    try:
        password = None if no_password else _read_password(password_stdin)
        with _connect() as conn:
            user_id = create_user(
                conn, username, role.value, customer_id=customer_id, password=password, actor="cli"
            )
    except (CommandError, MissingSetting) as exc:
        raise _fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach the database ({str(exc).strip().splitlines()[0]})") from None
    out.print(f"created user {username.strip().lower()!r} (id {user_id}, role {role.value})")


@users_app.command("token")
def users_token(
    username: Annotated[str, typer.Argument(help="The user the token acts as.")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. dashboard.")],
) -> None:
    """Create a long-lived API token for a user and print it (shown only this once)."""
    try:
        with _connect() as conn:
            token = create_api_token(conn, username, name, actor="cli")
    except (CommandError, MissingSetting) as exc:
        raise _fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach the database ({str(exc).strip().splitlines()[0]})") from None
    print(token)


@users_app.command("deactivate")
def users_deactivate(
    username: Annotated[str, typer.Argument(help="The user to sign out for good.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
) -> None:
    """Deactivate a user: their tokens stop working at once."""
    try:
        with _connect() as conn:
            row = conn.execute(
                "UPDATE api_users SET active = false, updated_at = now() WHERE username = %s "
                "RETURNING user_id",
                (username.strip().lower(),),
            ).fetchone()
            if row is None:
                raise CommandError(f"no user {username!r}")
            record_audit(
                conn,
                actor="cli",
                action="deactivate_user",
                entity="api_user",
                entity_id=username.strip().lower(),
                reason=reason,
            )
    except (CommandError, MissingSetting) as exc:
        raise _fail(str(exc)) from None
    out.print(f"deactivated {username!r}")


def import_rates_command(
    rates_csv: Annotated[Path, typer.Argument(help="The rates CSV (one row per tier).")],
) -> None:
    """Load or update rate plans from a CSV (idempotent). Nothing is written unless every row
    is valid.

    Columns: rate_plan,description,currency,fixed_charge,tier_from,tier_to,price_per_unit,unit
    """
    from billing.rates import import_rates

    try:
        with _connect() as conn:
            report = import_rates(conn, rates_csv, actor="cli")
    except (MissingSetting, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    except psycopg.OperationalError as exc:
        raise _fail(f"cannot reach the database ({str(exc).strip().splitlines()[0]})") from None
    if not report.ok:
        for problem in report.problems:
            console.print(f"[bold red]error:[/] {problem}")
        console.print(f"nothing imported: fix the {len(report.problems)} problem(s) above")
        raise typer.Exit(1)
    for title, names in (
        ("created", report.created),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
    ):
        if names:
            out.print(f"{title}: {', '.join(names)}")
