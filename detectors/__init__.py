"""Per-meter detectors: pure models over one meter's intervals, no I/O, no engine.

`bank.DetectorBank` is what the dataflow and `meterwatch score` run for each meter.
"""
