"""Faces the classifier has already named with confidence: not embedded on every frame.

The edge learns from its results which track each face it sent belongs to (and where
its box was), and from the track events which tracks were named, with what score.
A face detected where a confidently named track's last box was is embedded again at
most every ``period_s``: the face is still found on every frame, the embedder (most of a
frame's time) runs for new faces. A face there that does not continue one of the
camera's previous frame (``Face.continued`` is ``False``: no face was there a frame
ago) may be someone who took the named person's place, and is embedded at once; so is
a face whose latest result at that place came from a track not (yet) named.

>>> from facewire.bus.messages import Result, TrackEvent
>>> named = NamedFaces(period_s=1.0, margin=0.1)
>>> named.result(Result("door", 1, "ann", 0.8, "m", 0.45, bbox=(10, 10, 80, 80), track=3))
>>> named.event(TrackEvent("door", 3, "arrived", "ann", 0.8, 3))
>>> named.embed((12, 11, 80, 80), now=0.0), named.embed((12, 11, 80, 80), now=0.5)
(True, False)
>>> named.embed((12, 11, 80, 80), now=1.2), named.embed((300, 10, 80, 80), now=1.3)
(True, True)
>>> named.embed((12, 11, 80, 80), now=1.4, continued=False)  # someone new, perhaps
True
>>> named.result(Result("door", 9, "unknown", 0.2, "m", 0.45, bbox=(12, 12, 80, 80), track=4))
>>> named.embed((12, 11, 80, 80), now=1.5)  # the newest track there is not named
True
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from facewire.bus.messages import UNKNOWN, Result, TrackEvent
from facewire.models.face import box_iou

#: A detected face continues a named track when its box overlaps that track's this much.
MIN_IOU = 0.5
#: Tracks remembered (results of tracks never named included); the oldest go.
MAX_TRACKS = 256


@dataclass
class _Track:
    box: tuple[int, int, int, int]
    threshold: float | None
    named: bool = False
    embedded_at: float = float("-inf")


class NamedFaces:
    """Fed on the transport's thread (``result``, ``event``), asked on the frame loop's
    (``embed``); under one lock."""

    def __init__(self, period_s: float, margin: float) -> None:
        self.period_s = period_s
        self.margin = margin
        self.skipped = 0
        self._tracks: dict[int, _Track] = {}
        self._lock = threading.Lock()

    def result(self, r: Result) -> None:
        if r.track is None or r.bbox is None:
            return
        with self._lock:
            # the newest result last: where tracks overlap, the newest one says who is there
            t = self._tracks.pop(r.track, None) or _Track(r.bbox, r.threshold)
            self._tracks[r.track] = t
            while len(self._tracks) > MAX_TRACKS:
                del self._tracks[next(iter(self._tracks))]
            t.box, t.threshold = r.bbox, r.threshold

    def event(self, e: TrackEvent) -> None:
        with self._lock:
            t = self._tracks.get(e.track)
            if e.event == "left":
                self._tracks.pop(e.track, None)
            elif t is not None:
                sure = t.threshold is not None and e.score >= t.threshold + self.margin
                t.named = e.name != UNKNOWN and sure

    def embed(
        self,
        box: tuple[int, int, int, int],
        now: float,
        continued: bool | None = None,
        due: bool = False,
    ) -> bool:
        """Whether a face detected at ``box`` is worth embedding now (monotonic ``now``;
        ``continued``: see ``Face.continued``; ``due``: the edge's de-duplication would
        send it again now, which keeps its track going)."""
        with self._lock:
            t = next(
                (t for t in reversed(self._tracks.values()) if box_iou(t.box, box) >= MIN_IOU),
                None,
            )
            if t is None or not t.named:
                return True
            if continued is not False and not due and now - t.embedded_at < self.period_s:
                self.skipped += 1
                return False
            t.embedded_at = now
            return True
