"""The exceptions page (staff): the flag queue of a billing cycle, filtered by kind, status and
severity; each flag opens its evidence (the account's usage around the flag, hourly or daily,
with the flag's span shaded) and can be confirmed, dismissed, resolved or reopened with a
reason. Component ids start with `exc-`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import dash
import plotly.graph_objects as go
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html

from api.schemas import CyclePublic, FlagDetailPublic
from dashboard import auth, figures
from meterwatch.reports import FLAG_KINDS
from meterwatch.settings import Settings

STATUSES = ("open", "confirmed", "dismissed", "resolved")
SEVERITIES = ("low", "medium", "high", "critical")
ALL_CYCLES = "all"
ACTIONS = {
    "confirmed": "Confirm (it is real)",
    "dismissed": "Dismiss (not a problem)",
    "resolved": "Resolve (dealt with)",
    "open": "Reopen",
}


def cycle_value(cycle: CyclePublic) -> str:
    """'1|2026-11-01': a cycle as a dropdown value."""
    return f"{cycle.cycle_day}|{cycle.period_start.isoformat()}"


def parse_cycle(value: str | None) -> tuple[int | None, date | None]:
    """A dropdown value back to (cycle_day, period_start); (None, None) for every cycle."""
    if not value or value == ALL_CYCLES:
        return None, None
    day, _, start = value.partition("|")
    return int(day), date.fromisoformat(start)


def cycle_label(cycle: CyclePublic) -> str:
    closed = ", closed" if cycle.closed_at else ""
    return (
        f"Cycle day {cycle.cycle_day}: {cycle.period_start} to {cycle.period_end} "
        f"({cycle.blocking_flags} unresolved{closed})"
    )


def _options(values: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"label": v.replace("_", " "), "value": v} for v in values]


def layout(cycles: list[CyclePublic], error: str | None) -> html.Div:
    cycle_options = [{"label": "Every cycle", "value": ALL_CYCLES}] + [
        {"label": cycle_label(c), "value": cycle_value(c)} for c in cycles
    ]
    return html.Div(
        className="mw-page",
        children=[
            html.H1("Exceptions: the flag queue"),
            figures.problem(error, id="exc-banner"),
            html.Div(
                className="mw-filters",
                children=[
                    html.Label(
                        [
                            "Billing cycle",
                            dcc.Dropdown(
                                cycle_options, ALL_CYCLES, id="exc-cycle", clearable=False
                            ),
                        ]
                    ),
                    html.Label(
                        [
                            "Kind",
                            dcc.Dropdown(
                                _options(FLAG_KINDS), None, id="exc-kind", placeholder="any kind"
                            ),
                        ]
                    ),
                    html.Label(
                        [
                            "Status",
                            dcc.Dropdown(
                                _options(STATUSES),
                                "open",
                                id="exc-status-filter",
                                placeholder="any status",
                            ),
                        ]
                    ),
                    html.Label(
                        [
                            "Severity",
                            dcc.Dropdown(
                                _options(SEVERITIES),
                                None,
                                id="exc-severity",
                                placeholder="any severity",
                            ),
                        ]
                    ),
                ],
            ),
            html.Div(id="exc-count", className="mw-as-of"),
            html.Div(id="exc-table", className="mw-scroll"),
            html.Div(
                id="exc-evidence",
                className="mw-panel",
                hidden=True,
                children=[
                    html.H2(id="exc-evidence-title"),
                    dcc.Graph(id="exc-evidence-chart", config={"displaylogo": False}),
                    html.Div(id="exc-evidence-facts"),
                    html.H3("Review"),
                    dcc.RadioItems(
                        [{"label": text, "value": value} for value, text in ACTIONS.items()],
                        "confirmed",
                        id="exc-action",
                        className="mw-radio",
                    ),
                    dcc.Textarea(
                        id="exc-reason",
                        placeholder="Why (kept in the audit log), e.g. 'customer confirmed a "
                        "running toilet'",
                        className="mw-textarea",
                    ),
                    html.Button("Save the review", id="exc-submit", className="mw-button"),
                    html.Div(id="exc-message"),
                ],
            ),
            dcc.Store(id="exc-flags"),
            dcc.Store(id="exc-selected"),
            dcc.Store(id="exc-refresh", data=0),
        ],
    )


def queue_table(flags: list[FlagDetailPublic], settings: Settings) -> html.Table:
    """The queue, one row per flag, each with a button that opens its evidence."""
    rows = figures.queue_rows(flags, settings.tz)
    body = [
        html.Tr(
            [html.Td(cell) for cell in row]
            + [
                html.Td(
                    html.Button(
                        "Open",
                        id={"type": "exc-open", "index": flag.flag_id},
                        className="mw-button-small",
                    )
                )
            ],
            id=f"exc-row-{flag.flag_id}",
        )
        for flag, row in zip(flags, rows, strict=True)
    ]
    if not body:
        body = [html.Tr(html.Td("No flags match.", colSpan=len(figures.QUEUE_COLUMNS) + 1))]
    head = html.Thead(html.Tr([html.Th(c) for c in (*figures.QUEUE_COLUMNS, "")]))
    return html.Table([head, html.Tbody(body)], className="mw-table", id="exc-queue")


def evidence(flag: FlagDetailPublic, settings: Settings) -> tuple[str, go.Figure, html.Dl]:
    """Title, chart and facts of one flag's evidence panel."""
    tz = settings.tz
    resolution, start, end = figures.evidence_window(flag, tz, datetime.now(UTC))
    found = auth.client(settings).account_usage(flag.account_id, resolution, start, end)
    chart = figures.history_figure(
        found.value,
        compare=False,
        marks=figures.flag_spans([flag]),
        empty_text=found.error or "No reads around this flag",
    )
    title = f"Flag {flag.flag_id}: {flag.kind.replace('_', ' ')} on meter {flag.meter_id}"
    return title, chart, figures.facts(figures.evidence_items(flag, tz), id="exc-facts")


