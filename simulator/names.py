"""Made-up customers: names, e-mail addresses and phone numbers that belong to nobody.

E-mail domains are the reserved `example.com` / `example.org`; phone numbers are in the
555-0100 to 555-0199 block that North American numbering keeps for fiction.
"""

from __future__ import annotations

import random

FIRST_NAMES = (
    "Ava", "Ben", "Carmen", "Dmitri", "Elena", "Farah", "Grace", "Hiro", "Isla", "Jamal",
    "Keiko", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq",
    "Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "José", "Zoë", "Siobhán", "Łukasz",
)  # fmt: skip
LAST_NAMES = (
    "Anderson", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ivanova",
    "Johnson", "Kim", "Lopez", "Miller", "Nguyen", "O'Brien", "Patel", "Quintero", "Rossi",
    "Smith", "Tanaka", "Usman", "Vega", "Walker", "Xu", "Young", "Zimmer", "Núñez", "Müller",
)  # fmt: skip
STREETS = (
    "Oak", "Maple", "Cedar", "Elm", "Lakeview", "River", "Hillcrest", "Park", "Main", "Mill",
    "Sunset", "Prairie", "Willow", "Station", "Harbor",
)  # fmt: skip
BUSINESSES = (
    "Bakery", "Dental Clinic", "Laundromat", "Car Wash", "Diner", "Print Shop", "Brewery",
    "Hair Salon", "Fitness Club", "Grocery", "Auto Repair", "Florist", "Day Care", "Pharmacy",
)  # fmt: skip
ROUND_THE_CLOCK = (
    "Hotel", "Inn & Suites", "Regional Hospital", "Medical Center", "Care Home", "Data Center",
)  # fmt: skip
AREA_CODES = ("312", "630", "708", "773", "815", "847", "224", "331")


def _slug(text: str) -> str:
    ascii_only = text.encode("ascii", "ignore").decode().lower()
    return "".join(c for c in ascii_only if c.isalnum())


def customer_name(customer_class: str, round_the_clock: bool, rng: random.Random) -> str:
    """A customer name fitting the class. A few people are written 'Last, First' (commas and
    quotes in CSV fields are part of real CIS exports)."""
    street = rng.choice(STREETS)
    if customer_class == "multifamily":
        return f"{street} {rng.choice(('Apartments', 'Court', 'Towers', 'Lofts'))} LLC"
    if customer_class == "irrigation":
        return f"{street} {rng.choice(('Park District', 'HOA', 'Golf Club', 'School'))}"
    if customer_class == "commercial":
        kind = rng.choice(ROUND_THE_CLOCK if round_the_clock else BUSINESSES)
        return f"{street} {kind}"
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if rng.random() < 0.05:
        return f"{last}, {first}"
    return f"{first} {last}"


def email_for(name: str, serial: int, rng: random.Random) -> str:
    """An address on a reserved domain, unique through `serial`."""
    words = [_slug(w) for w in name.replace(",", " ").split()]
    local = ".".join(w for w in words if w)[:30] or "customer"
    return f"{local}{serial}@{rng.choice(('example.com', 'example.org'))}"


def phone_for(rng: random.Random) -> str:
    """An E.164 number in the fictional 555-01XX block, e.g. +13125550142."""
    return f"+1{rng.choice(AREA_CODES)}55501{rng.randrange(100):02d}"
