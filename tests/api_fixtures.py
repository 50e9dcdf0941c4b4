"""Fixtures and helpers for the API tests of access, accounts, billing and Green Button: a seeded
database with one user per role, rate plans, and clients signed in as each of them.

Import what a module needs explicitly (`from api_fixtures import client, users, ...`): pytest
finds fixtures imported into a test module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from test_reports import seed_sample

from api.commands import create_user
from api.main import create_app
from api.security import create_access_token, service_token
from billing.rates import import_rates
from meterwatch.settings import Settings

PASSWORD = "correct horse battery"
RATES_CSV = """rate_plan,description,currency,fixed_charge,tier_from,tier_to,price_per_unit,unit
RES,Residential water,USD,12.00,0,5000,0.004,gal
RES,Residential water,USD,12.00,5000,,0.006,gal
COM,Commercial water,USD,40.00,0,,0.005,gal
"""
# username → (role, customer_id)
USERS: dict[str, tuple[str, str | None]] = {
    "ada@example.com": ("customer", "C1"),  # owns A1
    "bo@example.com": ("customer", "C2"),  # owns A2
    "olga.operator": ("operator", None),
    "bill.billing": ("billing", None),
    "ann.admin": ("admin", None),
    "head.end": ("headend", None),
}
ROLE_USER = {
    "customer": "ada@example.com",
    "operator": "olga.operator",
    "billing": "bill.billing",
    "admin": "ann.admin",
    "headend": "head.end",
}


def staff_headers(settings: Settings) -> dict[str, str]:
    """An operator's bearer header (a service token: needs no user in the database)."""
    return {"Authorization": f"Bearer {service_token(settings, 'tests')}"}


def write_rates(directory: Path, text: str = RATES_CSV) -> Path:
    path = directory / "rates.csv"
    path.write_text(text)
    return path


def seed_access(conn: psycopg.Connection, tmp_path: Path) -> dict[str, int]:
    """The sample data plus one user per role and the rate plans (A1 on RES, A2 on COM);
    returns username → user id."""
    seed_sample(conn)
    ids = {
        name: create_user(conn, name, role, customer_id=customer, password=PASSWORD, actor="tests")
        for name, (role, customer) in USERS.items()
    }
    report = import_rates(conn, write_rates(tmp_path), actor="tests")
    assert report.ok, report.problems
    conn.execute("UPDATE accounts SET rate_plan = 'RES' WHERE account_id = 'A1'")
    conn.execute("UPDATE accounts SET rate_plan = 'COM' WHERE account_id = 'A2'")
    return ids


@dataclass
class Api:
    """A TestClient on a seeded database, with a bearer header for each user."""

    client: TestClient
    settings: Settings
    url: str
    user_ids: dict[str, int]

    def headers(self, username: str) -> dict[str, str]:
        role = USERS[username][0]
        token = create_access_token(self.settings, f"user:{self.user_ids[username]}", role)
        return {"Authorization": f"Bearer {token}"}

    def as_role(self, role: str) -> dict[str, str]:
        return self.headers(ROLE_USER[role])


@pytest.fixture
def access_url(database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    with psycopg.connect(database_url) as conn:
        ids = seed_access(conn, tmp_path)
    yield database_url, ids


@pytest.fixture
def api(
    access_url: tuple[str, dict[str, int]], make_settings: Callable[..., Settings]
) -> Iterator[Api]:
    url, ids = access_url
    settings = make_settings(database_url=url, utility_tz="America/Chicago")
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, url, ids)