def register(app: Dash, settings: Settings) -> None:
    """Add the exceptions page at /exceptions to `app`."""

    def page(**_query: str) -> html.Div:
        found = auth.client(settings).cycles()
        return layout(found.value or [], found.error)

    dash.register_page(
        __name__,
        path="/exceptions",
        name="Exceptions",
        title="meterwatch · exceptions",
        order=1,
        layout=auth.guarded(auth.STAFF, "/exceptions", page),
        roles=auth.STAFF,
    )

    @app.callback(
        Output("exc-table", "children"),
        Output("exc-flags", "data"),
        Output("exc-count", "children"),
        Input("exc-cycle", "value"),
        Input("exc-kind", "value"),
        Input("exc-status-filter", "value"),
        Input("exc-severity", "value"),
        Input("exc-refresh", "data"),
    )
    def list_flags(
        cycle: str | None, kind: str | None, status: str | None, severity: str | None, _n: int
    ) -> tuple[Any, ...]:
        day, start = parse_cycle(cycle)
        found = auth.client(settings).flags(
            status=status, kind=kind, severity=severity, cycle_day=day, period_start=start
        )
        if found.value is None:
            return figures.problem(found.error), [], ""
        flags = found.value
        shown = f"{len(flags)} flag(s), most severe and newest first" + (
            " (the first 100)" if len(flags) == 100 else ""
        )
        return queue_table(flags, settings), [f.model_dump(mode="json") for f in flags], shown

    @app.callback(
        Output("exc-selected", "data"),
        Input({"type": "exc-open", "index": ALL}, "n_clicks"),
        prevent_initial_call=True,
    )
    def select_flag(clicks: list[int | None]) -> Any:
        if not any(clicks) or not isinstance(ctx.triggered_id, dict):
            return dash.no_update  # the table was redrawn, nobody clicked
        return ctx.triggered_id["index"]

    @app.callback(
        Output("exc-evidence", "hidden"),
        Output("exc-evidence-title", "children"),
        Output("exc-evidence-chart", "figure"),
        Output("exc-evidence-facts", "children"),
        Input("exc-selected", "data"),
        State("exc-flags", "data"),
        prevent_initial_call=True,
    )
    def show_evidence(flag_id: int | None, flags: list[dict[str, Any]] | None) -> tuple[Any, ...]:
        chosen = next((f for f in flags or [] if f["flag_id"] == flag_id), None)
        if chosen is None:
            return True, "", go.Figure(), ""
        return (False, *evidence(FlagDetailPublic.model_validate(chosen), settings))

    @app.callback(
        Output("exc-message", "children"),
        Output("exc-refresh", "data"),
        Input("exc-submit", "n_clicks"),
        State("exc-selected", "data"),
        State("exc-action", "value"),
        State("exc-reason", "value"),
        State("exc-refresh", "data"),
        prevent_initial_call=True,
    )
    def review(
        _clicks: int, flag_id: int | None, action: str, reason: str | None, n: int
    ) -> tuple[Any, ...]:
        if flag_id is None:
            return figures.outcome("Open a flag first.", ""), dash.no_update
        found = auth.client(settings).review_flag(flag_id, action, (reason or "").strip())
        if found.value is None:
            return figures.outcome(found.error, ""), dash.no_update
        return figures.outcome(None, f"Flag {flag_id} is now {found.value.status}."), n + 1
