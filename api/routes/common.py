"""What several routers share: path parameters, and finding an account the caller may see."""

from __future__ import annotations

from typing import Annotated

import psycopg
from fastapi import HTTPException, Path, status

from api import queries
from api.security import Principal

AccountIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="the account number, as in the CIS")
]
FlagIdPath = Annotated[int, Path(ge=1, le=2**62, description="a flag's id")]


def not_found(what: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=what)


def staff_account(conn: psycopg.Connection, account_id: str) -> queries.AccountRow:
    """The account, or 404."""
    found = queries.account(conn, account_id)
    if found is None:
        raise not_found(f"no account {account_id!r}: check the number against the CIS export")
    return found


def own_account(
    conn: psycopg.Connection, principal: Principal, account_id: str
) -> queries.AccountRow:
    """The account when it is the customer's own; 404 otherwise, exactly as for an account
    that does not exist, so that account numbers cannot be probed."""
    found = (
        queries.customer_account(conn, principal.customer_id, account_id)
        if principal.customer_id
        else None
    )
    if found is None:
        raise not_found(f"you have no account {account_id!r}")
    return found
