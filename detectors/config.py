"""Detector thresholds per customer class: the one place they are set.

Defaults follow published utility practice:

- Continuous-flow leak alerts in AMI customer portals use a minimum flow of about 1 gal/h
  sustained for 24 consecutive hours (some use 3 gal/h, or 48 hours for commercial accounts),
  e.g. the leak-alert rules described by WaterSmart/VertexOne, Sensus Analytics and
  Badger Meter's BEACON EyeOnWater. meterwatch learns each meter's own quiet flow and so can
  use a lower floor and a shorter span without crying wolf on customers who use water around
  the clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClassThresholds:
    # Smallest flow that counts as "water is running" for a continuous-flow leak (gal/h).
    leak_min_flow: float
    # How long flow must stay above the meter's quiet flow before it is a leak (hours).
    leak_min_hours: float


DEFAULT_CLASS = "residential"

THRESHOLDS: dict[str, ClassThresholds] = {
    "residential": ClassThresholds(leak_min_flow=0.5, leak_min_hours=8),
    "multifamily": ClassThresholds(leak_min_flow=1.0, leak_min_hours=12),
    "commercial": ClassThresholds(leak_min_flow=2.0, leak_min_hours=24),
    "irrigation": ClassThresholds(leak_min_flow=1.0, leak_min_hours=12),
}


def thresholds_for(customer_class: str) -> ClassThresholds:
    """The thresholds of a class; unknown classes get the residential ones."""
    return THRESHOLDS.get(customer_class, THRESHOLDS[DEFAULT_CLASS])
