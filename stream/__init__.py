"""The dataflow: head-end reads → parse → match → per-meter state → database.

`flow.build_flow` is the one place the flow is put together; `runner` runs it over a file,
the Redis Stream or the simulator.
"""
