"""Decisions over a track: a face followed across a node's frames, named once.

Each classified face joins the track of its node that it continues (its vector is
close to the track's last one, or its box overlaps the track's last one and its
vector is not another face's), else starts a new one: someone stepping into the place
another just left starts a track of their own.
A track's decision rests on all its frames, each weighted by its quality (a bigger,
sharper face counts more), with a consistency rule: a name must hold more than half
of the track's weight; otherwise, and on a tie, the track is ``unknown``. One event
goes out when a track's decision is first made (``arrived``), when it changes
(``changed``) and when the track ends (``left``: no frame for ``gap_s``).

>>> import numpy as np
>>> tracker = Tracker(gap_s=2.0, min_frames=2)
>>> v = np.array([1.0, 0.0], np.float32)
>>> a = tracker.observe("door", (10, 10, 50, 50), v, (2500.0, 200.0, 120.0), 0.0, "ann", 0.7, 0.0)
>>> a.track, a.frames, a.event is None
(1, 1, True)
>>> b = tracker.observe("door", (12, 11, 50, 50), v, (2500.0, 200.0, 120.0), 0.2, "ann", 0.8, 0.2)
>>> b.track, b.frames, b.event.event, b.event.name, b.decided
(1, 2, 'arrived', 'ann', 'ann')
>>> [e.event for e in tracker.expire(now=5.0)]
['left']
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from facewire.bus.messages import UNKNOWN, TrackEvent
from facewire.config.schema import TrackConfig
from facewire.models.face import box_iou

#: A frame's weight from its quality: full weight from this face area (px²) and
#: sharpness (variance of the Laplacian) up; never below the floor.
FULL_AREA = 96.0 * 96.0
FULL_BLUR = 100.0
MIN_WEIGHT = 0.05
#: Frames a track remembers for its decision (the oldest fall out).
MAX_FRAMES = 50
#: Tracks of a node a face is compared with: the most recently started (a crowd of
#: more at one door is not what a node sees; the bound keeps the worker's cost flat).
RECENT_TRACKS = 8


def weight(quality: tuple[float, float, float]) -> float:
    """How much one frame counts: (area, blur, brightness) → 0.05..1."""
    area, blur, _ = quality
    w = min(1.0, max(area, 0.0) / FULL_AREA) * min(1.0, max(blur, 0.0) / FULL_BLUR)
    return max(MIN_WEIGHT, w)


@dataclass
class Track:
    node: str
    number: int
    box: tuple[int, int, int, int]
    vector: np.ndarray
    first_seen: float
    last_seen: float
    arrived: float  # the classifier's monotonic clock when its last frame came
    # the remembered frames (name, score, weight), and their sums kept as they come and
    # go: a decision per frame costs a look at each name, not a pass over the frames
    frames: deque[tuple[str, float, float]] = field(default_factory=deque)
    weight_of: dict[str, float] = field(default_factory=dict)  # name → sum of weights
    scored: dict[str, float] = field(default_factory=dict)  # name → sum of score × weight
    total: float = 0.0
    score_sum: float = 0.0
    seen: int = 0  # frames in all, not only those remembered
    decision: tuple[str, float] | None = None
    best: tuple[float, str, np.ndarray] | None = None  # heaviest frame: weight, name, vector

    def add(self, name: str, score: float, w: float) -> None:
        self.frames.append((name, score, w))
        self._count(name, score, w, 1.0)
        if len(self.frames) > MAX_FRAMES:
            self._count(*self.frames.popleft(), -1.0)
        self.seen += 1

    def _count(self, name: str, score: float, w: float, sign: float) -> None:
        held = self.weight_of.get(name, 0.0) + sign * w
        if held > 1e-9:
            self.weight_of[name] = held
            self.scored[name] = self.scored.get(name, 0.0) + sign * score * w
        else:  # its last frame left the window
            self.weight_of.pop(name, None)
            self.scored.pop(name, None)
        self.total += sign * w
        self.score_sum += sign * score

    def decide(self, min_frames: int) -> tuple[str, float] | None:
        """(name, score) by the consistency rule, or ``None`` before ``min_frames``."""
        if self.seen < min_frames:
            return None
        held, best, runner_up = -1.0, UNKNOWN, -1.0
        for name, w in self.weight_of.items():
            if w > held:
                held, best, runner_up = w, name, held
            elif w > runner_up:
                runner_up = w
        tie = abs(runner_up - held) <= 1e-9
        if tie or held <= self.total / 2.0 or best == UNKNOWN:
            return UNKNOWN, self.score_sum / len(self.frames)
        return best, self.scored[best] / held


@dataclass(frozen=True)
class Observed:
    """What one frame did to its track."""

    track: int
    frames: int
    event: TrackEvent | None
    #: the track's decision after this frame (``None`` before ``min_frames``): what a
    #: single frame's name is worth (a stranger named in one frame of many stays
    #: ``unknown``)
    decided: str | None = None


class Tracker:
    """Tracks of every node. Used by the classifier's worker (``observe``) and its
    statistics thread (``expire``): under one lock."""

    def __init__(
        self,
        gap_s: float = 2.0,
        min_iou: float = 0.2,
        min_similarity: float = 0.5,
        min_frames: int = 3,
        max_tracks: int = 64,
        min_overlap_similarity: float = 0.4,
    ) -> None:
        self.gap_s = gap_s
        self.min_iou = min_iou
        self.min_similarity = min_similarity
        self.min_overlap_similarity = min_overlap_similarity
        self.min_frames = min_frames
        self.max_tracks = max_tracks  # per node: a flood of faces must not grow it
        self._tracks: dict[str, list[Track]] = {}
        self._numbers: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(
        self,
        node: str,
        box: tuple[int, int, int, int],
        vector: np.ndarray,
        quality: tuple[float, float, float],
        at: float,
        name: str,
        score: float,
        arrived: float | None = None,
    ) -> Observed:
        """Add one classified face (``at``: its capture time, edge clock; ``arrived``:
        when it came, on this process's monotonic clock, for ``expire``)."""
        arrived = time.monotonic() if arrived is None else arrived
        with self._lock:
            tracks = self._tracks.setdefault(node, [])
            track = self._continue(tracks, box, vector, at)
            if track is None:
                number = self._numbers[node] = self._numbers.get(node, 0) + 1
                track = Track(node, number, box, vector, at, at, arrived)
                tracks.append(track)
                if len(tracks) > self.max_tracks:
                    tracks.sort(key=lambda t: t.last_seen)
                    del tracks[0]
            else:
                # continuity with the last frame: a face changes slowly between frames
                track.vector, track.box = vector, box
                track.last_seen = max(track.last_seen, at)
                track.arrived = arrived
            w = weight(quality)
            track.add(name, score, w)
            if track.best is None or w > track.best[0]:
                track.best = (w, name, vector)
            event = self._event(track, at)
            decided = track.decision[0] if track.decision is not None else None
            return Observed(track.number, track.seen, event, decided)

    def expire(self, now: float | None = None) -> list[TrackEvent]:
        """End the tracks with no frame for ``gap_s`` (``now``: monotonic clock, as
        ``observe``'s ``arrived``); a ``left`` event for each that had a decision."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            for node, tracks in self._tracks.items():
                keep = []
                for t in tracks:
                    if now - t.arrived <= self.gap_s:
                        keep.append(t)
                    elif t.decision is not None:
                        out.append(self._make(t, "left", t.decision, t.last_seen))
                self._tracks[node] = keep
        return out

    def _continue(
        self, tracks: list[Track], box: tuple[int, int, int, int], vector: np.ndarray, at: float
    ) -> Track | None:
        best, best_sim = None, -2.0
        for t in tracks[-RECENT_TRACKS:]:
            if abs(at - t.last_seen) > self.gap_s:
                continue
            sim = float(t.vector @ vector)
            near = sim >= self.min_similarity or (
                sim >= self.min_overlap_similarity and box_iou(t.box, box) >= self.min_iou
            )
            if near and sim > best_sim:
                best, best_sim = t, sim
        return best

    @classmethod
    def from_config(cls, cfg: TrackConfig) -> Tracker:
        """The tracker ``cfg`` (the ``track`` settings) describes."""
        return cls(
            gap_s=cfg.gap_s,
            min_iou=cfg.min_iou,
            min_similarity=cfg.min_similarity,
            min_frames=cfg.min_frames,
            min_overlap_similarity=cfg.min_overlap_similarity,
        )

    def best_frame(self, node: str, number: int) -> tuple[float, str, np.ndarray] | None:
        """The heaviest frame of a live track: (weight, the name it gave, its vector)."""
        with self._lock:
            for t in self._tracks.get(node, ()):
                if t.number == number:
                    return t.best
        return None

    def _event(self, track: Track, at: float) -> TrackEvent | None:
        decision = track.decide(self.min_frames)
        if decision is None:
            return None
        before, track.decision = track.decision, decision
        if before is None:
            return self._make(track, "arrived", decision, at)
        if before[0] != decision[0]:
            return self._make(track, "changed", decision, at)
        return None

    def _make(self, t: Track, event: str, decision: tuple[str, float], at: float) -> TrackEvent:
        return TrackEvent(
            node=t.node,
            track=t.number,
            event=event,
            name=decision[0],
            score=round(decision[1], 4),
            frames=t.seen,
            first_seen=t.first_seen,
            last_seen=t.last_seen,
            ts=at,
        )
