"""The per-meter duplicate check agrees with a plain set wherever it gives an answer."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from stream.seen import SeenIntervals

DAY = 86_400


@given(
    st.lists(st.integers(min_value=0, max_value=24 * 60), min_size=1, max_size=300),
    st.sampled_from([900, 3600]),
)
def test_answers_match_a_set_of_everything_seen(slots: list[int], grid: int) -> None:
    seen = SeenIntervals(window_s=7 * DAY)
    truth: set[int] = set()
    newest = None
    for slot in slots:
        epoch = 1_700_000_000 // 3600 * 3600 + slot * grid
        answer = seen.add(epoch)
        if answer is None:
            # only for timestamps older than the window behind the newest one
            assert newest is not None and newest - epoch >= 7 * DAY
        else:
            assert answer == (epoch not in truth)
        truth.add(epoch)
        newest = epoch if newest is None else max(newest, epoch)


def test_irregular_timestamps_defer_to_the_database_for_late_reads() -> None:
    seen = SeenIntervals(window_s=DAY)
    assert seen.add(1_000_000) is True
    assert seen.add(1_000_007) is True  # 7 s apart: not a meter's interval grid
    assert seen.add(1_000_010) is True  # newer than anything: certainly new
    assert seen.add(1_000_003) is None  # older: the database decides


def test_state_survives_pickling() -> None:
    seen = SeenIntervals(window_s=DAY)
    for t in (3600, 7200, 10800):
        seen.add(t)
    restored = pickle.loads(pickle.dumps(seen))
    assert restored.add(7200) is False
    assert restored.add(14400) is True


def test_state_stays_small_for_35_days_of_15_minute_reads() -> None:
    seen = SeenIntervals(window_s=35 * DAY)
    for i in range(35 * 96):
        seen.add(1_700_000_100 // 900 * 900 + i * 900)
    assert len(pickle.dumps(seen.__getstate__())) < 600
