"""The dataflow, built in one function: one straight way for the data.

deliveries → parse → match → per-meter state → one transactional sink
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, tzinfo
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source

from stream.feedback import FeedbackCache
from stream.matching import MatchedRead, Matcher, UnmatchedRead
from stream.meter import meter_logic_builder
from stream.reads import Delivery, Reading, Rejected, parse_delivery
from stream.sink import AfterStore, DatabaseSink, SinkItem

DAY_S = 86_400


def parse_batch(deliveries: list[Delivery]) -> list[Reading | Rejected]:
    return [parse_delivery(d) for d in deliveries]


def is_reading(item: Reading | Rejected) -> TypeGuard[Reading]:
    return isinstance(item, Reading)


def is_matched(item: MatchedRead | UnmatchedRead) -> TypeGuard[MatchedRead]:
    return isinstance(item, MatchedRead)


def meter_key(item: MatchedRead) -> str:
    return item.reading.meter_id


def drop_key(keyed: tuple[str, Any]) -> Any:
    return keyed[1]


def build_flow(
    source: Source[Delivery],
    database_url: str,
    *,
    dedup_window_days: int = 35,
    assignments_refresh_s: float = 30.0,
    flow_id: str = "meterwatch",
    tz: tzinfo = UTC,
    after_store: Sequence[AfterStore] | None = None,
) -> Dataflow:
    """The dataflow from `source` to the database. `after_store` runs in each batch's
    transaction (see `stream.sink.AfterStore`); None: the alerts hook (`alerts.decide`)."""
    if after_store is None:
        from alerts.decide import alert_hooks
        from meterwatch.settings import get_settings

        after_store = alert_hooks(database_url, get_settings())
    matcher = Matcher(database_url, assignments_refresh_s)
    # expected use (dismissed flags, declarations) teaches the meters' detectors
    feedback = FeedbackCache(database_url, assignments_refresh_s, tz)
    flow = Dataflow(flow_id)
    deliveries = op.input("deliveries", flow, source)
    # Delivery: one row as it arrived
    parsed = op.flat_map_batch("parse", deliveries, parse_batch)
    # Reading | Rejected
    valid = op.branch("valid", parsed, is_reading)
    matched = op.flat_map_batch("match", valid.trues, matcher.match_batch)
    # MatchedRead | UnmatchedRead
    assigned = op.branch("assigned", matched, is_matched)
    by_meter = op.key_on("by_meter", assigned.trues, meter_key)
    # (meter_id, MatchedRead)
    results = op.stateful_batch(
        "meter",
        by_meter,
        meter_logic_builder(dedup_window_days * DAY_S, tz, feedback.allowance_for),
    )
    # (meter_id, StoredRead | DuplicateRead | FlagWrite)
    outputs = op.map("unkey", results, drop_key)
    everything: Stream[SinkItem] = op.merge("everything", outputs, assigned.falses, valid.falses)
    # StoredRead | DuplicateRead | FlagWrite | UnmatchedRead | Rejected
    sink = DatabaseSink(database_url, after_store=after_store)
    # (this worker's sink partition, item): each worker writes what it produced
    op.output("store", op.map("to_writer", everything, sink.route), sink)
    return flow


def database_sinks(flow: Dataflow) -> list[DatabaseSink]:
    """The database sinks of a flow built here (for `DatabaseSink.prepare`)."""
    found: list[DatabaseSink] = []
    steps: list[Any] = list(flow.substeps)
    while steps:
        step = steps.pop()
        sink = getattr(step, "sink", None)
        if isinstance(sink, DatabaseSink):
            found.append(sink)
        steps.extend(getattr(step, "substeps", ()))
    return found
