"""Pure builders of what the pages show: data in, figure, table or text out. No I/O, no Dash
callbacks: each is tested without a browser.

Units everywhere: reads/s, gal (or kWh) per hour, seconds-minutes-hours of lag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from dash import html

from api.schemas import (
    AlertPublic,
    AlertSummaryPublic,
    BillPreviewPublic,
    FlagDetailPublic,
    FlagPublic,
    LiveMetricsPublic,
    LivePublic,
    UsageByClassPublic,
    UsageHistoryPublic,
)

NO_VALUE = "—"


def format_count(count: int) -> str:
    """12345 → '12,345'."""
    return f"{count:,}"


def format_rate(per_s: float | None) -> str:
    """Throughput in reads per second; None while there is nothing to measure it from."""
    if per_s is None:
        return "measuring…"
    return f"{per_s:,.1f} reads/s"


def format_duration(seconds: float) -> str:
    """A plain duration, two units at most: '45 s', '3 min 20 s', '2 h 5 min', '3 d 4 h'."""
    total = round(abs(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def format_lag(lag_s: float | None) -> str:
    """How far the newest read committed is behind the clock."""
    if lag_s is None:
        return "no reads yet"
    if lag_s < 0:  # a meter clock ahead of ours: say so rather than show a negative lag
        return f"0 s (newest read is {format_duration(lag_s)} in the future)"
    return format_duration(lag_s)


def format_time(value: datetime | None, tz: tzinfo) -> str:
    """'2026-03-01 01:00 CST' in the utility's time zone."""
    if value is None:
        return NO_VALUE
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def format_backlog(metrics: LiveMetricsPublic) -> tuple[str, str]:
    """The stream backlog as (value, explanation): reads published but not yet committed."""
    if metrics.backlog is None:
        return "not measured", metrics.backlog_note or "no Redis stream"
    waiting = sum(stream.backlog for stream in metrics.backlog)
    if all(stream.exact for stream in metrics.backlog):
        return f"{format_count(waiting)} reads", f"in {len(metrics.backlog)} stream(s)"
    return f"about {format_count(waiting)} reads", "estimated: too long to count exactly"


@dataclass(frozen=True)
class LiveNumbers:
    """The texts of the live page's number cards."""

    reads_per_s: str = NO_VALUE
    lag: str = NO_VALUE
    backlog: str = NO_VALUE
    backlog_hint: str = ""
    stored: str = NO_VALUE
    rejected: str = NO_VALUE
    unmatched: str = NO_VALUE
    duplicates: str = NO_VALUE
    as_of: str = ""


def live_numbers(live: LivePublic | None, tz: tzinfo) -> LiveNumbers:
    """Card texts for `live`, or dashes when there is no data."""
    if live is None:
        return LiveNumbers()
    metrics = live.metrics
    backlog, hint = format_backlog(metrics)
    newest = format_time(metrics.newest_read_ts, tz)
    return LiveNumbers(
        reads_per_s=format_rate(metrics.reads_per_s),
        lag=format_lag(metrics.lag_s),
        backlog=backlog,
        backlog_hint=hint,
        stored=format_count(metrics.totals.stored),
        rejected=format_count(metrics.totals.rejected),
        unmatched=format_count(metrics.totals.unmatched),
        duplicates=format_count(metrics.totals.duplicates),
        as_of=f"Updated {format_time(metrics.as_of, tz)}; newest read {newest}.",
    )


def _per(bucket: str) -> str:
    """'1 hour' → 'hour', '15 minutes' → '15 minutes'."""
    return bucket.removeprefix("1 ")


def usage_figure(
    usage: UsageByClassPublic | None, tz: tzinfo, *, empty_text: str = "No reads yet"
) -> go.Figure:
    """System usage by customer class, stacked per time bucket, one colour per class. Water
    (gal) and electricity (kWh) get their own axes; times are in `tz`. Without points, an
    empty chart that says `empty_text`."""
    figure = go.Figure()
    per = _per(usage.bucket) if usage else "hour"
    figure.update_layout(
        title=f"Usage by customer class, last {usage.hours:g} h of reads" if usage else "Usage",
        xaxis_title=f"Time ({tz})",
        yaxis_title=f"gal per {per}",
        legend_title="Customer class",
        hovermode="x unified",
        margin={"l": 60, "r": 30, "t": 60, "b": 50},
        uirevision="usage",  # keep the user's zoom across refreshes
    )
    if usage is None or not usage.points:
        figure.add_annotation(
            text=empty_text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5
        )
        figure.update_xaxes(showticklabels=False, showgrid=False)
        figure.update_yaxes(showticklabels=False, showgrid=False)
        return figure
    series: dict[tuple[str, str], tuple[list[datetime], list[float]]] = {}
    for point in usage.points:
        times, values = series.setdefault((point.unit, point.customer_class), ([], []))
        times.append(point.bucket.astimezone(tz).replace(tzinfo=None))  # plotly: wall clock
        values.append(point.usage)
    units = sorted({unit for unit, _ in series})
    for (unit, customer_class), (times, values) in sorted(series.items()):
        second_axis = unit != units[0]
        figure.add_trace(
            go.Scatter(
                x=times,
                y=values,
                name=f"{customer_class} ({unit})" if len(units) > 1 else customer_class,
                mode="lines",
                stackgroup=unit,
                yaxis="y2" if second_axis else "y",
                hovertemplate=f"%{{y:,.1f}} {unit} per {per}",
            )
        )
    figure.update_layout(yaxis_title=f"{units[0]} per {per}")
    if len(units) > 1:
        figure.update_layout(
            yaxis2={"title": f"{units[1]} per {per}", "overlaying": "y", "side": "right"}
        )
    return figure


