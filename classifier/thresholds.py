"""Live threshold statistics: what recent queries scored, and what each threshold would do.

>>> live = LiveThresholds(window=10)
>>> for s in (0.2, 0.5, 0.9):
...     live.extend([s])
>>> snap = live.snapshot(threshold=0.4)
>>> snap.queries, [g.named for g in snap.grid if g.threshold in (0.0, 0.4, 0.6)]
(3, [3, 2, 1])
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from facewire.bus.messages import Calibration, GridPoint, ThresholdStats

GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
EDGES = np.round(np.arange(-0.2, 1.0001, 0.05), 2)


class LiveThresholds:
    """Keeps the top-1 similarity of the last ``window`` queries."""

    def __init__(self, window: int = 1000) -> None:
        self._scores: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.total = 0

    def extend(self, scores: list[float]) -> None:
        """``add`` for a whole batch, under one lock."""
        with self._lock:
            self._scores.extend(scores)
            self.total += len(scores)

    def snapshot(
        self,
        threshold: float,
        calibration: Calibration | None = None,
        source: str | None = None,
        note: str | None = None,
    ) -> ThresholdStats:
        """The ``faces/stats/thresholds`` message (see docs/protocol.md)."""
        with self._lock:
            scores = np.fromiter(self._scores, dtype=np.float64, count=len(self._scores))
        named = (
            (scores[None, :] >= GRID[:, None]).sum(axis=1)
            if len(scores)
            else np.zeros(len(GRID), int)
        )
        counts, _ = np.histogram(np.clip(scores, EDGES[0], EDGES[-1]), bins=EDGES)
        return ThresholdStats(
            threshold=threshold,
            queries=int(len(scores)),
            total_queries=self.total,
            grid=tuple(
                GridPoint(float(t), int(n), int(len(scores) - n))
                for t, n in zip(GRID, named, strict=True)
            ),
            edges=tuple(float(e) for e in EDGES),
            counts=tuple(int(c) for c in counts),
            calibration=calibration,
            source=source,
            note=note or None,
            ts=time.time(),
        )
