"""Detector thresholds per customer class: the one place they are set.

Defaults, and where they come from:

- Leak. AMI customer portals alert when flow stays at or above about 1 gal/h for 24
  consecutive hours (some use 3 gal/h, or 48 hours for commercial accounts): the continuous-
  flow rules described for WaterSmart/VertexOne, Sensus Analytics and Badger Meter's BEACON
  EyeOnWater, and the AWWA M22 / Water Research Foundation residential end-use studies, which
  put household leakage at a median of a few gal/h. meterwatch instead asks whether flow keeps
  running through the hours this meter is normally still; the evidence needed is a likelihood
  ratio (`leak_evidence`, natural log: 9 ≈ 8,000 : 1) and the flow that counts as running is
  `RUNNING_RATE` in profile.py. Commercial meters need a longer quiet stretch.
- Burst. A 5/8" residential meter's safe maximum continuous flow is 10 gpm (600 gal/h, AWWA
  C700); a burst is flow far above the meter's own peak for at least two hours. 100 gal/h is
  the lowest rate the leak-detection literature calls a main or service-line break in a home.
- Spike. An interval more than `spike_factor` times the meter's own peak, or above the meter
  class's physical maximum (AWWA C700 maximum flow: 20 gpm = 1,200 gal/h for 5/8" residential,
  160 gpm ≈ 9,600 gal/h for a 2" commercial meter), cannot be water that flowed: it is a meter
  or head-end error.
- Stopped meter / stuck register. No consumption for `stopped_days` while the meter's profile
  says it would normally have passed at least `stopped_min_volume` in that time (the usual
  VEE "zero consumption on an active account" check; 2 days residential, 4 days commercial
  so that a closed weekend is not a stopped meter).
- Usage anomaly. A day's use standardised against this meter's profile for those hours of the
  week (working day / weekend) reaching `anomaly_z` (a z-score of the day: a doubled day of a
  typical household scores about 5-9), or two raised days in a row (each z ≥ 2) whose
  combined z (Stouffer: the sum over √2) reaches 5 (`Z_TWO_DAYS` in usage_anomaly.py).
- Burst floors: 100 gal/h for a home (the rate above), 150 gal/h where the meter is larger.
- Sustained burst: a broken pipe runs until someone shuts it off, whereas heavy habits run
  an hour or two (a lawn sprinkler's zones, a tank filling); 3 hours of flow far above what
  the meter passes at those hours of the week is a burst even below the meter's own peak
  (set by that sprinkler). Not for irrigation accounts, whose controllers run for hours by
  design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClassThresholds:
    # log-likelihood ratio of "a leak keeps the meter running" over "this meter's usual
    # quiet hours" needed to flag a leak (natural log)
    leak_evidence: float
    # a quiet hour is one in which the meter normally runs at most this share of the time
    quiet_share: float
    # lowest flow a burst can have (gal/h), and how far above the meter's own peak it must be
    burst_min_rate: float
    burst_peak_factor: float
    # flow far above its hour of the week (8 spreads, at least `burst_min_rate`) for this
    # many hours is a burst even below the meter's peak (inf: never)
    burst_sustained_hours: float
    # an interval this many times the meter's peak, or above `max_rate`, is a spike
    spike_factor: float
    max_rate: float
    # no consumption for this many days, where the profile expects this much, is a stopped
    # meter (gal)
    stopped_days: float
    stopped_min_volume: float
    # a register that has not moved for this many days is stuck (a dial is never still
    # through a day of normal use, whereas interval consumption can be zero)
    stuck_register_days: float
    # usage anomaly: z-score of a day's use against the profile
    anomaly_z: float


DEFAULT_CLASS = "residential"

THRESHOLDS: dict[str, ClassThresholds] = {
    "residential": ClassThresholds(
        leak_evidence=7.0,
        quiet_share=0.2,
        burst_min_rate=100.0,
        burst_peak_factor=2.0,
        burst_sustained_hours=3.0,
        spike_factor=12.0,
        max_rate=1_200.0,
        stopped_days=1.5,
        stopped_min_volume=40.0,
        stuck_register_days=1.1,
        anomaly_z=8.0,
    ),
    "multifamily": ClassThresholds(
        leak_evidence=9.0,
        quiet_share=0.2,
        burst_min_rate=150.0,
        burst_peak_factor=2.0,
        burst_sustained_hours=3.0,
        spike_factor=12.0,
        max_rate=4_800.0,
        stopped_days=1.0,
        stopped_min_volume=100.0,
        stuck_register_days=1.0,
        anomaly_z=8.0,
    ),
    "commercial": ClassThresholds(
        leak_evidence=11.0,
        quiet_share=0.2,
        burst_min_rate=150.0,
        burst_peak_factor=2.0,
        burst_sustained_hours=3.0,
        spike_factor=12.0,
        max_rate=9_600.0,
        stopped_days=2.5,
        stopped_min_volume=100.0,
        stuck_register_days=2.5,
        anomaly_z=8.0,
    ),
    "irrigation": ClassThresholds(
        leak_evidence=9.0,
        quiet_share=0.2,
        burst_min_rate=150.0,
        burst_peak_factor=2.5,
        burst_sustained_hours=math.inf,
        spike_factor=15.0,
        max_rate=9_600.0,
        stopped_days=21.0,
        stopped_min_volume=500.0,
        stuck_register_days=21.0,
        anomaly_z=9.0,
    ),
}


def thresholds_for(customer_class: str) -> ClassThresholds:
    """The thresholds of a class; unknown classes get the residential ones."""
    return THRESHOLDS.get(customer_class, THRESHOLDS[DEFAULT_CLASS])
