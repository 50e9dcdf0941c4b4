"""Where the dashboard gets its data: the API, and nothing else.

`fetch_live` asks `GET /v1/live` and returns either the parsed answer or a sentence saying what
went wrong, so that a page shows "API unreachable at …" instead of failing. It uses the
standard library's HTTP client: the dashboard needs no HTTP package of its own.

The API wants a staff credential: `api_credential` is DASHBOARD_API_TOKEN when set (an operator's
API token), else a short-lived operator token the dashboard signs with the shared SECRET_KEY.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlencode

from pydantic import ValidationError

from api.schemas import LivePublic
from api.security import service_token
from meterwatch.settings import Settings, get_settings


@dataclass(frozen=True)
class LiveResult:
    """The live page's data (`live`), or why there is none (`error`, a sentence for people)."""

    live: LivePublic | None = None
    error: str | None = None


def _detail(exc: urllib.error.HTTPError) -> str:
    """The API's own explanation of an error answer (FastAPI's {"detail": ...})."""
    try:
        detail = json.loads(exc.read() or b"{}").get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return str(detail) if detail else exc.reason or "no explanation given"


def api_credential(settings: Settings) -> str:
    """The bearer token the dashboard sends (module docstring)."""
    if settings.dashboard_api_token is not None:
        return settings.dashboard_api_token.get_secret_value()
    return service_token(settings, "dashboard")


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
    base = api_url.rstrip("/")
    url = f"{base}/v1/live?{urlencode({'hours': hours, 'flags': flags})}"
    bearer = token if token is not None else api_credential(get_settings())
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {bearer}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return LiveResult(error=f"API at {base} answered {exc.code}: {_detail(exc)}")
    except urllib.error.URLError as exc:
        return LiveResult(error=f"API unreachable at {base}: {exc.reason}")
    except TimeoutError:
        return LiveResult(error=f"API unreachable at {base}: no answer within {timeout_s:g} s")
    except OSError as exc:
        return LiveResult(error=f"API unreachable at {base}: {exc}")
    try:
        return LiveResult(live=LivePublic.model_validate_json(body))
    except ValidationError as exc:
        return LiveResult(
            error=f"API at {base} sent an answer this dashboard does not understand "
            f"({exc.error_count()} problems; is it the same meterwatch version?)"
        )
