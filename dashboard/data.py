"""Where the dashboard gets its data: the API, and nothing else.

Every call goes through `Client`, which carries the signed-in person's access token (from the
Flask session, see `dashboard.auth`) and answers a `Result`: the parsed answer, or a sentence
saying what went wrong ("API unreachable at …", "not found: you have no account 'A2'"), so that
a page shows the problem instead of failing. It uses the standard library's HTTP client: the
dashboard needs no HTTP package of its own.

Long series are never fetched raw: usage comes bucketed by the API (`resolution` hour, day or
month), so that a chart gets at most a few thousand points.

`fetch_live` is the live page's call; without a token it uses `api_credential`, the dashboard's
own staff credential (DASHBOARD_API_TOKEN, or an operator token signed with SECRET_KEY), which
the benchmark and the API-level tests use.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

from pydantic import BaseModel, TypeAdapter, ValidationError

from api.schemas import (
    AccountViewPublic,
    AlertPublic,
    AlertSettingsPublic,
    AlertSummaryPublic,
    ContactPublic,
    CycleClosePublic,
    CyclePublic,
    CycleReadinessPublic,
    FlagDetailPublic,
    LeakPublic,
    LivePublic,
    MyAccountPublic,
    MyBillPublic,
    PrincipalPublic,
    RejectedPublic,
    ReprocessPublic,
    TokenPublic,
    UnmatchedPublic,
    UsageHistoryPublic,
)
from api.security import service_token
from meterwatch.settings import Settings, get_settings

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """An API answer (`value`), or why there is none (`error`, a sentence for people, and the
    HTTP `status` when the API answered at all)."""

    value: T | None = None
    error: str | None = None
    status: int | None = None

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class LiveResult:
    """The live page's data (`live`), or why there is none (`error`, a sentence for people)."""

    live: LivePublic | None = None
    error: str | None = None


@dataclass(frozen=True)
class Download:
    """A file the API sent (CSV, Green Button XML), passed on to the browser as it came."""

    body: bytes
    content_type: str
    disposition: str | None


def _detail(exc: urllib.error.HTTPError) -> str:
    """The API's own explanation of an error answer (FastAPI's {"detail": ...})."""
    try:
        detail = json.loads(exc.read() or b"{}").get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    if isinstance(detail, list):  # a validation error: say which field and why
        detail = "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    return str(detail) if detail else exc.reason or "no explanation given"


def api_credential(settings: Settings) -> str:
    """The dashboard's own bearer token (module docstring)."""
    if settings.dashboard_api_token is not None:
        return settings.dashboard_api_token.get_secret_value()
    return service_token(settings, "dashboard")