FLAG_COLUMNS = (
    "Detected",
    "Meter",
    "Account",
    "Kind",
    "Severity",
    "Score",
    "Span",
    "Review",
    "Evidence",
)


def flag_rows(flags: Sequence[FlagPublic], tz: tzinfo) -> list[list[str]]:
    """The flags table's cells, in `FLAG_COLUMNS` order."""
    return [
        [
            format_time(flag.detected_at, tz),
            flag.meter_id,
            flag.account_id,
            flag.kind.replace("_", " "),
            flag.severity,
            f"{flag.score:.2f}",
            f"{format_time(flag.started_at, tz)} → "
            + (format_time(flag.ended_at, tz) if flag.ended_at else "ongoing"),
            flag.status,
            flag.evidence,
        ]
        for flag in flags
    ]


def flags_table(flags: Sequence[FlagPublic], tz: tzinfo) -> list[html.Thead | html.Tbody]:
    """Header and body of the newest-flags table."""
    head = html.Thead(html.Tr([html.Th(column) for column in FLAG_COLUMNS]))
    rows = flag_rows(flags, tz)
    if not rows:
        body = html.Tbody(html.Tr(html.Td("No flags yet.", colSpan=len(FLAG_COLUMNS))))
    else:
        body = html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows])
    return [head, body]


ALERT_COLUMNS = ("Created", "Account", "About", "Status", "Channels", "Attempts", "Message")
RULE_NAMES = {
    "daily": "daily use",
    "period": "use this billing period",
    "projected_bill": "projected bill",
    "leak": "leak",
    "burst": "burst pipe",
}


def rule_name(rule: str) -> str:
    """An alert rule in plain words."""
    return RULE_NAMES.get(rule, rule.replace("_", " "))


def alerts_table(alerts: Sequence[AlertSummaryPublic], tz: tzinfo) -> list[html.Thead | html.Tbody]:
    """Header and body of the live page's newest-alerts table."""
    head = html.Thead(html.Tr([html.Th(column) for column in ALERT_COLUMNS]))
    rows = [
        [
            format_time(alert.created_at, tz),
            alert.account_id,
            rule_name(alert.rule),
            alert.status,
            ", ".join(alert.channels) or "none",
            format_count(alert.attempts),
            alert.message,
        ]
        for alert in alerts
    ]
    return [head, _body(rows, len(ALERT_COLUMNS), "No alerts yet.")]


def _body(rows: Sequence[Sequence[Any]], width: int, empty: str) -> html.Tbody:
    if not rows:
        return html.Tbody(html.Tr(html.Td(empty, colSpan=width)))
    return html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows])


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], empty: str, **props: Any
) -> html.Table:
    """A plain table with a header; `empty` is said when there are no rows."""
    head = html.Thead(html.Tr([html.Th(column) for column in columns]))
    return html.Table([head, _body(rows, len(columns), empty)], className="mw-table", **props)


# --- money and usage ------------------------------------------------------------------------

CURRENCY_SIGNS = {"USD": "$", "CAD": "CA$", "AUD": "A$", "EUR": "€", "GBP": "£"}


def format_money(amount: Decimal | float | None, currency: str | None) -> str:
    """Decimal('1234.5'), 'USD' → '$1,234.50'; an unknown currency goes after the number."""
    if amount is None:
        return NO_VALUE
    value = Decimal(str(amount)).quantize(Decimal("0.01"))
    sign = "-" if value < 0 else ""
    number = f"{abs(value):,.2f}"
    symbol = CURRENCY_SIGNS.get(currency or "")
    if symbol:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number} {currency}" if currency else f"{sign}{number}"


