"""Recent durations: a window summarised as the p50/p99 the status messages carry, and
the cumulative histograms the services' metrics fold them into.

>>> from facewire.bus.latency import LatencyWindow
>>> w = LatencyWindow(size=3)
>>> w.extend([5.0, 1.0, 2.0, 3.0])   # the oldest falls out
>>> w.percentiles()
Percentiles(p50=2.0, p99=2.98, n=3)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence

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


#: Bucket bounds of the stage latency histograms, seconds: 0.5 ms (a search of a
#: small gallery) to 5 s (a backlog).
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: The label value the nodes past the cap are summed under.
OTHER = "other"


class Buckets:
    """A cumulative histogram kept by the collector: ``fold`` adds observations."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # the last: > every bound
        self.sum = 0.0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def fold(self, values: Sequence[float], count: int | None = None) -> None:
        """Add ``values``; with ``count`` (> ``len(values)``), they stand for that many:
        the buckets are scaled to it (largest remainders), so ``+Inf`` equals the count."""
        if not len(values):
            return
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if not len(x):
            return
        # le semantics: a value equal to a bound belongs to that bound's bucket
        per = np.bincount(np.searchsorted(self.bounds, x, side="left"), minlength=len(self.counts))
        total = float(x.sum())
        if count is not None and count > len(x):
            scaled = per * (count / len(x))
            per = np.floor(scaled).astype(np.int64)
            short = count - int(per.sum())
            per[np.argsort(per - scaled)[:short]] += 1
            total *= count / len(x)
        self.counts += per
        self.sum += total

    def samples(self) -> tuple[list[tuple[str, float]], float]:
        """(``buckets`` for :class:`HistogramMetricFamily`, the sum)."""
        cumulative = np.cumsum(self.counts)
        out = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        out.append(("+Inf", float(cumulative[-1])))
        return out, self.sum
