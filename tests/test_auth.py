"""Access: signing in, tokens, the secret key, and the authorization matrix — every endpoint of
the app for every role, generated from the app's own routes so that a new endpoint cannot be
left out: anonymous gets 401, a role the route does not let through gets 403, a customer asking
for another customer's account gets 404, and a role it lets through gets neither."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import jwt
import psycopg
import pytest
import redis
from api_fixtures import PASSWORD, ROLE_USER, Api, access_url, api, seed_access  # noqa: F401
from conftest import SERVERS, DatabaseFactory
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from api.commands import CommandError, create_api_token, create_user
from api.deps import RoleCheck
from api.main import create_app
from api.security import ROLES, create_access_token, secret_key, service_token
from meterwatch.settings import MissingSetting, Settings

__all__ = ["access_url", "api"]

# Routes anyone may call: probes, documentation, signing in.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("POST", "/v1/auth/token"),
}
# Values for path parameters: the customer of the tests (ada) owns A1; A2 is someone else's.
PATH_VALUES = {
    "account_id": "A1",
    "cycle_day": "15",
    "period_start": "2025-12-15",
    "rejected_id": "1",
}
# A valid body for each route that takes one, so that an allowed role gets past validation
# (a new route with a body must add one here).
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/me/accounts/{account_id}/alert-settings"): {"daily_threshold": 100},
    ("POST", "/v1/me/accounts/{account_id}/flags/{flag_id}/expected-use"): {
        "description": "garden hose"
    },
    ("POST", "/v1/me/accounts/{account_id}/declared-usage"): {
        "kind": "pool",
        "description": "pool fill",
    },
    ("POST", "/v1/accounts/{account_id}/contacts"): {"channel": "phone", "summary": "called"},
    ("POST", "/v1/flags/{flag_id}/review"): {"status": "confirmed", "reason": "seen on site"},
    ("POST", "/v1/flags/review"): {"flag_ids": [1], "status": "confirmed", "reason": "seen"},
    ("POST", "/v1/billing-cycles/{cycle_day}/{period_start}/close"): {},
    ("POST", "/v1/exceptions/rejected/{rejected_id}/resolve"): {"reason": "resent"},
    ("POST", "/v1/exceptions/unmatched/resolve"): {"meter_id": "X1", "reason": "test meter"},
    ("POST", "/v1/exceptions/unmatched/assign"): {
        "meter_id": "X1",
        "service_point_id": "S9",
        "account_id": "A1",
        "valid_from": "2026-03-01T00:00:00Z",
        "reason": "installed",
    },
    ("POST", "/v1/exceptions/unmatched/reprocess"): {"meter_id": "X1", "reason": "again"},
    ("POST", "/v1/reads"): [{"meter_id": "M1", "ts": "2026-03-02T00:00:00Z", "value": 1}],
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    roles: frozenset[str] | None  # None: public

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _role_checks(dependant: Any) -> list[RoleCheck]:
    found, stack = [], [dependant]
    while stack:
        current = stack.pop()
        if isinstance(current.call, RoleCheck):
            found.append(current.call)
        stack.extend(current.dependencies)
    return found


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) of the app and the roles its RoleCheck lets through."""
    found = []
    for context in fastapi.routing.iter_route_contexts(app.routes):
        for method in sorted((context.methods or set()) - {"HEAD"}):
            dependant = getattr(context.route, "dependant", None)
            checks = _role_checks(dependant) if dependant is not None else []
            roles = frozenset.intersection(*(c.roles for c in checks)) if checks else None
            found.append(Endpoint(method, context.path_format, roles))
    return found


APP_ENDPOINTS = endpoints(
    create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none",
                        secret_key=SecretStr("collection-only-" * 3)))
)  # fmt: skip


def test_every_endpoint_is_public_by_intent_or_checks_a_role() -> None:
    unguarded = {(e.method, e.path) for e in APP_ENDPOINTS if e.roles is None}
    assert unguarded == PUBLIC, "a route without a RoleCheck: add one (api/deps.py)"
    assert {(e.method, e.path) for e in APP_ENDPOINTS if e.method in ("POST", "PATCH", "PUT")} - {
        ("POST", "/v1/auth/token")
    } == set(BODIES), "a route with a body needs an example body in BODIES"


