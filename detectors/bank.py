"""The detectors every meter runs, with the profile they share, as one unit: what the
dataflow and `meterwatch score` run for each meter.

At each interval every detector scores it against the profile; then, unless an anomaly
that changes what the meter passes holds (`PROTECTED_BY`) or the interval may be an outlier
(a possible burst or spike), the profile learns it. Some findings explain others: during a
burst every hour also looks like a leak and a usage anomaly; a stopped or stuck meter makes
nonsense of use statistics. While such a finding holds, the findings it explains are not
opened (a flag of theirs already open stays open).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from detectors.base import Detector, Facts, Finding, Interval, MeterContext
from detectors.burst import Burst
from detectors.feedback import Allowance
from detectors.inactive import InactiveUsage
from detectors.leak import QuietHourLeak
from detectors.profile import MeterProfile
from detectors.reverse_flow import ReverseFlow
from detectors.spike import Spike
from detectors.stopped import StoppedMeter
from detectors.stuck import StuckReading
from detectors.usage_anomaly import UsageAnomaly

# finding kind -> the kinds it explains away
EXPLAINS: dict[str, tuple[str, ...]] = {
    "burst": ("leak", "spike", "usage_anomaly"),
    "stopped_meter": ("leak", "usage_anomaly"),
    "stuck_reading": ("leak", "usage_anomaly", "stopped_meter"),
    # a leak through a closed weekend repeats its rate: an open leak explains the repeats
    "leak": ("usage_anomaly", "stuck_reading"),
    "spike": ("usage_anomaly",),
    "inactive_usage": ("leak", "spike", "burst", "usage_anomaly", "stuck_reading"),
}
# a detector still gathering evidence for these kinds holds back the kinds they explain
SUSPICION_EXPLAINS: dict[str, tuple[str, ...]] = {
    # a leak through a closed weekend repeats its rate: an open leak explains the repeats
    "leak": ("usage_anomaly", "stuck_reading"),
    "stuck_reading": ("leak", "usage_anomaly"),
    "burst": ("spike", "usage_anomaly", "leak"),
}


# While one of these holds, the profile does not learn: they change what the meter passes.
PROTECTED_BY = (
    "leak",
    "burst",
    "spike",
    "stopped_meter",
    "stuck_reading",
    "usage_anomaly",
    "inactive_usage",
)
# A detector suspecting one of these (the first hour of a possible burst, a possible spike)
# keeps that interval out of the profile: one outlier would skew its means for weeks. Other
# suspicions do not: a habit that looks odd at first (watering at dawn twice a week) must be
# learned, or it looks odd forever.
OUTLIER_KINDS = ("burst", "spike")
PROTECTED_SET = frozenset(PROTECTED_BY)
OUTLIER_SET = frozenset(OUTLIER_KINDS)


# The tests that judge flow against what the meter normally passes see it with the expected
# use taken off; the others (reverse flow, spikes, stopped and stuck meters) see raw values.
ALLOWANCE_APPLIES = (QuietHourLeak, Burst, UsageAnomaly)
# Flow of at least this share of the allowance shows the expected use running.
RUNNING_SHARE = 0.8


def default_detectors() -> list[Detector]:
    return [
        QuietHourLeak(),
        Burst(),
        Spike(),
        ReverseFlow(),
        StoppedMeter(),
        StuckReading(),
        InactiveUsage(),
        UsageAnomaly(),
    ]


class DetectorBank:
    """One meter's profile and detectors. `update` returns the findings that hold, by kind."""

    __slots__ = ("_expected_on", "detectors", "expected", "profile")

    def __init__(
        self,
        detectors: list[Detector] | None = None,
        profile: MeterProfile | None = None,
    ) -> None:
        self.detectors = detectors if detectors is not None else default_detectors()
        self.profile = profile or MeterProfile()
        # flow the customer or staff said is expected, by local hour (detectors/feedback.py)
        self.expected: Allowance | None = None
        self._expected_on = False  # whether the last interval showed the expected use running

    def expect(self, allowance: Allowance | None) -> None:
        """Allow this expected use from now on (None: nothing beyond the profile). A new
        allowance explains away the leak evidence gathered so far: it was that use."""
        if allowance != self.expected:
            for detector in self.detectors:
                if "leak" in detector.kinds:
                    detector.explained("leak")
        self.expected = allowance

    def _allowed(self, interval: Interval, at: Facts) -> Interval:
        """The interval with the expected use taken off (never below zero), when the flow
        shows it running: an hour of ordinary use below it (before the cooler is switched on
        for the summer) is left as it is, or the profile would learn that the meter is still
        whenever its use is small."""
        assert self.expected is not None
        allowed = self.expected[at.hour] * interval.seconds / 3600.0
        running = allowed > 0 and interval.value >= RUNNING_SHARE * allowed
        # the expected use runs for a while (a cooler, a sprinkler's cycle): one hour of
        # ordinary use that happens to reach it is not it
        was_running, self._expected_on = self._expected_on, running
        if not (running and was_running):
            return interval
        return Interval(interval.ts, interval.seconds, max(0.0, interval.value - allowed))

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(kind for d in self.detectors for kind in d.kinds))

    def update(
        self, interval: Interval, context: MeterContext, open_kinds: Collection[str] = ()
    ) -> dict[str, Finding]:
        profile = self.profile
        raw_at = at = Facts(interval, context)  # worked out once, for every detector
        raw_interval = interval
        if self.expected is not None:
            interval = self._allowed(interval, at)
            if interval is not raw_interval:
                at = raw_at.with_rate(interval)
        found: dict[str, Finding] = {}
        suspected: list[str] | None = None  # kinds a detector is gathering evidence for
        for detector in self.detectors:
            if interval is raw_interval or type(detector) in ALLOWANCE_APPLIES:
                findings = detector.update(interval, context, profile, at)
            else:
                findings = detector.update(raw_interval, context, profile, raw_at)
            if findings:
                for finding in findings:
                    found[finding.kind] = finding
            if detector.suspicious:
                if suspected is None:
                    suspected = []
                suspected.extend(detector.kinds)
        # Most intervals: nothing found, nothing suspected, nothing to explain away.
        outlier = False
        if found or suspected:
            held_back: set[str] = set()
            if suspected:
                outlier = not OUTLIER_SET.isdisjoint(suspected)
                for kind in suspected:
                    held_back.update(SUSPICION_EXPLAINS.get(kind, ()))
            explained: set[str] = set()
            for kind in found:
                explained.update(EXPLAINS.get(kind, ()))
            held_back.update(explained)
            if "usage_anomaly" in explained:
                # what a finding explains is not use: it leaves the usage day's sums
                for detector in self.detectors:
                    if isinstance(detector, UsageAnomaly):
                        detector.discount()
            for kind in held_back:
                if kind in open_kinds:
                    continue
                found.pop(kind, None)
                suspicion_only = kind not in explained
                for detector in self.detectors:
                    if kind not in detector.kinds:
                        continue
                    if suspicion_only:
                        detector.held_back(kind)
                    else:
                        detector.explained(kind)
        if not outlier and (not found or PROTECTED_SET.isdisjoint(found)):
            # the peak first, so that heavy flow is judged against a peak that includes it
            profile.observe_peak(interval, at.rate)
            if interval.value >= 0:
                hold_running = suspected is not None and "leak" in suspected
                # (positional arguments: a faster call than keywords, once per interval)
                profile.learn(interval, context, hold_running, at)
        elif outlier and at.rate <= at.limits.max_rate:
            # heavy flow kept out of the means (a possible burst: a sprinkler's first run)
            # still shows what this hour can pass; a physically impossible interval does not
            profile.note_heavy(interval, context, at)
        return found

    def late(
        self, interval: Interval, context: MeterContext, open_kinds: Collection[str] = ()
    ) -> dict[str, Finding]:
        """Findings complete in one interval (a spike, a reverse-flow interval) on a read
        that arrived after newer ones: the detectors have moved on and do not learn it, but
        an impossible or negative interval is one whenever it arrives."""
        found: dict[str, Finding] = {}
        for detector in self.detectors:
            if isinstance(detector, Spike) and context.active:
                finding = detector.late(interval, context, self.profile)
            elif isinstance(detector, ReverseFlow) and "reverse_flow" not in open_kinds:
                finding = detector.late(interval)
            else:
                continue
            if finding is not None:
                found[finding.kind] = finding
        return found

    def __getstate__(self) -> tuple[Any, ...]:
        return (
            self.profile.__getstate__(),
            tuple((type(d), d.__getstate__()) for d in self.detectors),
            self.expected,
            self._expected_on,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        profile_state, detector_states, self.expected, self._expected_on = state
        self.profile = MeterProfile.__new__(MeterProfile)
        self.profile.__setstate__(profile_state)
        detectors = []
        for cls, detector_state in detector_states:
            detector = cls.__new__(cls)
            detector.__setstate__(detector_state)
            detectors.append(detector)
        self.detectors = detectors


BankFactory = Callable[[], DetectorBank]
