"""A simulated utility: AMI head-end and CIS, with labelled anomalies and an exact answer key.

The stand-in for a utility's systems in `meterwatch simulate`, the end-to-end tests, the
detector benchmark and the live demo::

    from simulator import SimulationConfig, Simulation, write_scenario

    cfg = SimulationConfig(meters=200, days=30, seed=7, start=datetime(2026, 3, 1, tzinfo=UTC))
    sim = Simulation(cfg)
    sim.accounts()                 # rows of accounts.csv
    sim.meter_assignments()        # rows of meters.csv
    sim.clean_reads()              # every read once, in time order, no delivery defects
    sim.reads_between(t0, t1)      # the same, t0 < ts <= t1 (the live demo's feed)
    sim.labels()                   # the injected anomalies
    write_scenario("out/", cfg)    # the four files, reads WITH delivery defects

`answer_key.json` holds the config, the window, the expected pipeline counts (`counts`,
`rejected_reasons`), the labels (`labels.anomalies`, `labels["24/7 users"]`,
`labels.register_meters`, `labels.rollovers`, `labels.clean_meters`) and where the exception
reads come from (`exceptions`). See `simulator.scenario.COUNTING_RULES` for how the counts are
defined.
"""

from __future__ import annotations

from simulator.config import ANOMALY_KINDS, DEFAULT_ANOMALY_WEIGHTS, SimulationConfig
from simulator.scenario import (
    COUNTING_RULES,
    REJECT_REASONS,
    UNMATCHED_REASONS,
    ExpectedCounts,
    write_scenario,
)
from simulator.simulation import (
    ACCOUNT_COLUMNS,
    METER_COLUMNS,
    READ_COLUMNS,
    Label,
    Simulation,
)

__all__ = [
    "ACCOUNT_COLUMNS",
    "ANOMALY_KINDS",
    "COUNTING_RULES",
    "DEFAULT_ANOMALY_WEIGHTS",
    "METER_COLUMNS",
    "READ_COLUMNS",
    "REJECT_REASONS",
    "UNMATCHED_REASONS",
    "ExpectedCounts",
    "Label",
    "Simulation",
    "SimulationConfig",
    "write_scenario",
]
