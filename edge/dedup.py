"""Don't send the same face again and again while it stands in front of the camera.

A new face's first ``first`` frames are all sent (the classifier decides on a track
after ``track.min_frames`` of them); after that, a face within ``max_distance`` of the
last one sent from about the same place is sent again only every ``max_age_s`` (keep
it below the classifier's ``track.gap_s``, so the track of someone standing still goes
on). A face not sent for ``1.5 × max_age_s`` (the person left) is forgotten: when it
comes back it is new again.

>>> import numpy as np
>>> d = Dedup(max_distance=0.15, max_age_s=1.5, first=3)
>>> v = np.array([1.0, 0.0], np.float32)
>>> [d.should_send(v, (100, 100, 50, 50), now=t / 10) for t in range(5)]
[True, True, True, False, False]
>>> d.should_send(v, (104, 98, 50, 50), now=1.7), d.should_send(v, (104, 98, 50, 50), now=1.8)
(True, False)
>>> d.should_send(v, (104, 98, 50, 50), now=9.0)   # gone a while, back: new again
True
>>> d.due((104, 98, 50, 50), now=9.5), d.due((104, 98, 50, 50), now=10.5)
(False, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class _Sent:
    vector: np.ndarray
    place: tuple[float, float, float]  # centre x, y and size of the box
    at: float
    sends: int


class Dedup:
    """Skip a face within ``max_distance`` (cosine) of the last one sent from about the
    same place, unless it is among its first ``first`` or ``max_age_s`` has passed."""

    def __init__(
        self, max_distance: float = 0.15, max_age_s: float = 1.5, slots: int = 16, first: int = 3
    ) -> None:
        self.max_distance = max_distance
        self.max_age_s = max_age_s
        self.slots = slots
        self.first = first
        self._sent: list[_Sent] = []
        self.skipped = 0

    def due(self, box: tuple[int, int, int, int], now: float) -> bool:
        """Whether a face at ``box`` that is the one last sent from there would be sent
        again now (``max_age_s`` passed, or nothing sent from there): the edge embeds it
        then even if it skips it otherwise, so that its track does not end."""
        cx, cy, size = _place(box)
        return all(
            now - s.at >= self.max_age_s or not _near(s.place, cx, cy, size) for s in self._sent
        )

    def should_send(self, vector: np.ndarray, box: tuple[int, int, int, int], now: float) -> bool:
        cx, cy, size = _place(box)
        forget = 1.5 * self.max_age_s
        self._sent = [s for s in self._sent if now - s.at < forget]
        for i, s in enumerate(self._sent):
            if not _near(s.place, cx, cy, size):
                continue
            if 1.0 - float(vector @ s.vector) <= self.max_distance:
                if s.sends < self.first or now - s.at >= self.max_age_s:
                    s.vector, s.place, s.at, s.sends = vector, (cx, cy, size), now, s.sends + 1
                    return True
                self.skipped += 1
                return False
            del self._sent[i]  # a different face in that place: it replaces the old one
            break
        self._sent.append(_Sent(vector, (cx, cy, size), now, 1))
        del self._sent[: -self.slots]
        return True


def _place(box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    x, y, w, h = box
    return x + w / 2.0, y + h / 2.0, float(max(w, h))


def _near(place: tuple[float, float, float], cx: float, cy: float, size: float) -> bool:
    """About the same place: centres within half the larger face's size."""
    px, py, psize = place
    reach = 0.5 * max(size, psize)
    return abs(cx - px) < reach and abs(cy - py) < reach
