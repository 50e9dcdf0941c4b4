"""The exception-queues page (staff): rejected reads (raw payload and reason; mark one dealt
with) and unmatched reads by meter (assign the meter to a service point and account, which
reprocesses its queued reads, or close them without billing). Working the queues needs the
operator role; the API refuses others and the page says so. Component ids start with `queues-`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html

from api.schemas import RejectedPublic, UnmatchedPublic
from dashboard import auth, figures
from meterwatch.settings import Settings


@dataclass(frozen=True)
class MeterQueue:
    """The open unmatched reads of one meter."""

    meter_id: str
    reasons: str
    reads: int
    first: datetime
    last: datetime
    detail: str


def by_meter(reads: list[UnmatchedPublic]) -> list[MeterQueue]:
    """Open unmatched reads grouped by meter, in meter order."""
    groups: dict[str, list[UnmatchedPublic]] = {}
    for read in reads:
        groups.setdefault(read.meter_id, []).append(read)
    return [
        MeterQueue(
            meter_id=meter,
            reasons=", ".join(sorted({r.reason.replace("_", " ") for r in rows})),
            reads=len(rows),
            first=min(r.ts for r in rows),
            last=max(r.ts for r in rows),
            detail=rows[-1].detail,
        )
        for meter, rows in sorted(groups.items())
    ]


def rejected_table(rejected: list[RejectedPublic], settings: Settings) -> html.Table:
    rows = [
        [
            r.rejected_id,
            figures.format_time(r.received_at, settings.tz),
            r.meter_id or "—",
            r.reason,
            html.Pre(r.raw, className="mw-raw"),
        ]
        for r in rejected
    ]
    return figures.table(
        ("Id", "Received", "Meter", "Reason", "Raw payload"),
        rows,
        "No rejected reads waiting.",
        id="queues-rejected-table",
    )


def unmatched_table(queues: list[MeterQueue], settings: Settings) -> html.Table:
    tz = settings.tz
    rows = [
        [
            q.meter_id,
            q.reasons,
            figures.format_count(q.reads),
            figures.format_time(q.first, tz),
            figures.format_time(q.last, tz),
            q.detail,
        ]
        for q in queues
    ]
    return figures.table(
        ("Meter", "Why unmatched", "Reads", "First", "Last", "Detail"),
        rows,
        "No unmatched reads waiting.",
        id="queues-unmatched-table",
    )


def layout() -> html.Div:
    return html.Div(
        className="mw-page",
        children=[
            html.H1("Exception queues"),
            html.H2("Rejected reads"),
            html.Div(id="queues-rejected", className="mw-scroll"),
            html.Div(
                className="mw-form",
                children=[
                    dcc.Dropdown(id="queues-rejected-id", placeholder="Rejected read id"),
                    dcc.Input(
                        id="queues-rejected-reason",
                        type="text",
                        className="mw-input",
                        placeholder="How it was dealt with, e.g. 'corrected and resent'",
                    ),
                    html.Button(
                        "Mark dealt with", id="queues-rejected-resolve", className="mw-button"
                    ),
                    html.Div(id="queues-rejected-message"),
                ],
            ),
            html.H2("Unmatched reads, by meter"),
            html.Div(id="queues-unmatched", className="mw-scroll"),
            html.Div(
                className="mw-form",
                children=[
                    dcc.Dropdown(id="queues-meter", placeholder="Meter"),
                    dcc.Input(
                        id="queues-service-point",
                        type="text",
                        className="mw-input",
                        placeholder="Service point, e.g. S1",
                    ),
                    dcc.Input(
                        id="queues-account",
                        type="text",
                        className="mw-input",
                        placeholder="Account, e.g. A1",
                    ),
                    dcc.Input(
                        id="queues-valid-from",
                        type="text",
                        className="mw-input",
                        placeholder="Installed from (ISO time with offset)",
                    ),
                    dcc.Input(
                        id="queues-reason",
                        type="text",
                        className="mw-input",
                        placeholder="Why, e.g. 'meter exchange not in the CIS yet'",
                    ),
                    html.Button("Assign and reprocess", id="queues-assign", className="mw-button"),
                    html.Button(
                        "Close without billing",
                        id="queues-dismiss",
                        className="mw-button mw-button-quiet",
                    ),
                    html.Div(id="queues-unmatched-message"),
                ],
            ),
            dcc.Store(id="queues-refresh", data=0),
        ],
    )


def register(app: Dash, settings: Settings) -> None:
    """Add the queues page at /queues to `app`."""
    dash.register_page(
        __name__,
        path="/queues",
        name="Queues",
        title="meterwatch · exception queues",
        order=4,
        layout=auth.guarded(auth.STAFF, "/queues", lambda **_q: layout()),
        roles=auth.STAFF,
    )

    @app.callback(
        Output("queues-rejected", "children"),
        Output("queues-rejected-id", "options"),
        Output("queues-unmatched", "children"),
        Output("queues-meter", "options"),
        Input("queues-refresh", "data"),
    )
    def show_queues(_n: int) -> tuple[Any, ...]:
        api = auth.client(settings)
        rejected, unmatched = api.rejected(), api.unmatched()
        meters = by_meter(unmatched.value or [])
        return (
            rejected_table(rejected.value, settings)
            if rejected.value is not None
            else figures.problem(rejected.error),
            [r.rejected_id for r in rejected.value or []],
            unmatched_table(meters, settings)
            if unmatched.value is not None
            else figures.problem(unmatched.error),
            [q.meter_id for q in meters],
        )

    @app.callback(
        Output("queues-valid-from", "value"),
        Input("queues-meter", "value"),
        prevent_initial_call=True,
    )
    def suggest_valid_from(meter_id: str | None) -> Any:
        found = auth.client(settings).unmatched()
        first = min((r.ts for r in found.value or [] if r.meter_id == meter_id), default=None)
        return first.isoformat() if first else ""

    @app.callback(
        Output("queues-rejected-message", "children"),
        Output("queues-refresh", "data", allow_duplicate=True),
        Input("queues-rejected-resolve", "n_clicks"),
        State("queues-rejected-id", "value"),
        State("queues-rejected-reason", "value"),
        State("queues-refresh", "data"),
        prevent_initial_call=True,
    )
    def resolve_rejected(_n: int, rejected_id: int | None, reason: str | None, n: int) -> Any:
        if rejected_id is None:
            return figures.outcome("Choose a rejected read first.", ""), dash.no_update
        found = auth.client(settings).resolve_rejected(rejected_id, (reason or "").strip())
        if found.value is None:
            return figures.outcome(found.error, ""), dash.no_update
        return figures.outcome(None, f"Rejected read {rejected_id} is dealt with."), n + 1

    @app.callback(
        Output("queues-unmatched-message", "children"),
        Output("queues-refresh", "data", allow_duplicate=True),
        Input("queues-assign", "n_clicks"),
        Input("queues-dismiss", "n_clicks"),
        State("queues-meter", "value"),
        State("queues-service-point", "value"),
        State("queues-account", "value"),
        State("queues-valid-from", "value"),
        State("queues-reason", "value"),
        State("queues-refresh", "data"),
        prevent_initial_call=True,
    )
    def work_unmatched(
        _assign: int,
        _dismiss: int,
        meter: str | None,
        point: str | None,
        account: str | None,
        valid_from: str | None,
        reason: str | None,
        n: int,
    ) -> Any:
        if not meter:
            return figures.outcome("Choose a meter first.", ""), dash.no_update
        api, why = auth.client(settings), (reason or "").strip()
        if dash.ctx.triggered_id == "queues-dismiss":
            found = api.dismiss_unmatched(meter, why)
            done = f"The queued reads of {meter} are closed without billing."
        else:
            found = api.assign_meter(
                meter,
                (point or "").strip(),
                (account or "").strip(),
                (valid_from or "").strip(),
                why,
            )
            done = f"{meter} is assigned; " + (
                f"{found.value.republished} read(s) reprocessed. {found.value.note or ''}"
                if found.value
                else ""
            )
        if found.value is None:
            return figures.outcome(found.error, ""), dash.no_update
        return figures.outcome(None, done), n + 1