def _url(api: Api, endpoint: Endpoint, account: str) -> str:
    with psycopg.connect(api.url) as conn:
        row = conn.execute(
            "SELECT flag_id FROM flags WHERE account_id = %s ORDER BY flag_id LIMIT 1", (account,)
        ).fetchone()
    values = {**PATH_VALUES, "account_id": account, "flag_id": str(row[0] if row else 1)}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], endpoint.path)


def _call(api: Api, endpoint: Endpoint, headers: dict[str, str], account: str = "A1") -> int:
    body = BODIES.get((endpoint.method, endpoint.path))
    response = api.client.request(
        endpoint.method, _url(api, endpoint, account), json=body, headers=headers
    )
    return response.status_code


GUARDED = [e for e in APP_ENDPOINTS if e.roles is not None]


@pytest.fixture(scope="module")
def matrix_api(
    timescale_databases: DatabaseFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One seeded database, with a Redis stream, for the whole matrix: what one call changes
    (a closed cycle, a reviewed flag) only changes which allowed answer the next one gets."""
    url = timescale_databases()
    directory = tmp_path_factory.mktemp("matrix")
    with psycopg.connect(url) as conn:
        ids = seed_access(conn, directory)
    key = f"mwtest:{uuid.uuid4().hex[:10]}:reads"
    settings = Settings(
        database_url=url,
        redis_url=SERVERS.redis_url,
        reads_stream=key,
        data_dir=directory / "data",
        utility_tz="America/Chicago",
    )
    with TestClient(create_app(settings)) as client:
        yield Api(client, settings, url, ids)
    cleanup = redis.Redis.from_url(SERVERS.redis_url)
    cleanup.delete(key)
    cleanup.close()


@pytest.mark.parametrize("endpoint", GUARDED, ids=str)
def test_authorization_matrix(matrix_api: Api, endpoint: Endpoint) -> None:
    api = matrix_api
    assert endpoint.roles is not None
    assert _call(api, endpoint, {}) == 401, "anonymous"
    assert _call(api, endpoint, {"Authorization": "Bearer not-a-token"}) == 401, "bad token"
    for role in ROLES:
        status = _call(api, endpoint, api.as_role(role))
        if role in endpoint.roles:
            assert status not in (401, 403) and status < 500, f"{role} got {status}"
        else:
            assert status == 403, f"{role} got {status}"
    if "customer" in endpoint.roles and "{account_id}" in endpoint.path:
        foreign = _call(api, endpoint, api.as_role("customer"), account="A2")
        assert foreign == 404, "a customer reached another customer's account"


def test_the_roles_of_the_staff_routes() -> None:
    roles = {str(e): e.roles for e in GUARDED}
    staff = frozenset({"operator", "billing", "admin"})
    assert roles["GET /v1/accounts/{account_id}"] == staff
    assert roles["GET /v1/live"] == staff
    assert roles["POST /v1/billing-cycles/{cycle_day}/{period_start}/close"] == {"billing", "admin"}
    assert roles["POST /v1/reads"] == {"operator", "admin", "headend"}
    assert roles["POST /v1/exceptions/unmatched/assign"] == {"operator", "admin"}
    assert all(r == {"customer"} for p, r in roles.items() if p.split(" ")[1].startswith("/v1/me"))


def test_sign_in_with_a_password(api: Api) -> None:
    response = api.client.post(
        "/v1/auth/token", data={"username": "Bill.Billing", "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token = response.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 3600
    me = api.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    assert me.json() == {"subject": "bill.billing", "role": "billing", "customer_id": None}
    wrong = api.client.post("/v1/auth/token", data={"username": "bill.billing", "password": "x"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    nobody = api.client.post("/v1/auth/token", data={"username": "nobody", "password": "x"})
    assert nobody.status_code == 401
    assert nobody.json() == wrong.json()  # no hint whether the user exists


def test_deactivated_users_and_expired_or_forged_tokens(api: Api) -> None:
    headers = api.as_role("operator")
    assert api.client.get("/v1/stats", headers=headers).status_code == 200
    with psycopg.connect(api.url) as conn:
        conn.execute("UPDATE api_users SET active = false WHERE username = 'olga.operator'")
    refused = api.client.get("/v1/stats", headers=headers)
    assert refused.status_code == 401 and "inactive" in refused.json()["detail"]
    expired = create_access_token(
        api.settings, f"user:{api.user_ids['ann.admin']}", "admin", expires_s=-10
    )
    response = api.client.get("/v1/stats", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    forged = jwt.encode({"sub": "service:x", "role": "admin", "exp": 2**40}, "guess" * 8, "HS256")
    response = api.client.get("/v1/stats", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    service = service_token(api.settings, "dashboard")
    response = api.client.get("/v1/live", headers={"Authorization": f"Bearer {service}"})
    assert response.status_code == 200


def test_api_tokens(api: Api) -> None:
    with psycopg.connect(api.url) as conn:
        token = create_api_token(conn, "head.end", "adapter", actor="tests")
        with pytest.raises(CommandError, match="has a token named 'adapter' already"):
            create_api_token(conn, "head.end", "adapter", actor="tests")
        stored = conn.execute("SELECT token_sha256 FROM api_tokens").fetchone()
    assert stored is not None and token not in stored[0]
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/v1/auth/me", headers=headers).json()["role"] == "headend"
    assert api.client.get("/v1/stats", headers=headers).status_code == 403
    with psycopg.connect(api.url) as conn:
        conn.execute("UPDATE api_tokens SET revoked_at = now()")
    assert api.client.get("/v1/auth/me", headers=headers).status_code == 401


def test_create_user_checks(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO customers (customer_id, name) VALUES ('C1', 'Ada')")
        with pytest.raises(CommandError, match="needs --customer-id"):
            create_user(conn, "a@x.org", "customer", customer_id=None, password=None, actor="t")
        with pytest.raises(CommandError, match="no customer 'C9'"):
            create_user(conn, "a@x.org", "customer", customer_id="C9", password=None, actor="t")
        with pytest.raises(CommandError, match="for customers only"):
            create_user(conn, "op", "operator", customer_id="C1", password=None, actor="t")
        create_user(conn, "A@X.org", "customer", customer_id="C1", password=None, actor="t")
        with pytest.raises(CommandError, match="exists already"):
            create_user(conn, "a@x.org", "customer", customer_id="C1", password=None, actor="t")
        audit = conn.execute("SELECT action, entity_id FROM audit_log").fetchall()
    assert audit == [("create_user", "C1")]


def test_users_commands(
    database_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meterwatch.cli import app as cli  # the whole command line, bench commands included

    make_settings(database_url=database_url)
    runner = CliRunner()
    created = runner.invoke(
        cli, ["users", "create", "clerk", "--role", "billing", "--password-stdin"],
        input="a long enough password\n",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "created user 'clerk'" in created.output
    short = runner.invoke(
        cli, ["users", "create", "x", "--role", "admin", "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 2 and "shorter than 10 characters" in short.output
    machine = runner.invoke(cli, ["users", "create", "bot", "--role", "operator", "--no-password"])
    assert machine.exit_code == 0, machine.output
    token = runner.invoke(cli, ["users", "token", "bot", "--name", "dashboard"])
    assert token.exit_code == 0 and token.output.startswith("mw_")
    gone = runner.invoke(cli, ["users", "deactivate", "bot", "--reason", "retired"])
    assert gone.exit_code == 0
    with psycopg.connect(database_url) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log ORDER BY audit_id")]
    assert actions == ["create_user", "create_user", "create_api_token", "deactivate_user"]


def test_secret_key_is_generated_in_development_and_required_in_production(
    make_settings: Callable[..., Settings],
) -> None:
    development = make_settings(database_url="postgresql://x@127.0.0.1:1/x")
    key = secret_key(development)
    assert len(key) >= 32 and secret_key(development) == key
    assert (development.data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    production = make_settings(
        database_url="postgresql://x@127.0.0.1:1/x", environment="production"
    )
    with pytest.raises(MissingSetting, match="SECRET_KEY is not set"):
        create_app(production)
    with pytest.raises(ValueError, match="shorter than 32 characters"):
        make_settings(secret_key="short")
    configured = make_settings(secret_key="k" * 40, environment="production")
    assert secret_key(configured) == "k" * 40