@dataclass(frozen=True)
class Client:
    """The API at `base_url`, called as the holder of `token` (None: not signed in, which the
    API answers with 401)."""

    base_url: str
    timeout_s: float
    token: str | None = None

    # --- plumbing -------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        body: object = None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[bytes, Mapping[str, str]] | Result[Any]:
        base = self.base_url.rstrip("/")
        present = {k: v for k, v in (query or {}).items() if v is not None}
        url = f"{base}{path}" + (f"?{urlencode(present)}" if present else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data: bytes | None = None
        if form is not None:
            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            with exc:
                return Result(error=_http_error(base, exc), status=exc.code)
        except urllib.error.URLError as exc:
            return Result(error=f"API unreachable at {base}: {exc.reason}")
        except TimeoutError:
            return Result(error=f"API unreachable at {base}: no answer within {self.timeout_s:g} s")
        except OSError as exc:
            return Result(error=f"API unreachable at {base}: {exc}")

    def _call(self, adapter: TypeAdapter[T], method: str, path: str, **kwargs: Any) -> Result[T]:
        sent = self._send(method, path, **kwargs)
        if isinstance(sent, Result):
            return sent
        try:
            return Result(value=adapter.validate_json(sent[0]))
        except ValidationError as exc:
            return Result(
                error=f"the API at {self.base_url} sent an answer this dashboard does not "
                f"understand ({exc.error_count()} problems; is it the same meterwatch version?)"
            )

    def _get(self, adapter: TypeAdapter[T], path: str, **query: object) -> Result[T]:
        return self._call(adapter, "GET", path, query=query)

    # --- signing in -------------------------------------------------------------------------

    def sign_in(self, username: str, password: str) -> Result[TokenPublic]:
        """POST /v1/auth/token (OAuth2 password flow)."""
        return self._call(
            _adapter(TokenPublic),
            "POST",
            "/v1/auth/token",
            form={"username": username, "password": password},
        )

    def whoami(self) -> Result[PrincipalPublic]:
        return self._get(_adapter(PrincipalPublic), "/v1/auth/me")

    # --- staff ------------------------------------------------------------------------------

    def live(self, *, hours: float = 24, flags: int = 20) -> Result[LivePublic]:
        return self._get(_adapter(LivePublic), "/v1/live", hours=hours, flags=flags)

    def latest_alerts(self, limit: int = 10) -> Result[list[AlertSummaryPublic]]:
        return self._get(_adapter(list[AlertSummaryPublic]), "/v1/alerts/latest", limit=limit)

    def flags(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        severity: str | None = None,
        cycle_day: int | None = None,
        period_start: date | None = None,
        account_id: str | None = None,
        limit: int = 100,
    ) -> Result[list[FlagDetailPublic]]:
        return self._get(
            _adapter(list[FlagDetailPublic]),
            "/v1/flags",
            status=status,
            kind=kind,
            severity=severity,
            cycle_day=cycle_day,
            period_start=period_start,
            account_id=account_id,
            limit=limit,
        )

    def review_flag(self, flag_id: int, status: str, reason: str) -> Result[FlagDetailPublic]:
        return self._call(
            _adapter(FlagDetailPublic),
            "POST",
            f"/v1/flags/{flag_id}/review",
            body={"status": status, "reason": reason},
        )

    def account(self, account_id: str) -> Result[AccountViewPublic]:
        return self._get(_adapter(AccountViewPublic), f"/v1/accounts/{_seg(account_id)}")

    def account_usage(
        self, account_id: str, resolution: str, start: date | None, end: date | None
    ) -> Result[UsageHistoryPublic]:
        return self._get(
            _adapter(UsageHistoryPublic),
            f"/v1/accounts/{_seg(account_id)}/usage",
            resolution=resolution,
            start=start,
            end=end,
        )

    def add_contact(self, account_id: str, channel: str, summary: str) -> Result[ContactPublic]:
        return self._call(
            _adapter(ContactPublic),
            "POST",
            f"/v1/accounts/{_seg(account_id)}/contacts",
            body={"channel": channel, "summary": summary},
        )

    def cycles(self, periods: int = 3) -> Result[list[CyclePublic]]:
        return self._get(_adapter(list[CyclePublic]), "/v1/billing-cycles", periods=periods)

    def cycle_readiness(self, cycle_day: int, period_start: date) -> Result[CycleReadinessPublic]:
        return self._get(
            _adapter(CycleReadinessPublic), f"/v1/billing-cycles/{cycle_day}/{period_start}"
        )

    def close_cycle(
        self, cycle_day: int, period_start: date, *, override: bool, reason: str | None
    ) -> Result[CycleClosePublic]:
        return self._call(
            _adapter(CycleClosePublic),
            "POST",
            f"/v1/billing-cycles/{cycle_day}/{period_start}/close",
            body={"override": override, "reason": reason},
        )

    def rejected(self, limit: int = 100) -> Result[list[RejectedPublic]]:
        return self._get(_adapter(list[RejectedPublic]), "/v1/exceptions/rejected", limit=limit)

    def resolve_rejected(self, rejected_id: int, reason: str) -> Result[RejectedPublic]:
        return self._call(
            _adapter(RejectedPublic),
            "POST",
            f"/v1/exceptions/rejected/{rejected_id}/resolve",
            body={"reason": reason},
        )

    def unmatched(self, limit: int = 500) -> Result[list[UnmatchedPublic]]:
        return self._get(_adapter(list[UnmatchedPublic]), "/v1/exceptions/unmatched", limit=limit)

    def assign_meter(
        self,
        meter_id: str,
        service_point_id: str,
        account_id: str,
        valid_from: str,
        reason: str,
    ) -> Result[ReprocessPublic]:
        return self._call(
            _adapter(ReprocessPublic),
            "POST",
            "/v1/exceptions/unmatched/assign",
            body={
                "meter_id": meter_id,
                "service_point_id": service_point_id,
                "account_id": account_id,
                "valid_from": valid_from,
                "reason": reason,
            },
        )

    def dismiss_unmatched(self, meter_id: str, reason: str) -> Result[ReprocessPublic]:
        return self._call(
            _adapter(ReprocessPublic),
            "POST",
            "/v1/exceptions/unmatched/resolve",
            body={"meter_id": meter_id, "reason": reason},
        )

    # --- customers --------------------------------------------------------------------------

    def my_accounts(self) -> Result[list[MyAccountPublic]]:
        return self._get(_adapter(list[MyAccountPublic]), "/v1/me/accounts")

    def my_usage(
        self, account_id: str, resolution: str, start: date | None = None, end: date | None = None
    ) -> Result[UsageHistoryPublic]:
        return self._get(
            _adapter(UsageHistoryPublic),
            f"/v1/me/accounts/{_seg(account_id)}/usage",
            resolution=resolution,
            start=start,
            end=end,
        )

    def my_bill(self, account_id: str) -> Result[MyBillPublic]:
        return self._get(_adapter(MyBillPublic), f"/v1/me/accounts/{_seg(account_id)}/bill")

    def my_leaks(self, account_id: str) -> Result[list[LeakPublic]]:
        return self._get(_adapter(list[LeakPublic]), f"/v1/me/accounts/{_seg(account_id)}/leaks")

    def my_alerts(self, account_id: str, limit: int = 50) -> Result[list[AlertPublic]]:
        return self._get(
            _adapter(list[AlertPublic]), f"/v1/me/accounts/{_seg(account_id)}/alerts", limit=limit
        )

    def alert_settings(self, account_id: str) -> Result[AlertSettingsPublic]:
        return self._get(
            _adapter(AlertSettingsPublic), f"/v1/me/accounts/{_seg(account_id)}/alert-settings"
        )

    def update_alert_settings(
        self, account_id: str, changes: Mapping[str, object]
    ) -> Result[AlertSettingsPublic]:
        return self._call(
            _adapter(AlertSettingsPublic),
            "PATCH",
            f"/v1/me/accounts/{_seg(account_id)}/alert-settings",
            body=dict(changes),
        )

    def download(self, account_id: str, what: str, **query: object) -> Result[Download]:
        """A customer's data file: `what` is "usage.csv" or "green-button"."""
        sent = self._send("GET", f"/v1/me/accounts/{_seg(account_id)}/{what}", query=query)
        if isinstance(sent, Result):
            return sent
        body, headers = sent
        lower = {k.lower(): v for k, v in headers.items()}
        return Result(
            value=Download(
                body,
                lower.get("content-type", "application/octet-stream"),
                lower.get("content-disposition"),
            )
        )


def _http_error(base: str, exc: urllib.error.HTTPError) -> str:
    detail = _detail(exc)
    if exc.code == 401:
        return f"signed out ({detail}): sign in again"
    if exc.code == 403:
        return f"not allowed: {detail}"
    if exc.code == 404:
        return f"not found: {detail}"
    return f"API at {base} answered {exc.code}: {detail}"


def _seg(value: str) -> str:
    """One path segment, escaped (an account number with a slash stays one segment)."""
    return quote(value, safe="")


_ADAPTERS: dict[object, TypeAdapter[Any]] = {}


def _adapter(kind: type[T] | Any) -> TypeAdapter[Any]:
    """A cached TypeAdapter (building one per call would cost more than the parse)."""
    found = _ADAPTERS.get(kind)
    if found is None:
        found = _ADAPTERS[kind] = TypeAdapter(kind)
    return found


def fetch_live(
    api_url: str,
    timeout_s: float,
    *,
    hours: float = 24,
    flags: int = 20,
    token: str | None = None,
) -> LiveResult:
    """GET {api_url}/v1/live: usage over the `hours` before the newest read, the `flags` newest
    flags, throughput, lag, backlog and totals, sending `token` (default: `api_credential` of
    the process settings). Never raises for network or API trouble."""
    bearer = token if token is not None else api_credential(get_settings())
    found = Client(api_url, timeout_s, bearer).live(hours=hours, flags=flags)
    return LiveResult(live=found.value, error=found.error)


def model_dump(value: BaseModel) -> dict[str, Any]:
    """A model as JSON-ready data (for a dcc.Store)."""
    return value.model_dump(mode="json")