def format_unit_price(price: Decimal, currency: str, unit: str) -> str:
    """Decimal('0.004000'), 'USD', 'gal' → '$0.004 per gal' (no trailing zeros)."""
    text = f"{price.normalize():f}"
    if len(text.partition(".")[2]) < 2:  # at least cents: 2 → 2.00, 0.5 → 0.50
        text = f"{price:.2f}"
    symbol = CURRENCY_SIGNS.get(currency)
    return f"{symbol}{text} per {unit}" if symbol else f"{text} {currency} per {unit}"


def format_usage(amount: float | Decimal | None, unit: str) -> str:
    """1234.567, 'gal' → '1,234.6 gal'; None (no reads) → 'no reads'."""
    if amount is None:
        return "no reads"
    value = float(amount)
    return f"{value:,.0f} {unit}" if abs(value) >= 1000 else f"{value:,.1f} {unit}"


def _wall(value: datetime, tz: tzinfo) -> datetime:
    """Local wall-clock time without tzinfo: plotly draws it as it reads."""
    return value.astimezone(tz).replace(tzinfo=None)


def _empty(figure: go.Figure, text: str) -> go.Figure:
    figure.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    figure.update_xaxes(showticklabels=False, showgrid=False)
    figure.update_yaxes(showticklabels=False, showgrid=False)
    return figure


PER = {"hour": "hour", "day": "day", "month": "month"}
# How far past its start a bucket reaches (a month: at most).
BUCKET_LENGTH = {"hour": timedelta(hours=1), "day": timedelta(days=1), "month": timedelta(days=31)}


@dataclass(frozen=True)
class Span:
    """A stretch of time to mark on a usage chart (a flag, a leak) or a moment (`end` None
    with `point`: an alert)."""

    label: str
    start: datetime
    end: datetime | None
    point: bool = False


def history_figure(
    history: UsageHistoryPublic | None,
    *,
    compare: bool,
    marks: Sequence[Span] = (),
    empty_text: str = "No reads in this window",
    now: datetime | None = None,
) -> go.Figure:
    """Usage per hour, day or month of one account (bars), with the same buckets a year
    earlier (a line) when `compare`, and `marks`: spans shaded (flags, leaks; an open one runs
    to `now`) and moments as markers (alerts). One chart per unit: the first series' unit."""
    figure = go.Figure()
    resolution = history.resolution if history else "day"
    figure.update_layout(
        margin={"l": 60, "r": 20, "t": 80, "b": 50},
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
        bargap=0.1,
    )
    series = history.series[0] if history and history.series else None
    if history is None or series is None or not any(b.usage is not None for b in series.buckets):
        figure.update_layout(title="Usage")
        return _empty(figure, empty_text)
    tz = history.timezone
    zone = ZoneInfo(tz)
    per = PER[resolution]
    x = [_wall(b.start, zone) for b in series.buckets]
    figure.add_trace(
        go.Bar(
            x=x,
            y=[b.usage for b in series.buckets],
            name="Usage",
            marker_color="#2b6cb0",
            hovertemplate=f"%{{y:,.1f}} {series.unit}",
        )
    )
    if compare:
        figure.add_trace(
            go.Scatter(
                x=x,
                y=[b.last_year_usage for b in series.buckets],
                name="Same time last year",
                mode="lines",
                line={"color": "#dd6b20", "width": 2},
                connectgaps=False,
                hovertemplate=f"%{{y:,.1f}} {series.unit}",
            )
        )
    figure.update_layout(
        title=f"Use per {per} ({series.unit})",
        xaxis_title=f"Time ({tz})",
        yaxis_title=f"{series.unit} per {per}",
    )
    top = max((b.usage or 0.0) for b in series.buckets) or 1.0
    end = now or datetime.now(zone)
    # marks outside the chart's window are left out, clipped to it otherwise: a shape beyond
    # the data would stretch the axis
    first = series.buckets[0].start
    last = series.buckets[-1].start + BUCKET_LENGTH[resolution]
    moments = [m for m in marks if m.point and first <= m.start <= last]
    for mark in marks:
        if mark.point or mark.start > last or (mark.end or end) < first:
            continue
        figure.add_vrect(
            x0=_wall(max(mark.start, first), zone),
            x1=_wall(min(mark.end or end, last), zone),
            fillcolor="#e53e3e",
            opacity=0.15,
            line_width=0,
            annotation_text=mark.label,
            annotation_position="top left",
        )
    if moments:
        figure.add_trace(
            go.Scatter(
                x=[_wall(m.start, zone) for m in moments],
                y=[top * 1.05] * len(moments),
                text=[m.label for m in moments],
                name="Alerts sent",
                mode="markers",
                marker={"symbol": "triangle-down", "size": 11, "color": "#c53030"},
                hovertemplate="%{text}<extra></extra>",
            )
        )
    return figure


