"""Builds the Dash app (`create_dash_app`) and runs it (`serve`).

A multi-page app (`use_pages=True`): each module under `dashboard/pages/` is one page with its
layout and callbacks, added here through its `register(app, settings)`. Every page reads its
data through the API (`dashboard.data`).
"""

from __future__ import annotations

import dash
from dash import Dash, html

from dashboard.pages import live
from meterwatch.settings import Settings, get_settings

PAGES = (live,)


def create_dash_app(settings: Settings | None = None) -> Dash:
    """The dashboard for `settings` (default: the process settings)."""
    settings = settings or get_settings()
    app = Dash(
        "dashboard",  # the package: its assets/ folder holds the style sheet
        use_pages=True,
        pages_folder="",  # pages are registered explicitly below
        title="meterwatch",
        update_title="",  # no "Updating…" flicker in the tab title on every refresh
    )
    for page in PAGES:
        page.register(app, settings)
    app.layout = html.Div(
        [
            html.Header(
                className="mw-header",
                children=[
                    html.Span("meterwatch", className="mw-brand"),
                    html.Nav(
                        [
                            dash.dcc.Link(page["name"], href=page["relative_path"])
                            for page in dash.page_registry.values()
                        ]
                    ),
                    html.Span(f"API: {settings.effective_api_url}", className="mw-api"),
                ],
            ),
            html.Main(dash.page_container),
        ]
    )
    return app


def serve(settings: Settings | None = None) -> None:
    """Run the dashboard on settings.dashboard_host:settings.dashboard_port until interrupted."""
    settings = settings or get_settings()
    create_dash_app(settings).run(
        host=settings.dashboard_host, port=settings.dashboard_port, debug=False
    )
