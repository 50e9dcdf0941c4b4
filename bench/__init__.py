"""Benchmarks: each prints its figures next to a baseline measured in the same run.

`meterwatch bench NAME` runs one; `meterwatch bench all` (what `make bench` runs) runs them all.
Figures worth keeping go to docs/benchmarks.md with the command that reproduced them.
"""