def flag_spans(flags: Sequence[FlagPublic]) -> list[Span]:
    """Flags as shaded spans: 'leak (open)'."""
    return [
        Span(f"{f.kind.replace('_', ' ')} ({f.status})", f.started_at, f.ended_at) for f in flags
    ]


def alert_marks(alerts: Sequence[AlertPublic]) -> list[Span]:
    """Alerts as moments: 'Alert: daily use, 2026-03-01'."""
    return [
        Span(f"Alert: {rule_name(a.rule)} ({a.status})", a.detected_at, None, point=True)
        for a in alerts
    ]


# --- flags and their evidence ---------------------------------------------------------------

# An evidence chart shows the flag's span with this much before and after it.
EVIDENCE_MARGIN = timedelta(days=2)
# Longer than this, the evidence is shown per day rather than per hour (days).
EVIDENCE_HOURLY_DAYS = 21


def evidence_window(flag: FlagPublic, tz: tzinfo, now: datetime) -> tuple[str, date, date]:
    """(resolution, first local date, first local date after) of the chart of the intervals
    behind `flag`: hourly around a short flag, daily around a long one (an old leak), so that
    the chart never asks for more than a few hundred buckets."""
    ends = flag.ended_at or now
    first = (flag.started_at - EVIDENCE_MARGIN).astimezone(tz).date()
    last = (min(ends + EVIDENCE_MARGIN, max(now, ends))).astimezone(tz).date() + timedelta(days=1)
    if (last - first).days > EVIDENCE_HOURLY_DAYS:
        first = max(first, last - timedelta(days=700))
        return "day", first, last
    return "hour", first, last


def evidence_items(flag: FlagDetailPublic, tz: tzinfo) -> list[tuple[str, str]]:
    """What a clerk reads about a flag: (label, text) pairs, details in plain words."""
    items = [
        ("What", flag.kind.replace("_", " ")),
        ("Meter / account", f"{flag.meter_id} / {flag.account_id}"),
        ("Severity", f"{flag.severity} (score {flag.score:.2f})"),
        ("From", format_time(flag.started_at, tz)),
        ("Until", format_time(flag.ended_at, tz) if flag.ended_at else "still going on"),
        ("Detected", f"{format_time(flag.detected_at, tz)} (data time)"),
        ("Evidence", flag.evidence),
        (
            "Review",
            flag.status + (f" by {flag.status_by}: {flag.status_reason}" if flag.status_by else ""),
        ),
    ]
    for key, value in sorted(flag.details.items()):
        items.append(
            (key.replace("_", " "), f"{value:,}" if isinstance(value, float) else str(value))
        )
    return items


QUEUE_COLUMNS = ("Detected", "Account", "Meter", "Kind", "Severity", "Status", "Span", "Evidence")


def queue_rows(flags: Sequence[FlagDetailPublic], tz: tzinfo) -> list[list[str]]:
    """The flag queue's cells, in `QUEUE_COLUMNS` order."""
    return [
        [
            format_time(f.detected_at, tz),
            f.account_id,
            f.meter_id,
            f.kind.replace("_", " "),
            f.severity,
            f.status,
            format_time(f.started_at, tz)
            + " → "
            + (format_time(f.ended_at, tz) if f.ended_at else "ongoing"),
            f.evidence,
        ]
        for f in flags
    ]


# --- bills ---------------------------------------------------------------------------------


def bill_lines(preview: BillPreviewPublic) -> list[list[str]]:
    """The tier arithmetic, one row per bill line: description, quantity, price, amount."""
    if preview.bill is None:
        return []
    bill = preview.bill
    rows = [
        [
            line.description,
            f"{line.quantity:,} {line.unit}",
            format_money(line.price, bill.currency)
            if line.unit == "period"
            else format_unit_price(line.price, bill.currency, line.unit),
            format_money(line.amount, bill.currency),
        ]
        for line in bill.lines
    ]
    rows.append(
        ["Total", f"{bill.usage:,} {bill.unit}", "", format_money(bill.total, bill.currency)]
    )
    return rows


# --- page pieces -----------------------------------------------------------------------------


def facts(items: Sequence[tuple[str, str]], **props: Any) -> html.Dl:
    """Label: text pairs as a definition list."""
    children: list[html.Dt | html.Dd] = []
    for label, text in items:
        children += [html.Dt(label), html.Dd(text)]
    return html.Dl(children, className="mw-facts", **props)


def problem(text: str | None, **props: Any) -> html.Div:
    """A red banner saying what went wrong (hidden when `text` is None)."""
    return html.Div(text or "", className="mw-banner", role="alert", hidden=text is None, **props)


def outcome(error: str | None, done: str) -> html.Div:
    """The message after an action: what was done, or why not."""
    if error:
        return html.Div(error, className="mw-banner", role="alert")
    return html.Div(done, className="mw-ok", role="status")
