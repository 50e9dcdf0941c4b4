"""Signing in: the OAuth2 password flow, and who the caller is."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from api.deps import ConnDep, SettingsDep, SignedIn
from api.schemas import PrincipalPublic, TokenPublic
from api.security import create_access_token, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=TokenPublic,
    responses={401: {"description": "wrong username or password, or an inactive user"}},
)
def create_token(
    conn: ConnDep,
    settings: SettingsDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenPublic:
    """Exchange a username and password for an access token (OAuth2 password flow; send it as
    `Authorization: Bearer <access_token>`)."""
    row = conn.execute(
        "SELECT user_id, role, password_hash FROM api_users WHERE username = %s AND active",
        (form.username.strip().lower().replace("\x00", ""),),
    ).fetchone()
    if not verify_password(row[2] if row else None, form.password) or row is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="wrong username or password (or the user is inactive)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = create_access_token(settings, f"user:{row[0]}", row[1])
    return TokenPublic(access_token=token, expires_in=settings.access_token_expire_minutes * 60)


@router.get("/me", response_model=PrincipalPublic)
def read_me(principal: SignedIn) -> PrincipalPublic:
    """Who the token belongs to and what role it has."""
    return PrincipalPublic(
        subject=principal.subject, role=principal.role, customer_id=principal.customer_id
    )
