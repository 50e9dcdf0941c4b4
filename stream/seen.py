"""Which of one meter's recent intervals are already stored: a duplicate check without a
database round trip.

The timestamps of a meter's reads sit on a grid (every 15 minutes, every hour). The grid's
spacing is learned as the greatest common divisor of the differences seen, and one bit per grid
point over a trailing window records what was seen. That is 105 bytes for 35 days of hourly
reads, 420 bytes at 15 minutes. A timestamp older than the window, or a meter whose timestamps
do not sit on a grid of at least a minute, gets "cannot tell" and the database decides.

>>> seen = SeenIntervals(window_s=7 * 86400)
>>> [seen.add(t) for t in (3600, 7200, 3600, 14400, 10800, 10800)]
[True, True, False, True, True, False]
>>> seen.grid
3600
"""

from __future__ import annotations

from math import gcd
from typing import Any

MIN_GRID_S = 60
MAX_BITS = 4096
IRREGULAR = -1


class SeenIntervals:
    """`add(epoch)` answers True (first time), False (seen before) or None (cannot tell)."""

    __slots__ = ("bits", "grid", "mask", "top", "window_s")

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self.grid = 0  # spacing of the grid (s); 0 until two timestamps are seen
        self.top: int | None = None  # newest timestamp seen
        self.bits = 0  # bit i set: top - i * grid was seen
        self.mask = 1  # (1 << width) - 1: the bits the window keeps

    def _width(self) -> int:
        return min(self.window_s // self.grid + 1, MAX_BITS) if self.grid > 0 else 1

    def add(self, epoch: int) -> bool | None:
        top = self.top
        if top is None:
            self.top, self.bits = epoch, 1
            return True
        delta = epoch - top
        grid = self.grid
        if delta > 0 and grid > 0 and delta % grid == 0:
            # The common case, the next interval(s) on the grid already learned.
            self.bits = ((self.bits << (delta // grid)) | 1) & self.mask
            self.top = epoch
            return True
        if delta == 0:
            return False
        if self.grid == IRREGULAR:
            if delta > 0:
                self.top = epoch
                return True
            return None
        grid = gcd(grid, abs(delta))
        if grid < MIN_GRID_S:
            self.grid, self.bits, self.mask = IRREGULAR, 1, 1
            if delta > 0:
                self.top = epoch
                return True
            return None
        if grid != self.grid:
            self._regrid(grid)
        width = self._width()
        if delta > 0:
            self.bits = ((self.bits << (delta // grid)) | 1) & self.mask
            self.top = epoch
            return True
        index = -delta // grid
        if index >= width:
            return None
        if (self.bits >> index) & 1:
            return False
        self.bits |= 1 << index
        return True

    def _regrid(self, grid: int) -> None:
        old, bits, rebuilt, index = self.grid, self.bits, 0, 0
        self.grid = grid
        width = self._width()
        self.mask = (1 << width) - 1
        while bits:
            if bits & 1:
                position = index * old // grid if old > 0 else 0
                if position < width:
                    rebuilt |= 1 << position
            bits >>= 1
            index += 1
        self.bits = rebuilt

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.window_s, self.grid, self.top, self.bits)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.window_s, self.grid, self.top, self.bits = state
        self.mask = (1 << self._width()) - 1
