"""The billing-cycle page (staff): every cycle with its unresolved flags, one cycle's readiness
(the flags that block closing it, by kind) and closing it — with an override and its reason
when flags are still open, which only the billing role (and admins) may do; the API refuses
anybody else and the page says so. /billing?cycle=1|2026-11-01 opens that cycle. Component ids
start with `bill-`.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html

from api.schemas import CyclePublic, CycleReadinessPublic
from dashboard import auth, figures
from dashboard.pages.exceptions import cycle_label, cycle_value, parse_cycle
from meterwatch.settings import Settings

CLOSERS = ("billing", "admin")


def cycles_table(cycles: list[CyclePublic], settings: Settings) -> html.Table:
    rows = [
        [
            c.cycle_day,
            f"{c.period_start} to {c.period_end}",
            figures.format_count(c.accounts),
            figures.format_count(c.blocking_flags),
            f"closed by {c.closed_by}, {figures.format_time(c.closed_at, settings.tz)}"
            if c.closed_at
            else "open",
        ]
        for c in cycles
    ]
    return figures.table(
        ("Cycle day", "Period", "Accounts", "Unresolved flags", "State"),
        rows,
        "No accounts, so no billing cycles.",
        id="bill-cycles",
    )


def readiness(found: CycleReadinessPublic, settings: Settings) -> list[Any]:
    """The readiness panel of one cycle."""
    if found.closed_at:
        verdict = (
            f"Closed by {found.closed_by} on {figures.format_time(found.closed_at, settings.tz)}."
        )
    elif found.ready:
        verdict = "Ready to close: no unresolved flag overlaps this period."
    else:
        verdict = (
            f"Not ready: {found.blocking_flags} unresolved flag(s) overlap this period. "
            "Review them on the Exceptions page, or close with an override and a reason."
        )
    by_kind = [
        [k.kind.replace("_", " "), figures.format_count(k.flags)] for k in found.blocking_by_kind
    ]
    return [
        html.P(verdict, id="bill-verdict", className="mw-verdict"),
        figures.table(("Kind", "Flags"), by_kind, "Nothing blocks this cycle.", id="bill-by-kind"),
        html.Div(
            figures.table(
                figures.QUEUE_COLUMNS,
                figures.queue_rows(found.blocking, settings.tz),
                "No blocking flags.",
                id="bill-blocking",
            ),
            className="mw-scroll",
        ),
    ]


def layout(
    settings: Settings, cycles: list[CyclePublic], error: str | None, chosen: str | None = None
) -> html.Div:
    """The page; `chosen` ('1|2026-11-01', from ?cycle=) is the cycle shown first."""
    user = auth.current_user()
    values = [cycle_value(c) for c in cycles]
    first = chosen if chosen in values else (values[0] if values else None)
    may_close = user is not None and user.role in CLOSERS
    return html.Div(
        className="mw-page",
        children=[
            html.H1("Billing cycles"),
            figures.problem(error, id="bill-banner"),
            cycles_table(cycles, settings),
            html.H2("Readiness"),
            dcc.Dropdown(
                [{"label": cycle_label(c), "value": cycle_value(c)} for c in cycles],
                first,
                id="bill-cycle",
                clearable=False,
            ),
            html.Div(id="bill-readiness"),
            html.H2("Close the cycle"),
            html.P(
                "Closing needs the billing role."
                if not may_close
                else "A cycle closes once its period has ended. With unresolved flags it needs an "
                "override and a reason, kept in the audit log.",
                className="mw-note",
            ),
            html.Div(
                className="mw-form",
                children=[
                    dcc.Checklist(
                        [
                            {
                                "label": "Override: close despite unresolved flags",
                                "value": "override",
                            }
                        ],
                        [],
                        id="bill-override",
                    ),
                    dcc.Textarea(
                        id="bill-reason",
                        className="mw-textarea",
                        placeholder="Reason for the override",
                    ),
                    html.Button(
                        "Close the cycle",
                        id="bill-close",
                        className="mw-button",
                        disabled=not may_close,
                    ),
                    html.Div(id="bill-message"),
                ],
            ),
            dcc.Store(id="bill-refresh", data=0),
        ],
    )


def register(app: Dash, settings: Settings) -> None:
    """Add the billing-cycle page at /billing to `app`."""

    def page(cycle: str | None = None, **_query: str) -> html.Div:
        found = auth.client(settings).cycles()
        return layout(settings, found.value or [], found.error, cycle)

    dash.register_page(
        __name__,
        path="/billing",
        name="Billing cycle",
        title="meterwatch · billing cycles",
        order=3,
        layout=auth.guarded(auth.STAFF, "/billing", page),
        roles=auth.STAFF,
    )

    @app.callback(
        Output("bill-readiness", "children"),
        Input("bill-cycle", "value"),
        Input("bill-refresh", "data"),
    )
    def show_readiness(value: str | None, _n: int) -> Any:
        day, start = parse_cycle(value)
        if day is None or start is None:
            return html.P("Choose a cycle.")
        found = auth.client(settings).cycle_readiness(day, start)
        return readiness(found.value, settings) if found.value else figures.problem(found.error)

    @app.callback(
        Output("bill-message", "children"),
        Output("bill-refresh", "data"),
        Input("bill-close", "n_clicks"),
        State("bill-cycle", "value"),
        State("bill-override", "value"),
        State("bill-reason", "value"),
        State("bill-refresh", "data"),
        prevent_initial_call=True,
    )
    def close(_n: int, value: str | None, override: list[str], reason: str | None, n: int) -> Any:
        day, start = parse_cycle(value)
        if day is None or start is None:
            return figures.outcome("Choose a cycle first.", ""), dash.no_update
        found = auth.client(settings).close_cycle(
            day,
            start,
            override="override" in (override or []),
            reason=(reason or "").strip() or None,
        )
        if found.value is None:
            return figures.outcome(found.error, ""), dash.no_update
        done = f"Cycle day {day} of {start} is closed" + (
            " (override)." if found.value.overridden else "."
        )
        return figures.outcome(None, done), n + 1
