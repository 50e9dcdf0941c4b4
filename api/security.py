"""Who is calling: password hashes, access tokens (JWT), long-lived API tokens, and the secret
key that signs the tokens.

- Passwords are argon2id hashes (argon2-cffi's defaults, RFC 9106 low-memory profile).
- `POST /v1/auth/token` (OAuth2 password flow) answers an access token: a JWT signed HS256 with
  the secret key, valid `ACCESS_TOKEN_EXPIRE_MINUTES`, whose subject is `user:<id>`. Each request
  rereads the user, so a deactivated user or a changed role takes effect at once.
- API tokens (`mw_…`, from `meterwatch users token`) are for machine clients; only their SHA-256
  is stored, and they last until revoked.
- Services of meterwatch itself (the dashboard) may sign a short-lived token for themselves
  with the shared secret key (`service_token`): subject `service:<name>`, role `operator`.

The secret key: `SECRET_KEY` when set (required when ENVIRONMENT=production). Otherwise a random
key is generated once into DATA_DIR/secret_key (mode 0600), so that the demo's API and dashboard
processes, which share DATA_DIR, agree on it; deleting the file signs everyone out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from meterwatch.settings import MissingSetting, Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
API_TOKEN_PREFIX = "mw_"
# How long a service's self-signed token lasts (seconds): it signs a new one for each call.
SERVICE_TOKEN_TTL_S = 300
ROLES = ("customer", "operator", "billing", "admin", "headend")
STAFF_ROLES = ("operator", "billing", "admin")

_hasher = PasswordHasher()
# A hash to verify against when the user does not exist, so that a wrong username takes as long
# as a wrong password (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class Principal:
    """The caller of a request. `subject` is what the audit log records as the actor."""

    subject: str
    role: str
    user_id: int | None = None
    customer_id: str | None = None

    @property
    def actor(self) -> str:
        return self.subject


class InvalidToken(Exception):
    """A bearer token that is malformed, expired or not signed by us."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches `password_hash` (False for a missing hash, in constant-ish
    time)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def _key_file(settings: Settings) -> Path:
    return settings.data_dir / "secret_key"


def secret_key(settings: Settings) -> str:
    """The key that signs tokens (module docstring). Raises MissingSetting in production
    without SECRET_KEY."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.environment == "production":
        raise MissingSetting(
            "SECRET_KEY is not set: ENVIRONMENT=production needs one, the same in every API "
            "process; generate it with `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`"
        )
    path = _key_file(settings)
    try:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    try:
        # link, not rename: when two processes race, the first key stays and both read it
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    log.warning(
        "SECRET_KEY is not set: signing tokens with a generated key kept in %s (fine for the "
        "demo and development; set SECRET_KEY and ENVIRONMENT=production for a deployment)",
        path,
    )
    return path.read_text().strip()


def create_access_token(
    settings: Settings, subject: str, role: str, *, expires_s: float | None = None
) -> str:
    """A signed JWT for `subject` with `role`, valid `expires_s` seconds (default: the
    access_token_expire_minutes setting)."""
    now = datetime.now(UTC)
    lifetime = (
        timedelta(seconds=expires_s)
        if expires_s is not None
        else timedelta(minutes=settings.access_token_expire_minutes)
    )
    claims = {"sub": subject, "role": role, "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, secret_key(settings), algorithm=ALGORITHM)


def service_token(settings: Settings, service: str) -> str:
    """A short-lived operator token for one of meterwatch's own services (the dashboard)."""
    return create_access_token(
        settings, f"service:{service}", "operator", expires_s=SERVICE_TOKEN_TTL_S
    )


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    """The claims of a token we signed; InvalidToken otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret_key(settings),
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the access token has expired: sign in again") from None
    except jwt.PyJWTError:
        raise InvalidToken("the access token is not valid: sign in again") from None
    if claims.get("role") not in ROLES or not isinstance(claims.get("sub"), str):
        raise InvalidToken("the access token is not valid: sign in again")
    return claims


def new_api_token() -> tuple[str, str]:
    """A fresh API token and the SHA-256 (hex) that is stored for it."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    # A plain hash suffices: the token is 256 random bits, not a password a person chose.
    return hashlib.sha256(token.encode()).hexdigest()
