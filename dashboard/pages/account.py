"""The single account view (staff), at /account?account_id=A1: the customer, the usage chart
with the account's flags overlaid (hour, day or month, bucketed by the API), meter history, bill
previews with the tier arithmetic, alerts with every delivery attempt, and the contact log with
a form to add a contact. Component ids start with `acct-`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import dash
from dash import Dash, Input, Output, State, dcc, html

from api.schemas import AccountViewPublic, ContactPublic, FlagPublic
from dashboard import auth, figures
from meterwatch.settings import Settings

CHANNELS = ("phone", "email", "sms", "letter", "visit", "other")
# The window each resolution shows, ending on the day of the newest read (days).
WINDOW_DAYS = {"hour": 7, "day": 92, "month": 730}


def usage_window(resolution: str, newest: datetime | None, today: date) -> tuple[date, date]:
    """[start, end) local dates of the usage chart: WINDOW_DAYS[resolution] up to the day of
    the newest read (so an account whose reads stopped still shows its last weeks)."""
    end = (newest.date() if newest else today) + timedelta(days=1)
    start = end - timedelta(days=WINDOW_DAYS[resolution])
    if resolution == "month":
        start = start.replace(day=1)
    return start, end


def search_form(account_id: str | None) -> html.Form:
    return html.Form(
        action="/account",
        method="get",
        className="mw-search",
        children=[
            html.Label("Account number", htmlFor="acct-search"),
            dcc.Input(id="acct-search", name="account_id", value=account_id or "", type="text"),
            html.Button("Open", type="submit", id="acct-search-go", className="mw-button"),
        ],
    )


def contacts_table(contacts: list[ContactPublic], settings: Settings) -> html.Table:
    rows = [
        [figures.format_time(c.at, settings.tz), c.channel, c.actor, c.summary] for c in contacts
    ]
    return figures.table(
        ("When", "Channel", "By", "Summary"), rows, "No contacts yet.", id="acct-contact-table"
    )


def sections(view: AccountViewPublic, settings: Settings) -> list[Any]:
    """Everything below the search box, for one account."""
    tz = settings.tz
    customer, account = view.customer, view.account
    meters = [
        [
            point.service_point_id,
            m.meter_id,
            figures.format_time(m.valid_from, tz),
            figures.format_time(m.valid_to, tz) if m.valid_to else "now",
        ]
        for point in view.service_points
        for m in point.meters
    ]
    alerts = [
        [
            figures.format_time(a.created_at, tz),
            figures.rule_name(a.rule),
            a.status,
            a.message,
            html.Ul(
                [
                    html.Li(
                        f"{figures.format_time(d.attempted_at, tz)}: {d.channel} to "
                        f"{d.destination}: {d.status}" + (f" ({d.error})" if d.error else "")
                    )
                    for d in a.deliveries
                ]
            )
            if a.deliveries
            else "no attempt yet",
        ]
        for a in view.alerts
    ]
    flags = [
        [
            figures.format_time(f.detected_at, tz),
            f.kind.replace("_", " "),
            f.severity,
            f.status,
            f.evidence,
        ]
        for f in view.flags
    ]
    return [
        html.H1(f"Account {account.account_id}: {customer.name}", id="acct-title"),
        figures.facts(
            [
                ("Customer", f"{customer.name} ({customer.customer_id})"),
                ("Email / phone", f"{customer.email or '—'} / {customer.phone or '—'}"),
                ("Status / class", f"{account.status} / {account.customer_class}"),
                ("Rate plan", account.rate_plan or "none"),
                ("Billing cycle day", str(account.cycle_day)),
            ],
            id="acct-facts",
        ),
        html.H2("Usage, with flags"),
        dcc.RadioItems(
            [{"label": f"by {r}", "value": r} for r in WINDOW_DAYS],
            "day",
            id="acct-resolution",
            inline=True,
            className="mw-radio",
        ),
        dcc.Graph(id="acct-usage", config={"displaylogo": False}),
        html.H2("Flags"),
        figures.table(
            ("Detected", "Kind", "Severity", "Review", "Evidence"),
            flags,
            "No flags.",
            id="acct-flags",
        ),
        html.H2("Meters"),
        figures.table(
            ("Service point", "Meter", "From", "Until"), meters, "No meters.", id="acct-meters"
        ),
        html.H2("Bill previews"),
        html.Div([bill_section(b) for b in view.bills], id="acct-bills"),
        html.H2("Alerts"),
        figures.table(
            ("Created", "About", "Status", "Message", "Delivery attempts"),
            alerts,
            "No alerts.",
            id="acct-alerts",
        ),
        html.H2("Contact log"),
        html.Div(contacts_table(view.contacts, settings), id="acct-contacts"),
        html.Div(
            className="mw-form",
            children=[
                dcc.Dropdown(list(CHANNELS), "phone", id="acct-contact-channel", clearable=False),
                dcc.Textarea(
                    id="acct-contact-summary",
                    className="mw-textarea",
                    placeholder="What was said, e.g. 'customer will check the toilet'",
                ),
                html.Button("Add to the log", id="acct-contact-add", className="mw-button"),
                html.Div(id="acct-contact-message"),
            ],
        ),
    ]


def bill_section(preview: Any) -> html.Div:
    """One period's bill preview: the tier arithmetic, or why it cannot be priced."""
    title = f"{preview.period_start} to {preview.period_end}"
    body: list[Any] = []
    if preview.bill is None:
        body.append(html.P(f"Not priced: {preview.not_priced}"))
    else:
        body.append(
            figures.table(
                ("Line", "Quantity", "Price", "Amount"), figures.bill_lines(preview), "No lines."
            )
        )
    body += [html.P(note, className="mw-note") for note in preview.notes]
    return html.Div([html.H3(title), *body], className="mw-bill")


