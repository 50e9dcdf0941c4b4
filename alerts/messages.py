"""The words of an alert: one SMS and one email per alert, short, concrete and actionable.

Every message gives the numbers (usage and the customer's threshold, or the leak's flow), what
it costs, what to check, and the link to the customer's usage page. The SMS is the first of a
few versions, from the fullest to the plainest, that fits one GSM-7 segment (160 characters;
`^{}[]~|\\€` count twice); only when even the plainest does not (a very long link) does it take
more than one segment. The SMS text is also the alert's `message` in the export.

>>> facts = AlertFacts(rule="daily", utility="City Water", customer="Ada", account_id="A1",
...     unit="gal", currency="USD", link="https://city.example/usage", usage=1240.0,
...     threshold=500.0, cost=12.4, day=date(2026, 3, 3))
>>> text = sms_text(facts)
>>> print(text)  # doctest: +NORMALIZE_WHITESPACE
City Water: 1,240 gal used Mar 3, over your 500 gal/day alert (est. $12). Check toilets,
taps, irrigation, hoses: https://city.example/usage
>>> gsm7_length(text) <= 160
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# GSM 03.38: the basic character set (one septet each) and its extension table (two each).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")
SMS_SEGMENT = 160  # GSM-7 characters in a single-segment SMS

_CURRENCY_SYMBOLS = {"USD": "$", "CAD": "$", "AUD": "$", "NZD": "$", "GBP": "£", "EUR": "€"}

# What to look at first, by commodity (short enough for an SMS).
_CHECKS = {
    "gal": ("toilets, taps, irrigation, hoses", "toilets, taps, irrigation"),
    "kWh": ("heating, cooling, pool pumps, heaters", "heating, cooling, pumps"),
}
_EMAIL_CHECKS = {
    "gal": [
        "Toilets: listen for running water; a few drops of food colouring in the tank that "
        "show up in the bowl without flushing mean a leaking flapper.",
        "Taps, showers and outdoor hoses left running or dripping.",
        "Irrigation: a timer that runs too long or too often, a broken sprinkler head.",
        "Pools, water softeners and evaporative coolers that keep refilling.",
    ],
    "kWh": [
        "Heating and cooling: thermostat settings, space heaters left on.",
        "Pool and spa pumps, well pumps, and heaters on timers.",
        "Appliances left running: dryers, kilns, freezers with a door ajar.",
    ],
}


def gsm7_length(text: str) -> int | None:
    """Septets `text` takes in GSM-7, or None when it has a character GSM-7 cannot carry (the
    SMS then goes as UCS-2, 70 characters a segment)."""
    length = 0
    for char in text:
        if char in _GSM7_BASIC:
            length += 1
        elif char in _GSM7_EXTENDED:
            length += 2
        else:
            return None
    return length


def sms_segments(text: str) -> int:
    """How many SMS segments `text` needs (GSM-7 where it can, UCS-2 otherwise).

    >>> sms_segments("x" * 160), sms_segments("x" * 161), sms_segments("é" * 70)
    (1, 2, 1)
    >>> sms_segments("ą" * 71)
    2
    """
    septets = gsm7_length(text)
    if septets is not None:
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def _gsm7_safe(text: str) -> str:
    """`text` with the characters GSM-7 lacks replaced (a customer's or utility's name), so
    that one stray character never turns an SMS into three UCS-2 segments."""
    replacements = {"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."}
    out = []
    for char in text:
        char = replacements.get(char, char)
        out.append(char if char in _GSM7_BASIC or char in _GSM7_EXTENDED else "?")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """Everything a message says about one alert. Which fields are set depends on the rule:
    `daily` (usage, threshold, cost, day), `period` (usage, threshold, cost, period),
    `projected_bill` (usage, projected_usage, projected_amount, bill_threshold, period),
    `leak` and `burst` (meter_id, leak_rate, hours, volume_lost, cost, severity)."""

    rule: str
    utility: str
    customer: str
    account_id: str
    unit: str
    currency: str
    link: str
    usage: float | None = None
    threshold: float | None = None
    cost: float | None = None
    day: date | None = None
    period_start: date | None = None
    period_end: date | None = None
    projected_usage: float | None = None
    projected_amount: float | None = None
    bill_threshold: float | None = None
    meter_id: str | None = None
    leak_rate: float | None = None
    hours: float | None = None
    volume_lost: float | None = None
    severity: str | None = None
    late: bool = False


def quantity(value: float, unit: str) -> str:
    """A usage as people read it: `1,240 gal`, `8.5 kWh`."""
    if abs(value) >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}".replace(".0 ", " ")


def money(amount: float, currency: str) -> str:
    """`$12.40`, `$1,250`, `CHF 12.40`: cents below 100, whole amounts above."""
    symbol = _CURRENCY_SYMBOLS.get(currency)
    number = f"{amount:,.0f}" if abs(amount) >= 100 else f"{amount:,.2f}"
    return f"{symbol}{number}" if symbol else f"{currency} {number}"


def short_date(day: date) -> str:
    return f"{day:%b} {day.day}"


def _span(start: date | None, end: date | None) -> str:
    if start is None or end is None:
        return ""
    if start.month == end.month:
        return f"{short_date(start)}-{end.day}"
    return f"{short_date(start)}-{short_date(end)}"


def _est(amount: float | None, currency: str, suffix: str = "") -> str:
    """` (est. $43)`: a cost estimate in an SMS, whole units from 10 up ("~" would take two
    GSM-7 septets)."""
    if not amount:
        return ""
    shown = (
        money(round(amount), currency).replace(".00", "")
        if amount >= 10
        else money(amount, currency)
    )
    return f" (est. {shown}{suffix})"


def _sms_versions(f: AlertFacts) -> list[str]:
    """The SMS from fullest to plainest; the first that fits one segment is sent. What goes
    first: the advice in full, then the cost estimate; the numbers and the link always stay."""
    name = _gsm7_safe(f.utility)
    unit = f.unit
    checks_long, checks_short = _CHECKS.get(unit, _CHECKS["gal"])
    link = f.link
    if f.rule == "daily":
        assert f.usage is not None and f.threshold is not None and f.day is not None
        head = (
            f"{name}: {quantity(f.usage, unit)} used {short_date(f.day)}, over your "
            f"{quantity(f.threshold, unit)}/day alert"
        )
        cost = _est(f.cost, f.currency)
        return [
            f"{head}{cost}. Check {checks_long}: {link}",
            f"{head}{cost}. Check {checks_short}: {link}",
            f"{head}. Check {checks_short}: {link}",
            f"{head}. Check for leaks: {link}",
            f"{head}. {link}",
        ]
    if f.rule == "period":
        assert f.usage is not None and f.threshold is not None
        head = (
            f"{name}: {quantity(f.usage, unit)} used {_span(f.period_start, f.period_end)}, "
            f"over your {quantity(f.threshold, unit)} period alert"
        )
        cost = _est(f.cost, f.currency, " so far")
        return [
            f"{head}{cost}. See your use: {link}",
            f"{head}{cost}. {link}",
            f"{head}. {link}",
        ]
    if f.rule == "projected_bill":
        assert f.projected_amount is not None and f.bill_threshold is not None
        head = (
            f"{name}: your {_span(f.period_start, f.period_end)} bill is on track for "
            f"{money(f.projected_amount, f.currency)}, over your "
            f"{money(f.bill_threshold, f.currency)} alert"
        )
        used = f"; {quantity(f.usage, unit)} so far" if f.usage is not None else ""
        return [
            f"{head}{used}. Ways to save: {link}",
            f"{head}{used}. {link}",
            f"{head}. {link}",
        ]
    if f.rule in ("leak", "burst"):
        rate = quantity(f.leak_rate or 0.0, unit) + "/h"
        hours = f"{f.hours:,.0f} h" if f.hours is not None else "hours"
        meter = f", meter {_gsm7_safe(f.meter_id)}" if f.meter_id else ""
        if f.rule == "burst":
            head = f"{name}: URGENT: {rate} for {hours}{meter}"
            return [
                f"{head}. Burst pipe? Shut your main valve, call a plumber: {link}",
                f"{head}. Shut your main valve: {link}",
                f"{name}: URGENT: {rate} for {hours}. Shut your main valve: {link}",
                f"{head}. {link}",
            ]
        head = f"{name}: possible leak{meter}: {rate} nonstop {hours}"
        cost = _est(f.cost, f.currency)
        return [
            f"{head}{cost}. Check {checks_long}: {link}",
            f"{head}{cost}. Check {checks_short}: {link}",
            f"{head}. Check {checks_short}: {link}",
            f"{head}{cost}. {link}",
            f"{head}. {link}",
        ]
    raise ValueError(f"unknown alert rule {f.rule!r}")


def sms_text(facts: AlertFacts) -> str:
    """The SMS for an alert: the fullest version that fits one GSM-7 segment, else the plainest."""
    versions = _sms_versions(facts)
    for text in versions:
        if sms_segments(text) == 1:
            return text
    return versions[-1]


def _long_date(day: date) -> str:
    return f"{day:%A, %B} {day.day}, {day.year}"


def email_text(facts: AlertFacts) -> tuple[str, str]:
    """The email for an alert: (subject, plain-text body)."""
    f = facts
    unit = f.unit
    late = (
        " (these meter reads reached us late, after the day was over)"
        if f.late and f.rule == "daily"
        else " (some meter reads reached us late)"
        if f.late
        else ""
    )
    checks = _EMAIL_CHECKS.get(unit, _EMAIL_CHECKS["gal"])
    greeting = f"Hello {f.customer}," if f.customer else "Hello,"
    if f.rule == "daily":
        assert f.usage is not None and f.threshold is not None and f.day is not None
        subject = (
            f"{quantity(f.usage, unit)} used on {short_date(f.day)}: over your daily alert of "
            f"{quantity(f.threshold, unit)}"
        )
        cost = f" That is about {money(f.cost, f.currency)} at your rate." if f.cost else ""
        lead = (
            f"On {_long_date(f.day)} account {f.account_id} used {quantity(f.usage, unit)}, "
            f"more than the daily alert of {quantity(f.threshold, unit)} you set{late}.{cost}"
        )
    elif f.rule == "period":
        assert f.usage is not None and f.threshold is not None
        subject = (
            f"{quantity(f.usage, unit)} used this billing period: over your alert of "
            f"{quantity(f.threshold, unit)}"
        )
        cost = f" So far that is about {money(f.cost, f.currency)}." if f.cost else ""
        lead = (
            f"In the billing period {_span(f.period_start, f.period_end)} account "
            f"{f.account_id} has used {quantity(f.usage, unit)}, more than the alert of "
            f"{quantity(f.threshold, unit)} you set{late}.{cost}"
        )
    elif f.rule == "projected_bill":
        assert f.projected_amount is not None and f.bill_threshold is not None
        amount = money(f.projected_amount, f.currency)
        subject = f"Your bill is headed for about {amount}: over your alert of " + money(
            f.bill_threshold, f.currency
        )
        used = quantity(f.usage, unit) if f.usage is not None else "your use"
        projected = (
            f" (about {quantity(f.projected_usage, unit)} in all)"
            if f.projected_usage is not None
            else ""
        )
        lead = (
            f"Account {f.account_id} has used {used} so far in the billing period "
            f"{_span(f.period_start, f.period_end)}. At that pace the period ends at about "
            f"{amount}{projected}, more than the {money(f.bill_threshold, f.currency)} alert "
            f"you set{late}. This is an estimate, not your bill."
        )
    elif f.rule in ("leak", "burst"):
        rate = quantity(f.leak_rate or 0.0, unit) + " per hour"
        hours = f"{f.hours:,.0f} hours" if f.hours is not None else "hours"
        meter = f" meter {f.meter_id}" if f.meter_id else " your meter"
        lost = (
            f" About {quantity(f.volume_lost, unit)} more than usual has gone through so far"
            + (f", about {money(f.cost, f.currency)}." if f.cost else ".")
            if f.volume_lost
            else ""
        )
        if f.rule == "burst":
            subject = f"URGENT: very high water flow at{meter} - a burst pipe?"
            lead = (
                f"Water has been flowing through{meter} (account {f.account_id}) at "
                f"{rate} for {hours}.{lost} If you are not using that much water, turn off "
                "your main shut-off valve now and call a plumber."
            )
        else:
            subject = f"Possible leak: water has run nonstop for {hours} at{meter}"
            lead = (
                f"Water has not stopped flowing through{meter} (account {f.account_id}) for "
                f"{hours}, not even at night: at least {rate}.{lost} That usually means a "
                "leak."
            )
    else:
        raise ValueError(f"unknown alert rule {f.rule!r}")
    lines = [
        greeting,
        "",
        lead,
        "",
        "What to check:",
        *[f"- {check}" for check in checks],
        "",
        f"See your usage hour by hour: {f.link}",
        "",
        "You get this message because of the usage alerts on your account. Change your "
        f"thresholds, quiet hours or channels, or stop these alerts, at {f.link}",
        "",
        f"{f.utility}",
    ]
    return f"{f.utility}: {subject}", "\n".join(lines) + "\n"
