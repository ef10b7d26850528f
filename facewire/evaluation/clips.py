"""Video clips in ``facewire eval``: people enrolled from a clip, clips played as probes.

A clip is given as ``NAME=PATH[@FROM-TO]`` (seconds of the clip; either end may be
left out). ``NAME`` is the person the clip shows, or ``stranger`` for someone who is
not enrolled. An *enrolment* clip is captured as ``facewire enroll`` captures a camera
(one face alone in the frame, the quality gate, meshed, no near-duplicates); a
*probe* clip is played as the edge and the classifier would see it live: every frame,
every face the edge's quality gate lets through (``edge.gate_live``), matched as the
classifier matches (k-NN vote, the threshold in force), and followed across frames by
the classifier's own :class:`~facewire.classifier.tracks.Tracker`, on the clip's own
clock (frame number ÷ frame rate).

What a probe clip counts: per *frame* (each face sent), named right, named wrongly or
called unknown (for a stranger: rejected or named); per *track*, the decision the
track ended with (what the last ``faces/<node>/event`` said), and how long after the
track's first face the right name was first decided (the ``arrived`` event).

>>> ClipSpec.parse("alice=door.mp4@2-7.5")
ClipSpec(person='alice', path=PosixPath('door.mp4'), start_s=2.0, end_s=7.5)
>>> ClipSpec.parse("stranger=street.mov").known
False
>>> ClipSpec.parse("alice=door.mp4@5-").end_s
inf
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewire.bus.messages import UNKNOWN
from facewire.classifier.search import Matcher
from facewire.classifier.tracks import Tracker
from facewire.config.schema import QualityConfig, TrackConfig
from facewire.edge.enroll import Capture, capture_faces
from facewire.edge.quality import passes, reason_kind
from facewire.edge.sources import Frame
from facewire.models import FacePipeline
from facewire.models.follow import FaceFollower

#: The ``NAME`` of a clip whose person is not enrolled.
STRANGER = "stranger"


@dataclass(frozen=True)
class ClipSpec:
    """One clip, or a stretch of one: who it shows and which seconds of it."""

    person: str
    path: Path
    start_s: float = 0.0
    end_s: float = math.inf

    @property
    def known(self) -> bool:
        return self.person != STRANGER

    @property
    def label(self) -> str:
        span = ""
        if self.start_s > 0 or math.isfinite(self.end_s):
            end = f"{self.end_s:g}" if math.isfinite(self.end_s) else ""
            span = f"@{self.start_s:g}-{end}"
        return f"{self.person}={self.path.name}{span}"

    @classmethod
    def parse(cls, text: str) -> ClipSpec:
        """``NAME=PATH[@FROM-TO]``; ``argparse.ArgumentTypeError`` when it is not."""
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise argparse.ArgumentTypeError(f"not NAME=PATH[@FROM-TO]: {text!r}")
        path, at, span = rest.rpartition("@") if "@" in rest else (rest, "", "")
        start, end = 0.0, math.inf
        if at:
            a, dash, b = span.partition("-")
            try:
                start = float(a) if a else 0.0
                end = float(b) if b else math.inf
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{text!r}: FROM-TO must be seconds, e.g. @2-7.5"
                ) from None
            if not dash or start < 0 or end <= start:
                raise argparse.ArgumentTypeError(f"{text!r}: FROM-TO must be 0 ≤ FROM < TO")
        return cls(name, Path(path), start, end)


def clip_frames(spec: ClipSpec) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds into the clip, BGR frame) for every frame of ``spec``'s stretch."""
    cap = cv2.VideoCapture(str(spec.path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open the clip {spec.path}")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        index = 0
        while True:
            ok, image = cap.read()
            if not ok:
                return
            t = index / fps
            index += 1
            if t < spec.start_s:
                continue
            if t >= spec.end_s:
                return
            yield t, image
    finally:
        cap.release()


def enrol_clip(pipeline: FacePipeline, spec: ClipSpec, gate: QualityConfig, count: int) -> Capture:
    """Up to ``count`` good, different faces of ``spec``, as ``facewire enroll`` keeps them."""
    frames = (
        Frame(i, image, t, t, 0.0, f"{spec.path.name}@{t:.2f}s")
        for i, (t, image) in enumerate(clip_frames(spec))
    )
    return capture_faces(pipeline, frames, gate, count=count, timeout=math.inf)


@dataclass
class TrackOutcome:
    number: int
    frames: int
    name: str  # the decision it ended with (unknown until one was made)
    score: float
    first_s: float  # the clip's clock at its first face
    named_after_s: float | None  # from its first face to the first right decision


@dataclass
class ClipOutcome:
    """What one probe clip came to (see the module doc)."""

    spec: ClipSpec
    frames: int = 0
    frames_with_face: int = 0
    sent: int = 0  # faces through the quality gate: matched and tracked
    gated: Counter[str] = field(default_factory=Counter)  # quality refusals by kind
    right: int = 0
    wrong: int = 0
    unknown: int = 0
    tracks: list[TrackOutcome] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        named_after = [t.named_after_s for t in self.tracks if t.named_after_s is not None]
        out: dict[str, Any] = {
            "clip": self.spec.label,
            "person": self.spec.person,
            "known": self.spec.known,
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "faces_sent": self.sent,
            "faces_gated": dict(self.gated),
            "frames_named_right": _share(self.right, self.sent) if self.spec.known else None,
            "frames_named_wrongly": _share(self.wrong, self.sent),
            "frames_unknown": _share(self.unknown, self.sent),
            "tracks": len(self.tracks),
            "tracks_named_right": sum(t.name == self.spec.person for t in self.tracks)
            if self.spec.known
            else None,
            "tracks_named_wrongly": sum(
                t.name not in (self.spec.person, UNKNOWN) for t in self.tracks
            ),
            "tracks_unknown": sum(t.name == UNKNOWN for t in self.tracks),
            "first_named_after_s": round(min(named_after), 3) if named_after else None,
            "track_list": [
                {
                    "track": t.number,
                    "frames": t.frames,
                    "name": t.name,
                    "score": round(t.score, 4),
                    "first_s": round(t.first_s, 3),
                    "named_after_s": None if t.named_after_s is None else round(t.named_after_s, 3),
                }
                for t in self.tracks
            ],
        }
        return out


def _share(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def run_clip(
    pipeline: FacePipeline,
    matcher: Matcher,
    spec: ClipSpec,
    tracks: TrackConfig,
    gate: QualityConfig | None,
    detect_every: int = 1,
) -> ClipOutcome:
    """Play ``spec`` through the edge's pipeline (``gate``: the quality gate on live
    frames, ``None`` for none; faces followed between detections on every
    ``detect_every``-th frame, as the edge does), the matcher and a :class:`Tracker`."""
    out = ClipOutcome(spec)
    follower = FaceFollower(pipeline, detect_every)
    seen: list[tuple[float, tuple[int, int, int, int], tuple[float, float, float]]] = []
    vectors: list[np.ndarray] = []

    detected = [False]  # did this frame hold a face, sent or not

    def worth(face: Any) -> bool:
        detected[0] = True
        reason = passes(face, gate) if gate is not None else None
        if reason is not None:
            out.gated[reason_kind(reason)] += 1
        return reason is None

    for t, image in clip_frames(spec):
        out.frames += 1
        detected[0] = False
        faces = follower.get(image, keep=worth)
        out.frames_with_face += detected[0]
        for face in faces:
            if face.embedding is None:
                continue
            q = face.quality
            seen.append((t, face.box, (q.area, q.blur, q.brightness)))
            vectors.append(np.asarray(face.embedding, np.float32))
    out.sent = len(vectors)
    if not vectors:
        return out
    batch = matcher.match(np.stack(vectors))
    names = matcher.names
    tracker = Tracker.from_config(tracks)
    found: dict[int, TrackOutcome] = {}
    for r, (t, box, quality) in enumerate(seen):
        code = int(batch.winner[r])
        name = str(names[code]) if batch.known[r] and code >= 0 else UNKNOWN
        if name == spec.person:
            out.right += 1
        elif name == UNKNOWN:
            out.unknown += 1
        else:
            out.wrong += 1
        obs = tracker.observe(
            spec.label, box, vectors[r], quality, t, name, float(batch.scores[r]), t
        )
        track = found.setdefault(
            obs.track, TrackOutcome(obs.track, 0, UNKNOWN, float("nan"), t, None)
        )
        track.frames = obs.frames
        if obs.event is not None:
            track.name, track.score = obs.event.name, obs.event.score
            if track.named_after_s is None and obs.event.name == spec.person:
                track.named_after_s = t - track.first_s
    out.tracks = sorted(found.values(), key=lambda x: x.number)
    return out


def format_clips(clips: list[dict[str, Any]]) -> str:
    """One line per probe clip: per-frame and per-track figures."""
    head = (
        "clip",
        "frames",
        "faces sent",
        "frames right",
        "frames wrong",
        "frames unknown",
        "tracks",
        "right/wrong/unknown",
        "named after",
    )
    rows = [head]
    for c in clips:
        right = "-" if c["tracks_named_right"] is None else str(c["tracks_named_right"])
        rows.append(
            (
                c["clip"],
                str(c["frames"]),
                str(c["faces_sent"]),
                _pct(c["frames_named_right"]),
                _pct(c["frames_named_wrongly"]),
                _pct(c["frames_unknown"]),
                str(c["tracks"]),
                f"{right}/{c['tracks_named_wrongly']}/{c['tracks_unknown']}",
                "-" if c["first_named_after_s"] is None else f"{c['first_named_after_s']:.2f} s",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"
