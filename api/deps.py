"""Dependencies of the route handlers, as named aliases: declare `conn: ConnDep` to get a
pooled database connection for the request, `settings: SettingsDep` for the settings.

Who may call what: `get_principal` reads the bearer token (api.security) and each route
declares one `RoleCheck` (the matrix is below: `STAFF_READ`, `REVIEW`, `OPERATE`, ...), through
its named alias (`reviewer: Reviewer`). A customer reaches only /v1/me and only their own
accounts (others answer 404, as if they did not exist).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from api.resources import Resources
from api.security import (
    API_TOKEN_PREFIX,
    ROLES,
    InvalidToken,
    Principal,
    decode_access_token,
    token_digest,
)
from meterwatch.settings import Settings


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_app_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_conn(resources: ResourcesDep) -> Iterator[psycopg.Connection]:
    """A connection from the pool for the length of the request, in one transaction that
    commits when the handler returns and rolls back if it raises. A database that cannot be
    reached surfaces as psycopg.OperationalError, which the app answers with 503."""
    resources.ensure_migrated()
    with resources.pool.connection() as conn:
        yield conn


ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


# --- who is calling ------------------------------------------------------------------------

# Declares the bearer scheme in the OpenAPI document (the "Authorize" button of /docs); the
# token itself is checked by `get_principal`, which answers 401 with a reason.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _load_user(conn: psycopg.Connection, where: str, value: object) -> Principal | None:
    # `where` is one of two literal conditions below, never input
    row = conn.execute(
        f"""SELECT u.user_id, u.username, u.role, u.customer_id FROM api_users AS u
             WHERE u.active AND {where}""",
        (value,),
    ).fetchone()
    if row is None:
        return None
    return Principal(subject=row[1], role=row[2], user_id=row[0], customer_id=row[3])


def get_principal(
    resources: ResourcesDep, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    """The caller, from `Authorization: Bearer …`: an access token (JWT) or an API token.
    401 when there is none or it is not valid. A user's token is checked against the user's
    current row (deactivation and role changes apply at once); a service token needs no
    database."""
    if not token:
        raise _unauthorized(
            "not signed in: send `Authorization: Bearer <token>` (POST /v1/auth/token)"
        )
    if token.startswith(API_TOKEN_PREFIX):
        resources.ensure_migrated()
        with resources.pool.connection() as conn:
            principal = _load_user(
                conn,
                """u.user_id = (SELECT t.user_id FROM api_tokens AS t
                                 WHERE t.token_sha256 = %s AND t.revoked_at IS NULL)""",
                token_digest(token),
            )
        if principal is None:
            raise _unauthorized(
                "the API token is not valid (unknown, revoked, or its user is inactive)"
            )
        return principal
    try:
        claims = decode_access_token(resources.settings, token)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    subject: str = claims["sub"]
    if subject.startswith("service:"):
        return Principal(subject=subject, role=claims["role"])
    kind, _, user_id = subject.partition(":")
    if kind != "user" or not user_id.isdigit():
        raise _unauthorized("the access token is not valid: sign in again")
    resources.ensure_migrated()
    with resources.pool.connection() as conn:
        principal = _load_user(conn, "u.user_id = %s", int(user_id))
    if principal is None:
        raise _unauthorized("this user no longer exists or is inactive: ask an administrator")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RoleCheck:
    """A dependency that lets only `roles` through (403 for other signed-in callers). Every
    route of the API declares one; the authorization tests read `roles` from the routes."""

    def __init__(self, *roles: str) -> None:
        self.roles = frozenset(roles)

    def __call__(self, principal: CurrentPrincipal) -> Principal:
        if principal.role not in self.roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"the {principal.role} role may not do this: it needs one of "
                f"{', '.join(sorted(self.roles))}",
            )
        return principal

    def __repr__(self) -> str:
        return f"RoleCheck({', '.join(sorted(self.roles))})"


# The role matrix: who may do what.
STAFF_READ = RoleCheck("operator", "billing", "admin")  # read every staff view
REVIEW = RoleCheck("operator", "billing", "admin")  # review flags, log contacts
OPERATE = RoleCheck("operator", "admin")  # work the exception queues, assign meters
CLOSE_CYCLE = RoleCheck("billing", "admin")  # close billing cycles (and override)
INGEST = RoleCheck("operator", "admin", "headend")  # put reads on the stream
CUSTOMER = RoleCheck("customer")  # /v1/me: a customer's own accounts
ANYONE = RoleCheck(*ROLES)  # any signed-in caller

StaffReader = Annotated[Principal, Depends(STAFF_READ)]
Reviewer = Annotated[Principal, Depends(REVIEW)]
Operator = Annotated[Principal, Depends(OPERATE)]
CycleCloser = Annotated[Principal, Depends(CLOSE_CYCLE)]
Ingester = Annotated[Principal, Depends(INGEST)]
Customer = Annotated[Principal, Depends(CUSTOMER)]
SignedIn = Annotated[Principal, Depends(ANYONE)]

# The staff routes of the first API (stats, latest flags, live) depend on this.
StaffAccess = Depends(STAFF_READ)
