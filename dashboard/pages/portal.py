"""The customer portal, at /portal?account=A1: a customer's own usage (by hour over the last
week, by day or by month over the last 24 months, each beside the same time a year earlier,
with open leaks shaded and alerts marked), the bill so far this period and where it is heading,
open leaks with what they cost, the alerts sent, alert settings (thresholds, channels, quiet
hours) and downloads of their data as CSV and Green Button. Only the customer's own accounts:
any other account number is "not found", as the API answers. Component ids start with
`portal-`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import dash
from dash import Dash, Input, Output, State, dcc, html

from api.schemas import AlertPublic, AlertSettingsPublic, LeakPublic, MyAccountPublic, MyBillPublic
from dashboard import auth, figures
from meterwatch.settings import Settings

RESOLUTIONS = {
    "hour": "By hour (7 days)",
    "day": "By day (24 months)",
    "month": "By month (24 months)",
}


def hour_window(resolution: str, week_end: str | None) -> tuple[date | None, date | None]:
    """By hour: the 7 local days up to and including `week_end` (ISO date); otherwise the API's
    default window (None, None: the last 24 months)."""
    if resolution != "hour" or not week_end:
        return None, None
    end = date.fromisoformat(week_end[:10]) + timedelta(days=1)
    return end - timedelta(days=7), end


class FormProblem(ValueError):
    """A value in the alert-settings form that cannot be saved; the message says which."""


def _threshold(value: object, what: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(str(value))
    except ValueError:
        raise FormProblem(f"{what} must be a number, or empty for no alert") from None
    if number <= 0:
        raise FormProblem(f"{what} must be more than 0, or empty for no alert")
    return number


def _clock(value: object, what: str) -> str | None:
    if value in (None, ""):
        return None
    try:
        return datetime.strptime(str(value).strip(), "%H:%M").strftime("%H:%M")  # 7:00 too
    except ValueError:
        raise FormProblem(f"{what} must be a time like 22:00") from None


def settings_changes(
    daily: object,
    period: object,
    bill: object,
    channels: list[str] | None,
    quiet_start: object,
    quiet_end: object,
) -> dict[str, object]:
    """The PATCH body for the alert-settings form; FormProblem names a bad field."""
    amount: str | None = None
    if bill not in (None, ""):
        try:
            money = Decimal(str(bill)).quantize(Decimal("0.01"))
        except InvalidOperation:
            raise FormProblem("The bill alert must be an amount, or empty for no alert") from None
        if money <= 0:
            raise FormProblem("The bill alert must be more than 0, or empty for no alert")
        amount = str(money)
    start, end = _clock(quiet_start, "Quiet hours start"), _clock(quiet_end, "Quiet hours end")
    if (start is None) != (end is None):
        raise FormProblem("Quiet hours need a start and an end (or neither)")
    chosen = set(channels or [])
    return {
        "daily_threshold": _threshold(daily, "The daily alert"),
        "period_threshold": _threshold(period, "The billing-period alert"),
        "projected_bill_threshold": amount,
        "leak_alerts": "leak" in chosen,
        "email_opt_in": "email" in chosen,
        "sms_opt_in": "sms" in chosen,
        "quiet_start": start,
        "quiet_end": end,
    }


def bill_panel(bill: MyBillPublic) -> html.Div:
    preview = bill.preview
    if preview.bill is None:
        return html.Div(
            [html.P(f"Your bill cannot be shown yet: {preview.not_priced}")], id="portal-bill"
        )
    money = preview.bill.currency
    usage = figures.format_usage(preview.bill.usage, preview.bill.unit)
    if bill.projected_total is not None:
        projected = figures.format_money(bill.projected_total, money)
        hint = (
            f"about {figures.format_usage(bill.projected_usage, preview.bill.unit)} by "
            f"{preview.period_end}, if you keep using water as so far"
        )
    else:
        projected, hint = "not yet", bill.projection_note or ""
    return html.Div(
        id="portal-bill",
        children=[
            html.Div(
                [
                    _card(
                        "So far this period",
                        figures.format_money(preview.bill.total, money),
                        f"{usage} since {preview.period_start}",
                        "portal-bill-so-far",
                    ),
                    _card("Heading for", projected, hint, "portal-bill-projected"),
                ],
                className="mw-cards",
            ),
            html.Details(
                [
                    html.Summary("How the bill so far is worked out"),
                    figures.table(
                        ("Line", "Quantity", "Price", "Amount"),
                        figures.bill_lines(preview),
                        "No lines.",
                    ),
                    *[html.P(n, className="mw-note") for n in preview.notes],
                ],
                className="mw-details",
            ),
        ],
    )


def _card(title: str, value: str, hint: str, card_id: str) -> html.Div:
    return html.Div(
        [
            html.Div(title, className="mw-card-title"),
            html.Div(value, id=card_id, className="mw-card-value"),
            html.Div(hint, className="mw-card-hint"),
        ],
        className="mw-card",
    )


def leaks_panel(leaks: list[LeakPublic], settings: Settings) -> html.P | html.Ul:
    if not leaks:
        return html.P("No open leaks. We tell you as soon as we see one.", id="portal-leaks")
    items = []
    for leak in leaks:
        cost = (
            f"It has cost about {figures.format_money(leak.cost_so_far, leak.currency)} so far "
            f"and adds about {figures.format_money(leak.cost_per_30_days, leak.currency)} "
            "a month while it runs."
            if leak.cost_so_far is not None
            else (leak.cost_note or "")
        )
        rate = f" at about {leak.leak_rate:,.1f} gal per hour" if leak.leak_rate else ""
        items.append(
            html.Li(
                f"Possible leak on meter {leak.meter_id} since "
                f"{figures.format_time(leak.started_at, settings.tz)}{rate}. {cost}"
            )
        )
    return html.Ul(items, id="portal-leaks", className="mw-leaks")


def alerts_panel(alerts: list[AlertPublic], settings: Settings) -> html.Table:
    rows = [
        [
            figures.format_time(a.created_at, settings.tz),
            figures.rule_name(a.rule),
            ", ".join(d.channel for d in a.deliveries if d.status == "sent") or a.status,
            a.message,
        ]
        for a in alerts
    ]
    return figures.table(
        ("Sent", "About", "How", "Message"), rows, "No alerts sent yet.", id="portal-alerts"
    )


def settings_form(current: AlertSettingsPublic, currency: str) -> html.Div:
    chosen = [
        name
        for name, on in (
            ("leak", current.leak_alerts),
            ("email", current.email_opt_in),
            ("sms", current.sms_opt_in),
        )
        if on
    ]

    def field(label: str, field_id: str, value: object, hint: str) -> html.Label:
        shown = "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        return html.Label(
            [
                label,
                dcc.Input(id=field_id, value=shown, type="text", className="mw-input"),
                html.Span(hint, className="mw-card-hint"),
            ],
            className="mw-field",
        )

    return html.Div(
        className="mw-form",
        children=[
            field(
                "Tell me when one day's use is above",
                "portal-daily",
                current.daily_threshold,
                "gallons",
            ),
            field(
                "Tell me when this billing period's use is above",
                "portal-period",
                current.period_threshold,
                "gallons",
            ),
            field(
                "Tell me when my bill is heading above",
                "portal-bill-threshold",
                current.projected_bill_threshold,
                currency,
            ),
            dcc.Checklist(
                [
                    {"label": "Leak alerts", "value": "leak"},
                    {"label": "By email", "value": "email"},
                    {"label": "By text message (SMS)", "value": "sms"},
                ],
                chosen,
                id="portal-channels",
                className="mw-radio",
            ),
            field(
                "No text messages from",
                "portal-quiet-start",
                current.quiet_start.strftime("%H:%M") if current.quiet_start else None,
                "e.g. 22:00",
            ),
            field(
                "until",
                "portal-quiet-end",
                current.quiet_end.strftime("%H:%M") if current.quiet_end else None,
                "e.g. 07:00",
            ),
            html.Button("Save my alert settings", id="portal-save", className="mw-button"),
            html.Div(id="portal-save-message"),
        ],
    )


def account_picker(accounts: list[MyAccountPublic], chosen: str) -> html.Nav | None:
    if len(accounts) < 2:
        return None
    return html.Nav(
        [
            dcc.Link(
                f"Account {a.account_id}",
                href=f"/portal?account={quote(a.account_id)}",
                className="mw-chip" + (" mw-chip-on" if a.account_id == chosen else ""),
            )
            for a in accounts
        ],
        className="mw-chips",
    )


def downloads(account_id: str) -> html.Ul:
    base = f"/download/{quote(account_id, safe='')}"
    return html.Ul(
        [
            html.Li(
                html.A(
                    "Daily use, 24 months (CSV, opens in a spreadsheet)",
                    href=f"{base}/usage.csv?resolution=day",
                    id="portal-download-csv",
                )
            ),
            html.Li(
                html.A("Hourly use, last 7 days (CSV)", href=f"{base}/usage.csv?resolution=hour")
            ),
            html.Li(
                html.A(
                    "Green Button: all my interval data (XML)",
                    href=f"{base}/green-button",
                    id="portal-download-green-button",
                )
            ),
        ],
        className="mw-downloads",
    )


def layout(settings: Settings, account: str | None) -> html.Div:
    api = auth.client(settings)
    mine = api.my_accounts()
    if mine.value is None:
        return html.Div(figures.problem(mine.error, id="portal-banner"), className="mw-page")
    if not mine.value:
        return html.Div(
            html.P("There is no account on your sign-in yet: call the utility.", id="portal-none"),
            className="mw-page",
        )
    account_id = account or mine.value[0].account_id
    bill = api.my_bill(account_id)
    if bill.value is None:
        message = (
            f"Account {account_id} was not found among your accounts."
            if bill.not_found
            else bill.error
        )
        return html.Div(
            [
                figures.problem(message, id="portal-banner"),
                dcc.Link("Back to my usage", href="/portal"),
            ],
            className="mw-page",
        )
    leaks, alerts = api.my_leaks(account_id), api.my_alerts(account_id)
    current = api.alert_settings(account_id)
    currency = bill.value.preview.bill.currency if bill.value.preview.bill else settings.currency
    today = datetime.now(settings.tz).date()
    return html.Div(
        className="mw-page mw-portal",
        children=[
            account_picker(mine.value, account_id),
            html.H1(f"Your water use, account {account_id}", id="portal-title"),
            bill_panel(bill.value),
            html.H2("Your use"),
            dcc.RadioItems(
                [{"label": t, "value": r} for r, t in RESOLUTIONS.items()],
                "day",
                id="portal-resolution",
                className="mw-radio",
                inline=True,
            ),
            html.Label(
                [
                    "Hours shown: the 7 days up to ",
                    dcc.DatePickerSingle(
                        id="portal-week-end",
                        date=today.isoformat(),
                        min_date_allowed=(today - timedelta(days=730)).isoformat(),
                        max_date_allowed=today.isoformat(),
                        display_format="YYYY-MM-DD",
                    ),
                ],
                id="portal-week",
                className="mw-field-inline",
                hidden=True,  # only by hour
            ),
            dcc.Graph(id="portal-usage", config={"displaylogo": False, "responsive": True}),
            html.H2("Leaks"),
            leaks_panel(leaks.value or [], settings),
            html.H2("Alerts we sent you"),
            html.Div(alerts_panel(alerts.value or [], settings), className="mw-scroll"),
            html.H2("Alert settings"),
            settings_form(current.value, currency)
            if current.value
            else figures.problem(current.error),
            html.H2("Download your data"),
            downloads(account_id),
            dcc.Store(
                id="portal-store",
                data={
                    "account_id": account_id,
                    "leaks": [{"started_at": k.started_at.isoformat()} for k in leaks.value or []],
                    "alerts": [a.model_dump(mode="json") for a in alerts.value or []],
                },
            ),
        ],
    )


def register(app: Dash, settings: Settings) -> None:
    """Add the customer portal at /portal to `app`."""

    def page(account: str | None = None, **_query: str) -> html.Div:
        return layout(settings, (account or "").strip() or None)

    dash.register_page(
        __name__,
        path="/portal",
        name="My usage",
        title="meterwatch · my usage",
        order=5,
        layout=auth.guarded(auth.CUSTOMER, "/portal", page),
        roles=auth.CUSTOMER,
    )

    @app.callback(
        Output("portal-usage", "figure"),
        Output("portal-week", "hidden"),
        Input("portal-resolution", "value"),
        Input("portal-week-end", "date"),
        State("portal-store", "data"),
    )
    def usage(resolution: str, week_end: str | None, store: dict[str, Any]) -> Any:
        start, end = hour_window(resolution, week_end)
        found = auth.client(settings).my_usage(store["account_id"], resolution, start, end)
        leaks = [
            figures.Span("possible leak", datetime.fromisoformat(leak["started_at"]), None)
            for leak in store["leaks"]
        ]
        alerts = figures.alert_marks([AlertPublic.model_validate(a) for a in store["alerts"]])
        figure = figures.history_figure(
            found.value,
            compare=resolution != "hour",
            marks=[*leaks, *alerts],
            empty_text=found.error or "No reads in this window yet",
        )
        return figure, resolution != "hour"

    @app.callback(
        Output("portal-save-message", "children"),
        Input("portal-save", "n_clicks"),
        State("portal-store", "data"),
        State("portal-daily", "value"),
        State("portal-period", "value"),
        State("portal-bill-threshold", "value"),
        State("portal-channels", "value"),
        State("portal-quiet-start", "value"),
        State("portal-quiet-end", "value"),
        prevent_initial_call=True,
    )
    def save(_n: int, store: dict[str, Any], *values: Any) -> Any:
        try:
            changes = settings_changes(*values)
        except FormProblem as exc:
            return figures.outcome(str(exc), "")
        found = auth.client(settings).update_alert_settings(store["account_id"], changes)
        return figures.outcome(found.error, "Saved. We will use these from now on.")