def layout(settings: Settings, account_id: str | None) -> html.Div:
    children: list[Any] = [search_form(account_id)]
    if account_id:
        found = auth.client(settings).account(account_id)
        if found.value is None:
            message = (
                f"No account {account_id!r}: check the number against the CIS export."
                if found.not_found
                else found.error
            )
            children.append(figures.problem(message, id="acct-banner"))
        else:
            view = found.value
            newest = max((r.ts for r in view.recent_reads), default=None)
            children += sections(view, settings)
            children.append(
                dcc.Store(
                    id="acct-store",
                    data={
                        "account_id": view.account.account_id,
                        "newest": newest.astimezone(settings.tz).isoformat() if newest else None,
                        "flags": [
                            FlagPublic.model_validate(f).model_dump(mode="json") for f in view.flags
                        ],
                    },
                )
            )
    return html.Div(children, className="mw-page")


def register(app: Dash, settings: Settings) -> None:
    """Add the account page at /account to `app`."""

    def page(account_id: str | None = None, **_query: str) -> html.Div:
        return layout(settings, (account_id or "").strip() or None)

    dash.register_page(
        __name__,
        path="/account",
        name="Account",
        title="meterwatch · account",
        order=2,
        layout=auth.guarded(auth.STAFF, "/account", page),
        roles=auth.STAFF,
    )

    @app.callback(
        Output("acct-usage", "figure"),
        Input("acct-resolution", "value"),
        State("acct-store", "data"),
    )
    def usage(resolution: str, store: dict[str, Any]) -> Any:
        newest = datetime.fromisoformat(store["newest"]) if store.get("newest") else None
        start, end = usage_window(resolution, newest, datetime.now(settings.tz).date())
        found = auth.client(settings).account_usage(store["account_id"], resolution, start, end)
        flags = [FlagPublic.model_validate(f) for f in store["flags"]]
        return figures.history_figure(
            found.value,
            compare=resolution != "hour",
            marks=figures.flag_spans(flags),
            empty_text=found.error or "No reads in this window",
        )

    @app.callback(
        Output("acct-contact-message", "children"),
        Output("acct-contacts", "children"),
        Input("acct-contact-add", "n_clicks"),
        State("acct-store", "data"),
        State("acct-contact-channel", "value"),
        State("acct-contact-summary", "value"),
        prevent_initial_call=True,
    )
    def add_contact(_n: int, store: dict[str, Any], channel: str, summary: str | None) -> Any:
        api = auth.client(settings)
        added = api.add_contact(store["account_id"], channel, (summary or "").strip())
        if added.value is None:
            return figures.outcome(added.error, ""), dash.no_update
        view = api.account(store["account_id"])
        table = contacts_table(view.value.contacts, settings) if view.value else dash.no_update
        return figures.outcome(None, "Added to the contact log."), table
