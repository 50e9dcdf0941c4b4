"""Signing in to the dashboard, and who may see which page.

Staff and customers sign in with their meterwatch username and password (`meterwatch users
create`): the dashboard exchanges them at the API (POST /v1/auth/token) for an access token and
keeps it, with the role, in the Flask session — a cookie signed with the same secret key the
API signs its tokens with (SECRET_KEY, or the development key in DATA_DIR/secret_key), HttpOnly
and SameSite=Lax. Every API call of a page then carries that token (`client()`), so the API's
own role checks decide what anybody sees; the pages check the role as well, only to say "this
page is for staff" rather than show a wall of 403s. When the token expires the pages say
"signed out: sign in again".

Flask routes added here: /login (form), /logout, and /download/<account_id>/<file>, which
passes a customer's CSV or Green Button download through from the API with their token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import flask
from dash import dcc, html
from markupsafe import escape

from api.security import STAFF_ROLES, secret_key
from dashboard.data import Client
from meterwatch.settings import Settings

CUSTOMER = ("customer",)
STAFF = STAFF_ROLES
# Where each role lands after signing in.
HOME = {"customer": "/portal"}
DOWNLOADS = {"usage.csv", "green-button"}


@dataclass(frozen=True)
class SessionUser:
    """Who is signed in to this browser."""

    username: str
    role: str
    token: str
    customer_id: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF


def current_user() -> SessionUser | None:
    """The signed-in user of the current request, or None (also outside a request)."""
    if not flask.has_request_context():
        return None
    found = flask.session.get("user")
    if not isinstance(found, dict):
        return None
    try:
        return SessionUser(**found)
    except TypeError:  # a cookie from another version of the dashboard
        return None


def client(settings: Settings) -> Client:
    """The API, called as the signed-in user."""
    user = current_user()
    return Client(
        settings.effective_api_url, settings.dashboard_api_timeout_s, user.token if user else None
    )


def guarded(roles: Sequence[str], path: str, build: Callable[..., Any]) -> Callable[..., Any]:
    """A page layout that shows `build(**query)` to the `roles` only: others are sent to sign
    in, or told the page is not for them."""

    def layout(**query: Any) -> Any:
        user = current_user()
        if user is None:
            return html.Div(
                [dcc.Location(id="auth-redirect", href=f"/login?next={quote(path)}")],
                className="mw-page",
            )
        if user.role not in roles:
            return refusal(user)
        return build(**query)

    return layout


def refusal(user: SessionUser) -> html.Div:
    """What someone sees on a page that is not for their role."""
    if user.role == "customer":
        text = "This page is for utility staff. Your own usage and alerts are in your portal."
        link = dcc.Link("Go to my usage", href="/portal")
    else:
        text = "The customer portal is for customers; staff see accounts on the Account page."
        link = dcc.Link("Go to the live page", href="/")
    return html.Div(
        className="mw-page",
        children=[html.Div([html.P(text), link], id="auth-refused", className="mw-notice")],
    )


def _safe_next(target: str | None, role: str) -> str:
    """Where to go after signing in: a path on this site only (no open redirect)."""
    home = HOME.get(role, "/")
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return home
    if role == "customer" and not target.startswith("/portal"):
        return home
    return target


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meterwatch · sign in</title><link rel="stylesheet" href="/assets/style.css"></head>
<body><header class="mw-header"><span class="mw-brand">meterwatch</span></header>
<main class="mw-page mw-login">
<h1>Sign in</h1>
<p>Utility staff and customers: use the username and password you were given.</p>
{error}
<form method="post" action="/login" id="login-form">
<input type="hidden" name="next" value="{next}">
<label for="login-username">Username</label>
<input id="login-username" name="username" autocomplete="username" required value="{username}">
<label for="login-password">Password</label>
<input id="login-password" name="password" type="password" autocomplete="current-password"
 required>
<button id="login-submit" type="submit">Sign in</button>
</form></main></body></html>"""


def _login_page(error: str | None = None, next_: str = "", username: str = "") -> str:
    shown = (
        f'<p class="mw-banner" id="login-error" role="alert">{escape(error)}</p>' if error else ""
    )
    return LOGIN_PAGE.format(error=shown, next=escape(next_), username=escape(username))


def install(server: flask.Flask, settings: Settings) -> None:
    """Give the dashboard's Flask server its session key and the sign-in, sign-out and
    download routes."""
    server.secret_key = secret_key(settings)
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="meterwatch_session",
        # the cookie outlives no token: a longer session would only hold an expired one
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.access_token_expire_minutes),
    )

    def login() -> Any:
        if flask.request.method == "GET":
            return _login_page(next_=flask.request.args.get("next", ""))
        form = flask.request.form
        username = form.get("username", "").strip()
        api = Client(settings.effective_api_url, settings.dashboard_api_timeout_s)
        signed = api.sign_in(username, form.get("password", ""))
        if signed.value is None:
            message = (
                "Wrong username or password."
                if signed.status == 401
                else f"Cannot sign in right now: {signed.error}"
            )
            return _login_page(message, form.get("next", ""), username), 401
        token = signed.value.access_token
        who = Client(api.base_url, api.timeout_s, token).whoami()
        if who.value is None:
            return _login_page(f"Cannot sign in right now: {who.error}", "", username), 502
        if who.value.role == "headend":
            return _login_page("This user is a head-end, not a person.", "", username), 403
        flask.session.clear()
        flask.session.permanent = True
        flask.session["user"] = {
            "username": who.value.subject,
            "role": who.value.role,
            "token": token,
            "customer_id": who.value.customer_id,
        }
        return flask.redirect(_safe_next(form.get("next"), who.value.role))

    def logout() -> Any:
        flask.session.clear()
        return flask.redirect("/login")

    def download(account_id: str, what: str) -> Any:
        user = current_user()
        if user is None:
            return flask.redirect(f"/login?next={quote('/portal')}")
        if what not in DOWNLOADS:
            flask.abort(404)
        query = {k: v for k, v in flask.request.args.items() if k in ("resolution", "start", "end")}
        found = client(settings).download(account_id, what, **query)
        if found.value is None:
            return flask.Response(
                found.error or "", status=found.status or 502, mimetype="text/plain"
            )
        headers = (
            {"Content-Disposition": found.value.disposition} if found.value.disposition else {}
        )
        return flask.Response(
            found.value.body, content_type=found.value.content_type, headers=headers
        )

    server.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    server.add_url_rule("/logout", "logout", logout, methods=["GET", "POST"])
    server.add_url_rule("/download/<account_id>/<what>", "download", download)
