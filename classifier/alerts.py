"""Intruder alerts: a node that decides on unknown faces again and again.

Each track decision that a face is ``unknown`` (``arrived`` or ``changed`` to unknown;
a track counts once) is counted per node; when ``count`` of them fall within
``window_s`` seconds an :class:`~facewire.bus.messages.Alert` goes out and the count
starts again, so a stranger who stays makes one alert per ``count`` tracks, not one
per frame.

>>> from facewire.bus.messages import TrackEvent
>>> alerts = UnknownAlerts(count=2, window_s=60.0)
>>> e = lambda track: TrackEvent("door", track, "arrived", "unknown", 0.2, 3)
>>> alerts.observe(e(1), now=0.0) is None
True
>>> alerts.observe(e(2), now=30.0).tracks
(1, 2)
>>> alerts.observe(e(3), now=100.0) is None  # the count started again
True
"""

from __future__ import annotations

import threading
import time
from collections import deque

from facewire.bus.messages import UNKNOWN, Alert, TrackEvent

#: Nodes whose recent unknown decisions are kept at most (the least recent go first):
#: any client could invent node ids.
MAX_NODES = 4096


class UnknownAlerts:
    """Counts unknown decisions per node in a sliding window; thread-safe."""

    def __init__(self, count: int, window_s: float) -> None:
        if count < 1 or window_s <= 0:
            raise ValueError("count must be >= 1 and window_s > 0")
        self.count = count
        self.window_s = window_s
        # node → (monotonic time, wall time, track) of its recent unknown decisions
        self._seen: dict[str, deque[tuple[float, float, int]]] = {}
        self._lock = threading.Lock()
        self.raised = 0

    def observe(self, event: TrackEvent, now: float | None = None) -> Alert | None:
        """The alert ``event`` completes, if any. ``now``: monotonic seconds."""
        if event.name != UNKNOWN or event.event == "left":
            return None
        mono = time.monotonic() if now is None else now
        wall = time.time() if now is None else now
        with self._lock:
            seen = self._seen.pop(event.node, None)
            if seen is None:
                seen = deque()
                while len(self._seen) >= MAX_NODES:
                    del self._seen[next(iter(self._seen))]
            self._seen[event.node] = seen  # the most recent last
            while seen and mono - seen[0][0] > self.window_s:
                seen.popleft()
            if any(track == event.track for _, _, track in seen):
                return None  # the same stranger's track again (arrived, then changed)
            seen.append((mono, wall, event.track))
            if len(seen) < self.count:
                return None
            first, tracks = seen[0][1], tuple(t for _, _, t in seen)
            seen.clear()
            self.raised += 1
        return Alert(event.node, len(tracks), self.window_s, tracks, first, wall)
