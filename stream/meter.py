"""Per-meter state in the dataflow: duplicates, register conversion, detectors and flags.

Each meter's reads come here in the order they arrive. A read seen before becomes a
`DuplicateRead`; every other read becomes a `StoredRead`. Reads newer than any before feed the
register converter and the detectors, and the flag tracker turns the detectors' findings into
`FlagWrite`s. A late read (older than the newest seen) is stored but not fed to the models,
which see each meter's history once, in time order.

The state is snapshotted by Bytewax at every epoch for every meter touched in it, so
`MeterState.snapshot` returns a compact tuple of plain values, cheap to copy and to pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any

from bytewax.operators import StatefulBatchLogic

from detectors.bank import BankFactory, DetectorBank
from detectors.base import Finding, Interval, MeterContext
from detectors.feedback import Allowance
from detectors.gap import GapTracker
from detectors.lifecycle import FlagChange, FlagTracker
from detectors.register import RegisterConverter
from stream.matching import Assignment, MatchedRead
from stream.reads import Delivery
from stream.seen import SeenIntervals


@dataclass(slots=True)
class StoredRead:
    """A read to store. `vouched` says the meter state knows it is not stored yet (the fast
    path); otherwise the database decides whether it is a duplicate."""

    meter_id: str
    ts: datetime
    value: float | None
    reported_unit: str
    register: float | None
    quality: str | None
    account_id: str
    service_point_id: str
    vouched: bool
    delivery: Delivery


@dataclass(slots=True)
class DuplicateRead:
    meter_id: str
    ts: datetime
    value: float
    delivery: Delivery


@dataclass(slots=True)
class FlagWrite:
    meter_id: str
    account_id: str
    change: FlagChange


MeterOutput = StoredRead | DuplicateRead | FlagWrite
# meter id -> the use its customer or staff said is expected (stream.feedback.FeedbackCache)
ExpectedUse = Callable[[str], Allowance | None]


@lru_cache(maxsize=8192)
def _utc_offset(tz: tzinfo, hour: int) -> int:
    offset = datetime.fromtimestamp(hour * 3600, tz).utcoffset()
    return int(offset.total_seconds()) if offset else 0


def utc_offset_s(tz: tzinfo, epoch: int) -> int:
    """The utility's offset from UTC at `epoch` (seconds), cached by the hour."""
    return _utc_offset(tz, epoch // 3600)


@lru_cache(maxsize=4096)
def meter_context(
    customer_class: str, active: bool, utc_offset: int, register: bool
) -> MeterContext:
    """The (immutable) context of an interval; shared, since a few combinations cover all."""
    return MeterContext(customer_class, active, utc_offset, register)


_KINDS: dict[tuple[type, ...], tuple[str, ...]] = {}


def bank_kinds(bank: DetectorBank) -> tuple[str, ...]:
    """`bank.kinds`, computed once per combination of detector classes (kinds are class
    attributes)."""
    classes = tuple(type(d) for d in bank.detectors)
    kinds = _KINDS.get(classes)
    if kinds is None:
        kinds = _KINDS[classes] = bank.kinds
    return kinds


class MeterState:
    """Everything meterwatch remembers about one meter. `tz` is the utility's time zone (the
    detectors learn by local hour); `bank_factory` makes the detectors of a new occupant."""

    __slots__ = (
        "_context_key",
        "_last_context",
        "account_id",
        "bank",
        "bank_factory",
        "flags",
        "gaps",
        "kinds",
        "last_ts",
        "meter_id",
        "register",
        "seen",
        "tz",
    )

    def __init__(
        self,
        dedup_window_s: int,
        *,
        tz: tzinfo = UTC,
        bank_factory: BankFactory = DetectorBank,
    ) -> None:
        self.meter_id = ""
        self.tz = tz
        self.bank_factory = bank_factory
        self.seen = SeenIntervals(dedup_window_s)
        self.last_ts: int | None = None  # newest read fed to the models
        self.account_id: str | None = None  # the account the models learned on
        self.register: RegisterConverter | None = None
        self.bank = bank_factory()
        self.kinds = bank_kinds(self.bank)  # the kinds the bank's detectors report
        self.flags = FlagTracker()
        self.gaps = GapTracker()
        self._forget_context()

    def _forget_context(self) -> None:
        # the last interval's context and what it was made of (assignment, offset, register):
        # consecutive reads of a meter nearly always share it
        self._context_key: tuple[Assignment, int, bool] | None = None
        self._last_context = MeterContext()

    def process(self, matched: MatchedRead) -> list[MeterOutput]:
        reading, assignment = matched.reading, matched.assignment
        epoch = reading.epoch
        self.meter_id = reading.meter_id
        first = self.seen.add(epoch)
        if first is False:
            return [
                DuplicateRead(
                    reading.meter_id, reading.ts, reading.value * reading.factor, reading.delivery
                )
            ]
        last_ts = self.last_ts
        in_order = last_ts is None or epoch > last_ts
        changed: list[FlagChange] | None = None  # flags closed as the meter changed hands
        new_occupant = False
        if in_order and assignment.account_id != self.account_id:
            # A new occupant uses water differently: close what was open, learn afresh.
            if self.account_id is not None:
                changed = self.flags.close_all()
                self._new_bank(self.bank_factory())
                self.flags = FlagTracker()
                new_occupant = True
            self.account_id = assignment.account_id

        rollover: Finding | None = None
        seconds: int | None = None
        if reading.kind == "register":
            register: float | None = reading.value
            if self.register is None:
                self.register = RegisterConverter()
            delta: float | None = None
            if in_order:
                previous_ts = self.register.last_ts
                delta, rollover = self.register.convert(epoch, reading.value)
                if previous_ts is not None:
                    seconds = epoch - previous_ts
            value = None if delta is None else delta * reading.factor
        else:
            register = None
            value = reading.value * reading.factor
            if self.seen.grid > 0:
                seconds = self.seen.grid
            elif last_ts is not None:
                seconds = epoch - last_ts

        outputs: list[MeterOutput] = [
            StoredRead(
                reading.meter_id,
                reading.ts,
                value,
                reading.reported_unit,
                register,
                reading.quality,
                assignment.account_id,
                assignment.service_point_id,
                first is True,
                reading.delivery,
            )
        ]
        if changed:
            outputs.extend(self._writes(changed))
        if not in_order:
            filled = self.gaps.late(epoch)
            if filled:
                outputs.extend(self._writes(filled))
            if (
                value is not None
                and seconds
                and seconds > 0
                and assignment.account_id == self.account_id
            ):
                late = self.bank.late(
                    Interval(epoch, seconds, value),
                    self._context(assignment, epoch, reading.kind),
                    self.flags.open_kinds,
                )
                outputs.extend(self._writes(self.flags.observe(epoch, late, tuple(late))))
            return outputs
        # Reads missing while the meter changed hands went to the exception queue (an
        # overlapping or late assignment): they are not a gap of the new occupant's.
        self.last_ts = epoch
        gaps = self.gaps.on_time(epoch, self.seen.grid, None if new_occupant else last_ts)
        if gaps:
            outputs.extend(self._writes(gaps))
        open_kinds = self.flags.open_kinds
        if value is not None and seconds:
            findings = self.bank.update(
                Interval(epoch, seconds, value),
                self._context(assignment, epoch, reading.kind),
                open_kinds,
            )
        else:
            findings = {}
        if rollover is not None:
            findings["rollover"] = rollover
        # With nothing found and nothing open, observing changes nothing: skip the walk.
        if findings or open_kinds:
            kinds = self.kinds if self.register is None else (*self.kinds, "rollover")
            flag_changes = self.flags.observe(epoch, findings, kinds)
            if flag_changes:
                outputs.extend(self._writes(flag_changes))
        return outputs

    def _context(self, assignment: Assignment, epoch: int, kind: str) -> MeterContext:
        offset = _utc_offset(self.tz, epoch // 3600)  # `utc_offset_s`, one call fewer
        key = self._context_key
        register = kind == "register"
        if key is not None and key[0] is assignment and key[1] == offset and key[2] is register:
            return self._last_context
        self._context_key = (assignment, offset, register)
        self._last_context = context = meter_context(
            assignment.customer_class, assignment.active, offset, register
        )
        return context

    def _new_bank(self, bank: DetectorBank) -> None:
        self.bank = bank
        self.kinds = bank_kinds(bank)

    def _writes(self, changes: list[FlagChange]) -> list[FlagWrite]:
        return [FlagWrite(self.meter_id, self.account_id or "", c) for c in changes]

    def snapshot(self) -> tuple[Any, ...]:
        return (
            self.seen.__getstate__(),
            self.last_ts,
            self.account_id,
            None if self.register is None else self.register.__getstate__(),
            self.bank.__getstate__(),
            self.flags.__getstate__(),
            self.gaps.__getstate__(),
        )

    @classmethod
    def restore(
        cls,
        snapshot: tuple[Any, ...],
        *,
        tz: tzinfo = UTC,
        bank_factory: BankFactory = DetectorBank,
    ) -> MeterState:
        seen, last_ts, account_id, register, bank, flags, gaps = snapshot
        state = cls.__new__(cls)
        state.meter_id = ""
        state.tz = tz
        state.bank_factory = bank_factory
        state.seen = SeenIntervals.__new__(SeenIntervals)
        state.seen.__setstate__(seen)
        state.last_ts = last_ts
        state.account_id = account_id
        state.register = None
        if register is not None:
            state.register = RegisterConverter()
            state.register.__setstate__(register)
        restored = DetectorBank.__new__(DetectorBank)
        restored.__setstate__(bank)
        state._new_bank(restored)
        state.flags = FlagTracker.__new__(FlagTracker)
        state.flags.__setstate__(flags)
        state.gaps = GapTracker.__new__(GapTracker)
        state.gaps.__setstate__(gaps)
        state._forget_context()
        return state


class MeterLogic(StatefulBatchLogic[MatchedRead, MeterOutput, tuple[Any, ...]]):
    """Bytewax's handle on one meter's state. `expected` looks up the use the meter's
    customer or staff said is expected (stream/feedback.py), applied once per batch."""

    def __init__(self, state: MeterState, expected: ExpectedUse | None = None) -> None:
        self.state = state
        self.expected = expected

    def on_batch(self, values: list[MatchedRead]) -> tuple[list[MeterOutput], bool]:
        # In arrival order, as `stream.offline` does: sorting each batch would make the result
        # depend on where batches happen to split, which differs with the number of workers.
        outputs: list[MeterOutput] = []
        state = self.state
        if self.expected is not None and values:
            allowance = self.expected(values[0].reading.meter_id)
            if allowance != state.bank.expected:
                state.bank.expect(allowance)
        for matched in values:
            outputs.extend(state.process(matched))
        return outputs, StatefulBatchLogic.RETAIN

    def snapshot(self) -> tuple[Any, ...]:
        return self.state.snapshot()


def meter_logic_builder(
    dedup_window_s: int, tz: tzinfo = UTC, expected: ExpectedUse | None = None
) -> Callable[[tuple[Any, ...] | None], MeterLogic]:
    """The `stateful_batch` builder: a fresh meter, or one restored from a snapshot."""

    def build(resume: tuple[Any, ...] | None) -> MeterLogic:
        if resume is None:
            return MeterLogic(MeterState(dedup_window_s, tz=tz), expected)
        return MeterLogic(MeterState.restore(resume, tz=tz), expected)

    return build
