"""Pure builders of what the pages show: data in, figure, table or text out. No I/O, no Dash
callbacks: each is tested without a browser.

Units everywhere: reads/s, gal (or kWh) per hour, seconds-minutes-hours of lag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

import plotly.graph_objects as go
from dash import html

from api.schemas import FlagPublic, LiveMetricsPublic, LivePublic, UsageByClassPublic

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
