"""The detectors every meter runs, as one unit the dataflow and `meterwatch score` share."""

from __future__ import annotations

from typing import Any

from detectors.base import Detector, Finding, Interval, MeterContext
from detectors.leak import ContinuousFlowLeak
from detectors.reverse_flow import ReverseFlow


def default_detectors() -> list[Detector]:
    return [ContinuousFlowLeak(), ReverseFlow()]


class DetectorBank:
    """One meter's detectors; `update` returns every finding that holds, by kind."""

    __slots__ = ("detectors",)

    def __init__(self, detectors: list[Detector] | None = None) -> None:
        self.detectors = detectors if detectors is not None else default_detectors()

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for d in self.detectors for kind in d.kinds)

    def update(self, interval: Interval, context: MeterContext) -> dict[str, Finding]:
        found: dict[str, Finding] = {}
        for detector in self.detectors:
            for finding in detector.update(interval, context):
                found[finding.kind] = finding
        return found

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple((type(d), d.__getstate__()) for d in self.detectors)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        detectors = []
        for cls, detector_state in state:
            detector = cls.__new__(cls)
            detector.__setstate__(detector_state)
            detectors.append(detector)
        self.detectors = detectors
