"""The live page (staff): throughput, lag behind the head-end, stream backlog, totals, usage by
customer class over the last 24 h of reads, and the newest flags and alerts — refreshed in place
every `settings.dashboard_refresh_ms`. Component ids start with `live-`.

`register(app, settings)` adds the page and its callback to one app (rather than through
`dash.callback`'s process-wide list), so that several apps can live in one process.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

import dash
import plotly.graph_objects as go
from dash import Dash, Input, Output, dcc, html

from api.schemas import AlertSummaryPublic
from dashboard import auth, data, figures
from meterwatch.settings import Settings

# Hours of usage the page is first rendered with (the chart follows with 24).
FIRST_HOURS = 1
CARDS = (
    ("live-reads-per-s", "Throughput", "reads the pipeline committed per second, last minute"),
    ("live-lag", "Lag behind the head-end", "wall clock minus the newest read committed"),
    ("live-backlog", "Stream backlog", "reads published to Redis, not yet committed"),
    ("live-stored", "Reads stored", "matched to an account"),
    ("live-rejected", "Reads rejected", "unparseable or implausible, kept with the reason"),
    ("live-unmatched", "Reads unmatched", "no account to bill: in the exception queue"),
    ("live-duplicates", "Duplicates ignored", "deliveries of a read already stored"),
)


def _card(card_id: str, title: str, hint: str, shown: dict[str, Any]) -> html.Div:
    return html.Div(
        className="mw-card",
        title=hint,
        children=[
            html.Div(title, className="mw-card-title"),
            html.Div(shown[card_id], id=card_id, className="mw-card-value"),
            html.Div(shown[f"{card_id}-hint"], id=f"{card_id}-hint", className="mw-card-hint"),
        ],
    )


def layout(refresh_ms: int, tz: tzinfo, first: tuple[Any, ...] | None = None) -> html.Div:
    """The page with the outputs of a first fetch (`render`) already in place, so that the
    numbers come with the page rather than one refresh later; empty without it."""
    values = first or render(data.LiveResult(), tz)
    shown = {
        str(output.component_id) if output.component_property == "children" else
        f"{output.component_id}.{output.component_property}": value
        for output, value in zip(OUTPUTS, values, strict=True)
    }  # fmt: skip
    for card_id, _, hint in CARDS:
        shown.setdefault(f"{card_id}-hint", hint)
    return html.Div(
        className="mw-page",
        children=[
            html.Div(
                shown["live-banner"],
                id="live-banner",
                className="mw-banner",
                role="alert",
                hidden=shown["live-banner.hidden"] or first is None,
            ),
            html.Div([_card(*card, shown) for card in CARDS], className="mw-cards"),
            dcc.Graph(
                id="live-usage", figure=shown["live-usage.figure"], config={"displaylogo": False}
            ),
            html.H2("Newest flags"),
            html.Div(
                html.Table(shown["live-flags"], id="live-flags", className="mw-table"),
                className="mw-scroll",
            ),
            html.H2("Newest alerts"),
            html.Div(
                html.Table(shown["live-alerts"], id="live-alerts", className="mw-table"),
                className="mw-scroll",
            ),
            html.P(shown["live-as-of"], id="live-as-of", className="mw-as-of"),
            dcc.Interval(id="live-interval", interval=refresh_ms),
        ],
    )


def fetch(settings: Settings, *, chart: bool = True) -> tuple[Any, ...]:
    """One refresh's outputs, fetched as the signed-in user; without the `chart`, only the
    last hour of usage is asked for (cheap: the numbers of a first render)."""
    api = auth.client(settings)
    found = api.live(hours=24 if chart else FIRST_HOURS)
    alerts = api.latest_alerts(10).value if found.value else None
    return render(data.LiveResult(found.value, found.error), settings.tz, alerts, chart=chart)


def render(
    result: data.LiveResult,
    tz: tzinfo,
    alerts: list[AlertSummaryPublic] | None = None,
    *,
    chart: bool = True,
) -> tuple[Any, ...]:
    """The callback's outputs for one fetch, in `OUTPUTS` order (without the `chart`: an empty
    one that says it is on its way)."""
    numbers = figures.live_numbers(result.live, tz)
    live = result.live
    figure: go.Figure = figures.usage_figure(
        live.usage if live and chart else None,
        tz,
        empty_text="No data: the API did not answer"
        if not live
        else "No reads yet"
        if chart
        else "Loading the last 24 hours…",
    )
    return (
        result.error or "",
        result.error is None,
        numbers.reads_per_s,
        numbers.lag,
        numbers.backlog,
        numbers.backlog_hint or CARDS[2][2],
        numbers.stored,
        numbers.rejected,
        numbers.unmatched,
        numbers.duplicates,
        figure,
        figures.flags_table(live.latest_flags if live else [], tz),
        figures.alerts_table(alerts or [], tz),
        numbers.as_of,
    )


OUTPUTS = [
    Output("live-banner", "children"),
    Output("live-banner", "hidden"),
    Output("live-reads-per-s", "children"),
    Output("live-lag", "children"),
    Output("live-backlog", "children"),
    Output("live-backlog-hint", "children"),
    Output("live-stored", "children"),
    Output("live-rejected", "children"),
    Output("live-unmatched", "children"),
    Output("live-duplicates", "children"),
    Output("live-usage", "figure"),
    Output("live-flags", "children"),
    Output("live-alerts", "children"),
    Output("live-as-of", "children"),
]


def register(app: Dash, settings: Settings) -> None:
    """Add the live page at / to `app`, fetching from settings.effective_api_url."""
    tz = settings.tz

    def page(**_query: str) -> html.Div:
        return layout(settings.dashboard_refresh_ms, tz, fetch(settings, chart=False))

    dash.register_page(
        __name__,
        path="/",
        name="Live",
        title="meterwatch · live",
        order=0,
        layout=auth.guarded(auth.STAFF, "/", page),
        roles=auth.STAFF,
    )

    # The page comes with its numbers (and the last hour only: the 24-hour usage is the
    # expensive part of /v1/live), so they show at once; this first refresh, right after the
    # page is in, brings the chart, and then every interval.
    @app.callback(*OUTPUTS, Input("live-interval", "n_intervals"))
    def refresh_live(_n_intervals: int | None) -> tuple[Any, ...]:
        return fetch(settings)
