"""The messages about one node: its results, its status, and why a message was refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from facewire.bus.errors import REASONS, WireError
from facewire.bus.messages.fields import (
    MAX_MODEL,
    MAX_NAME,
    MAX_NODE,
    MAX_TEXT,
    UNKNOWN,
    JsonMessage,
    State,
    _Fields,
    read_state,
)

# --- shared parts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Percentiles:
    """p50/p99 over the last ``n`` values (``None`` while there are none)."""

    p50: float | None
    p99: float | None
    n: int

    @classmethod
    def read(cls, f: _Fields | None) -> Percentiles | None:
        if f is None:
            return None
        return cls(f.number("p50", False), f.number("p99", False), f.integer("n", False) or 0)

    def as_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p99": self.p99, "n": self.n}


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One of the k nearest gallery vectors: its identity and cosine similarity."""

    name: str
    score: float


# --- faces/<node>/result ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result(JsonMessage):
    """``faces/<node>/result``: one per embedding message classified.

    ``name`` is the identity or :data:`UNKNOWN`; ``score`` the similarity backing it;
    ``timings`` the edge's stages and the classifier's, by stage name, in ms.
    """

    KIND: ClassVar[str] = "result"

    node: str
    seq: int
    name: str
    score: float
    model: str
    threshold: float | None = None
    frame: int | None = None
    face: int | None = None
    neighbours: tuple[Neighbour, ...] = ()
    bbox: tuple[int, int, int, int] | None = None
    captured_at: float | None = None
    timings: Mapping[str, float | None] = field(default_factory=dict)
    classified_at: float | None = None
    gallery: str | None = None  # the gallery version it was answered with
    track: int | None = None  # the node's track this face belongs to
    track_frames: int | None = None  # frames of that track so far
    #: the track's decision after this frame, once it has one: a name (or unknown)
    #: resting on all its frames, which one frame's ``name`` may disagree with
    track_name: str | None = None

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN

    @classmethod
    def from_fields(cls, f: _Fields) -> Result:
        neighbours = []
        for i, item in enumerate(f.array("neighbours") or ()):
            n = _Fields(item, f"result.neighbours[{i}]")
            neighbours.append(Neighbour(n.text("name", MAX_NAME), n.number("score")))
        bbox = f.array("bbox")
        if bbox is not None:
            if len(bbox) != 4 or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in bbox
            ):
                raise WireError("bad_field", "result: 'bbox' must be 4 integers [x, y, w, h]")
            bbox = tuple(bbox)
        timings = {}
        for key, ms in f.numbers("timings").items():
            if key.endswith("_ms") and len(key) > 3:  # other keys: not ours, ignored
                timings[key[:-3]] = ms
        return cls(
            node=f.text("node", MAX_NODE),
            seq=f.integer("seq"),
            name=f.text("name", MAX_NAME),
            score=f.number("score"),
            model=f.text("model", MAX_MODEL),
            threshold=f.number("threshold", False),
            frame=f.integer("frame", False),
            face=f.integer("face", False),
            neighbours=tuple(neighbours),
            bbox=bbox,
            captured_at=f.number("captured_at", False),
            timings=timings,
            classified_at=f.number("classified_at", False),
            gallery=f.text("gallery", MAX_TEXT, False),
            track=f.integer("track", False),
            track_frames=f.integer("track_frames", False),
            track_name=f.text("track_name", MAX_NAME, False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "seq": self.seq,
            "frame": self.frame,
            "face": self.face,
            "name": self.name,
            "score": self.score,
            "threshold": self.threshold,
            "model": self.model,
            "neighbours": [{"name": n.name, "score": n.score} for n in self.neighbours],
            "bbox": list(self.bbox) if self.bbox is not None else None,
            "captured_at": self.captured_at,
            "timings": {f"{k}_ms": v for k, v in self.timings.items()},
            "classified_at": self.classified_at,
            "gallery": self.gallery,
            "track": self.track,
            "track_frames": self.track_frames,
            "track_name": self.track_name,
        }


# --- faces/<node>/status ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeStatus(JsonMessage):
    """``faces/<node>/status`` (retained): an edge's heartbeat; also its last will,
    which carries ``node`` and ``state`` alone (fields that are ``None`` are left out).
    """

    KIND: ClassVar[str] = "edge status"

    node: str
    state: State
    model: str | None = None
    fps: float | None = None
    latency_ms: Percentiles | None = None  # capture → result, on the edge's clock
    publish_ms: Percentiles | None = None  # capture → published
    sent: int | None = None
    results: int | None = None
    dropped_dedup: int | None = None
    dropped_quality: int | None = None  # faces the quality gate kept off the wire
    skipped_named: int | None = None  # faces not embedded: their track is named already
    buffered: int | None = None  # embeddings kept until their result arrives
    errors: int | None = None
    dropped_buffer: int | None = None  # the oldest kept, dropped because the buffer was full
    resent: int | None = None  # embeddings sent again: no result came in time
    unanswered: int | None = None  # forgotten after the last try brought no result
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> EdgeStatus:
        return cls(
            node=f.text("node", MAX_NODE),
            state=read_state(f),
            model=f.text("model", MAX_MODEL, False),
            fps=f.number("fps", False),
            latency_ms=Percentiles.read(f.obj("latency_ms")),
            publish_ms=Percentiles.read(f.obj("publish_ms")),
            sent=f.integer("sent", False),
            results=f.integer("results", False),
            dropped_dedup=f.integer("dropped_dedup", False),
            dropped_quality=f.integer("dropped_quality", False),
            skipped_named=f.integer("skipped_named", False),
            buffered=f.integer("buffered", False),
            errors=f.integer("errors", False),
            dropped_buffer=f.integer("dropped_buffer", False),
            resent=f.integer("resent", False),
            unanswered=f.integer("unanswered", False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "state": self.state}
        for key in ("model", "fps", "latency_ms", "publish_ms", "sent", "results"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.as_dict() if isinstance(value, Percentiles) else value
        for key in (
            "dropped_dedup",
            "dropped_quality",
            "skipped_named",
            "buffered",
            "errors",
            "dropped_buffer",
            "resent",
            "unanswered",
            "ts",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


# --- faces/<node>/error ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorReport(JsonMessage):
    """``faces/<node>/error``: why a message of that node was refused (or dropped).

    ``count``: refusals of this ``reason`` for this node since the classifier started
    (reports may be rate-limited; the count still counts every one).
    """

    KIND: ClassVar[str] = "error"

    node: str
    reason: str
    detail: str
    count: int
    seq: int | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> ErrorReport:
        reason = f.text("reason", 32)
        if reason not in REASONS:
            raise WireError("bad_field", f"error: unknown reason {reason!r}")
        return cls(
            node=f.text("node", MAX_NODE),
            reason=reason,
            detail=f.text("detail", MAX_TEXT),
            count=f.integer("count"),
            seq=f.integer("seq", False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "reason": self.reason,
            "detail": self.detail,
            "seq": self.seq,
            "count": self.count,
            "ts": self.ts,
        }


TRACK_EVENTS = ("arrived", "changed", "left")


@dataclass(frozen=True, slots=True)
class TrackEvent(JsonMessage):
    """``faces/<node>/event``: a track's decision was made (``arrived``), changed
    (``changed``), or the track ended (``left``, with its last decision). ``name`` is
    the person or ``unknown``; ``score`` the quality-weighted mean score of the frames
    that named them; ``frames`` how many frames it rests on. Times: edge clock."""

    KIND: ClassVar[str] = "track event"

    node: str
    track: int
    event: str
    name: str
    score: float
    frames: int
    first_seen: float | None = None
    last_seen: float | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> TrackEvent:
        event = f.text("event", 16)
        if event not in TRACK_EVENTS:
            raise WireError("bad_field", f"track event: 'event' must be one of {TRACK_EVENTS}")
        return cls(
            node=f.text("node", MAX_NODE),
            track=f.integer("track"),
            event=event,
            name=f.text("name", MAX_NAME),
            score=f.number("score"),
            frames=f.integer("frames", minimum=1),
            first_seen=f.number("first_seen", False),
            last_seen=f.number("last_seen", False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "track": self.track,
            "event": self.event,
            "name": self.name,
            "score": self.score,
            "frames": self.frames,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "ts": self.ts,
        }
