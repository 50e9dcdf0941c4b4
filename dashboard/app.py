"""Builds the Dash app (`create_dash_app`) and runs it (`serve`).

A multi-page app (`use_pages=True`): each module under `dashboard/pages/` is one page with its
layout and callbacks, added here through its `register(app, settings)`. Every page reads its
data through the API (`dashboard.data`), as the signed-in user (`dashboard.auth`).

Staff pages: Live (/), Exceptions, Account, Billing cycle, Queues. Customers: the portal.
"""

from __future__ import annotations

import dash
from dash import Dash, dcc, html

from dashboard import auth
from dashboard.pages import account, billing, exceptions, live, portal, queues
from meterwatch.settings import Settings, get_settings

PAGES = (live, exceptions, account, billing, queues, portal)


def header(settings: Settings) -> html.Header:
    """The top bar: the pages this user may open, who is signed in, and sign out."""
    user = auth.current_user()
    links = []
    if user is not None:
        links = [
            dcc.Link(page["name"], href=page["relative_path"], id=f"nav-{page['module']}")
            for page in dash.page_registry.values()
            if user.role in page.get("roles", ())
        ]
    who = (
        [
            html.Span(f"{user.username} ({user.role})", id="nav-user"),
            html.A("Sign out", href="/logout", id="nav-logout"),
        ]
        if user is not None
        else [html.A("Sign in", href="/login", id="nav-login")]
    )
    return html.Header(
        className="mw-header",
        children=[
            html.Span("meterwatch", className="mw-brand"),
            html.Nav(links, className="mw-nav"),
            html.Span(who, className="mw-who"),
        ],
    )


def create_dash_app(settings: Settings | None = None) -> Dash:
    """The dashboard for `settings` (default: the process settings)."""
    settings = settings or get_settings()
    app = Dash(
        "dashboard",  # the package: its assets/ folder holds the style sheet
        use_pages=True,
        pages_folder="",  # pages are registered explicitly below
        title="meterwatch",
        update_title="",  # no "Updating…" flicker in the tab title on every refresh
        # pages build their components on demand (by role, by account): a callback's
        # components exist only while its page is shown
        suppress_callback_exceptions=True,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    auth.install(app.server, settings)
    for page in PAGES:
        page.register(app, settings)
    app.layout = lambda: html.Div([header(settings), html.Main(dash.page_container)])
    return app


def serve(settings: Settings | None = None) -> None:
    """Run the dashboard on settings.dashboard_host:settings.dashboard_port until interrupted."""
    settings = settings or get_settings()
    create_dash_app(settings).run(
        host=settings.dashboard_host, port=settings.dashboard_port, debug=False
    )
