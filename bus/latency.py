"""A window of recent durations, summarised as the p50/p99 the status messages carry.

>>> from facewire.bus.latency import LatencyWindow
>>> w = LatencyWindow(size=3)
>>> w.extend([5.0, 1.0, 2.0, 3.0])   # the oldest falls out
>>> w.percentiles()
Percentiles(p50=2.0, p99=2.98, n=3)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

import numpy as np

from facewire.bus.messages import Percentiles


class LatencyWindow:
    """The last ``size`` values (ms). Appended on one thread, summarised on another:
    both under its lock, so a reader never sees the deque change under it."""

    def __init__(self, size: int = 1000) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)

    def extend(self, values: Iterable[float]) -> None:
        with self._lock:
            self._values.extend(values)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def percentiles(self, digits: int = 3) -> Percentiles:
        """p50 and p99 (``None`` while empty) over the window, rounded."""
        with self._lock:
            values = np.fromiter(self._values, float, len(self._values))
        if not len(values):
            return Percentiles(None, None, 0)
        p50, p99 = np.percentile(values, [50, 99])
        return Percentiles(round(float(p50), digits), round(float(p99), digits), len(values))
