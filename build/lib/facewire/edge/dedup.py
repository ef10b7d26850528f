"""Don't send the same face again and again while it stands in front of the camera.

>>> import numpy as np
>>> d = Dedup(max_distance=0.15, max_age_s=3.0)
>>> v = np.array([1.0, 0.0], np.float32)
>>> d.should_send(v, (100, 100, 50, 50), now=0.0), d.should_send(v, (104, 98, 50, 50), now=1.0)
(True, False)
>>> d.should_send(v, (104, 98, 50, 50), now=3.5)
True
"""

from __future__ import annotations

import numpy as np


class Dedup:
    """Skip a face within ``max_distance`` (cosine) of the last one sent from about the
    same place, unless ``max_age_s`` has passed since that one was sent."""

    def __init__(self, max_distance: float = 0.15, max_age_s: float = 3.0, slots: int = 16) -> None:
        self.max_distance = max_distance
        self.max_age_s = max_age_s
        self.slots = slots
        self._sent: list[tuple[np.ndarray, tuple[float, float, float], float]] = []
        self.skipped = 0

    def should_send(self, vector: np.ndarray, box: tuple[int, int, int, int], now: float) -> bool:
        x, y, w, h = box
        cx, cy, size = x + w / 2.0, y + h / 2.0, float(max(w, h))
        self._sent = [s for s in self._sent if now - s[2] < self.max_age_s]
        for i, (vec, (px, py, psize), _) in enumerate(self._sent):
            near = abs(cx - px) < 0.5 * max(size, psize) and abs(cy - py) < 0.5 * max(size, psize)
            if near and 1.0 - float(vector @ vec) <= self.max_distance:
                self.skipped += 1
                return False
            if near:  # a different face in that place: it replaces the old one
                del self._sent[i]
                break
        self._sent.append((vector, (cx, cy, size), now))
        del self._sent[: -self.slots]
        return True
