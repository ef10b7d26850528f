"""The classifier's own messages: its status, and the live threshold statistics."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from facewire.bus.errors import WireError
from facewire.bus.messages.fields import (
    MAX_MODEL,
    MAX_TEXT,
    JsonMessage,
    State,
    _Fields,
    _finite,
    read_state,
)

# --- faces/classifier/status -------------------------------------------------------------------


SOURCES = ("auto", "default", "fixed")

#: Nodes listed at most in each per-node map of the status (``queues``, ``dropped``,
#: ``rejected_by_node``): those with the largest counts. Any client can invent node
#: ids, and the status is retained and sent to every subscriber; ``rejected`` still
#: counts every refusal.
MAX_STATUS_NODES = 100


def _largest(counts: Mapping[str, int], n: int = MAX_STATUS_NODES) -> dict[str, int]:
    """``counts`` if it has at most ``n`` entries, else its ``n`` largest (by count,
    then name), largest first.

    >>> _largest({"a": 1, "b": 5, "c": 3}, 2)
    {'b': 5, 'c': 3}
    """
    if len(counts) <= n:
        return dict(counts)
    return dict(heapq.nlargest(n, counts.items(), key=lambda item: (item[1], item[0])))


def _source(f: _Fields, key: str = "source") -> str | None:
    source = f.text(key, 16, False)
    if source is not None and source not in SOURCES:
        raise WireError("bad_field", f"{f.what}: '{key}' must be one of {', '.join(SOURCES)}")
    return source  # type: ignore[no-any-return,unused-ignore]


@dataclass(frozen=True, slots=True)
class GalleryInfo:
    """What the classifier searches: ``dim`` is the vector size a node must send."""

    identities: int
    vectors: int
    version: str
    index: str
    dim: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "identities": self.identities,
            "vectors": self.vectors,
            "version": self.version,
            "index": self.index,
            "dim": self.dim,
        }


@dataclass(frozen=True, slots=True)
class ClassifierStatus(JsonMessage):
    """``faces/classifier/status`` (retained); its last will is ``{"state": "offline"}``.

    ``timings`` holds ``<stage>_ms_p50`` / ``_p99`` keys over the recent window.
    Encoded, each per-node map lists at most :data:`MAX_STATUS_NODES` nodes (the
    largest counts), so a flood of invented node ids cannot make the status grow
    past what its own decoder accepts.
    """

    KIND: ClassVar[str] = "classifier status"

    state: State
    model: str | None = None
    gallery: GalleryInfo | None = None
    threshold: float | None = None
    threshold_source: str | None = None  # auto | default | fixed (see ThresholdStats)
    queues: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    rejected: int | None = None
    rejected_by_node: Mapping[str, int] = field(default_factory=dict)
    bad_topics: int | None = None  # embeddings on a topic with no valid node id
    repeats: int | None = None  # embeddings sent again, answered from the recent answers
    processed: int | None = None
    messages_per_s: float | None = None
    timings: Mapping[str, float | None] = field(default_factory=dict)
    client_id: str | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> ClassifierStatus:
        g = f.obj("gallery")
        gallery = None
        if g is not None:
            gallery = GalleryInfo(
                identities=g.integer("identities"),
                vectors=g.integer("vectors"),
                version=g.text("version", MAX_TEXT),
                index=g.text("index", MAX_TEXT),
                dim=g.integer("dim", minimum=1),
            )
        return cls(
            state=read_state(f),
            model=f.text("model", MAX_MODEL, False),
            gallery=gallery,
            threshold=f.number("threshold", False),
            threshold_source=_source(f, "threshold_source"),
            queues=f.counts("queues"),
            dropped=f.counts("dropped"),
            rejected=f.integer("rejected", False),
            rejected_by_node=f.counts("rejected_by_node"),
            bad_topics=f.integer("bad_topics", False),
            repeats=f.integer("repeats", False),
            processed=f.integer("processed", False),
            messages_per_s=f.number("messages_per_s", False),
            timings=f.numbers("timings"),
            client_id=f.text("client_id", MAX_TEXT, False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        if self.state == "offline" and self.model is None:
            return {"state": self.state, **({"ts": self.ts} if self.ts is not None else {})}
        return {
            "state": self.state,
            "client_id": self.client_id,
            "model": self.model,
            "gallery": self.gallery.as_dict() if self.gallery is not None else None,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "queues": _largest(self.queues),
            "dropped": _largest(self.dropped),
            "rejected": self.rejected,
            "rejected_by_node": _largest(self.rejected_by_node),
            "bad_topics": self.bad_topics,
            "repeats": self.repeats,
            "processed": self.processed,
            "messages_per_s": self.messages_per_s,
            "timings": dict(self.timings),
            "ts": self.ts,
        }


# --- faces/stats/thresholds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GridPoint:
    """How many of the window's queries a threshold would name, and leave unknown."""

    threshold: float
    named: int
    unknown: int


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """The rates one threshold gives: FAR over impostor pairs, FRR over genuine
    scores, and the open-set FPIR over each vector's best non-mated score."""

    threshold: float
    far: float
    frr: float
    fpir: float | None = None


@dataclass(frozen=True, slots=True)
class Distributions:
    """Histograms of the genuine and non-mated scores, on shared ``edges``."""

    edges: tuple[float, ...]
    genuine: tuple[int, ...]
    non_mated: tuple[int, ...]


def _counts(f: _Fields, key: str) -> tuple[int, ...]:
    values = f.array(key) or ()
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in values):
        raise WireError("bad_field", f"{f.what}: '{key}' must be counts")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class Calibration:
    """From leave-one-out over the gallery (and corrections): the threshold's evidence.

    ``recommended_threshold``: the lowest whose FPIR is within ``target_fpir``;
    ``target_far`` carries the same target for readers of earlier versions.
    """

    eer: float
    eer_threshold: float
    recommended_threshold: float
    target_far: float
    curve: tuple[CurvePoint, ...] = ()
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None
    target_fpir: float | None = None
    non_mated: int | None = None
    corrections: int | None = None
    histograms: Distributions | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Calibration:
        found = cls.read(_Fields(dict(data), "calibration"))
        assert found is not None
        return found

    @classmethod
    def read(cls, f: _Fields | None) -> Calibration | None:
        if f is None:
            return None
        curve = []
        for i, item in enumerate(f.array("curve") or ()):
            c = _Fields(item, f"{f.what}.curve[{i}]")
            curve.append(
                CurvePoint(
                    c.number("threshold"),
                    c.number("far"),
                    c.number("frr"),
                    c.number("fpir", False),
                )
            )
        h = f.obj("histograms")
        hists = None
        if h is not None:
            edges = h.array("edges") or ()
            if not all(_finite(e) for e in edges):
                raise WireError("bad_field", f"{h.what}: 'edges' must be numbers")
            genuine, non_mated = _counts(h, "genuine"), _counts(h, "non_mated")
            if any(len(c) + 1 != len(edges) for c in (genuine, non_mated) if c):
                raise WireError("bad_field", f"{h.what}: needs len(counts) + 1 edges")
            hists = Distributions(tuple(float(e) for e in edges), genuine, non_mated)
        return cls(
            eer=f.number("eer"),
            eer_threshold=f.number("eer_threshold"),
            recommended_threshold=f.number("recommended_threshold"),
            target_far=f.number("target_far"),
            curve=tuple(curve),
            genuine_pairs=f.integer("genuine_pairs", False),
            impostor_pairs=f.integer("impostor_pairs", False),
            target_fpir=f.number("target_fpir", False),
            non_mated=f.integer("non_mated", False),
            corrections=f.integer("corrections", False),
            histograms=hists,
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "recommended_threshold": self.recommended_threshold,
            "target_far": self.target_far,
        }
        for key in ("target_fpir", "genuine_pairs", "impostor_pairs", "non_mated", "corrections"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["curve"] = [
            {"threshold": c.threshold, "far": c.far, "frr": c.frr}
            | ({"fpir": c.fpir} if c.fpir is not None else {})
            for c in self.curve
        ]
        if self.histograms is not None:
            h = self.histograms
            out["histograms"] = {
                "edges": list(h.edges),
                "genuine": list(h.genuine),
                "non_mated": list(h.non_mated),
            }
        return out


@dataclass(frozen=True, slots=True)
class ThresholdStats(JsonMessage):
    """``faces/stats/thresholds`` (retained): the live threshold tuner's statistics."""

    KIND: ClassVar[str] = "threshold statistics"

    threshold: float
    queries: int
    grid: tuple[GridPoint, ...] = ()
    edges: tuple[float, ...] = ()  # histogram of live top-1 scores: len(edges) = counts + 1
    counts: tuple[int, ...] = ()
    calibration: Calibration | None = None
    total_queries: int | None = None
    # how the threshold in force was set: "auto" (calibrated), "default" (auto, but
    # the gallery could not be calibrated: the model's for its crop), "fixed" (configured)
    source: str | None = None
    note: str | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> ThresholdStats:
        grid = []
        for i, item in enumerate(f.array("grid") or ()):
            g = _Fields(item, f"thresholds.grid[{i}]")
            grid.append(GridPoint(g.number("threshold"), g.integer("named"), g.integer("unknown")))
        edges: Iterable[Any] = ()
        counts: Iterable[Any] = ()
        hist = f.obj("histogram")
        if hist is not None:
            edges, counts = hist.array("edges") or (), hist.array("counts") or ()
            if not all(_finite(e) for e in edges) or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
            ):
                raise WireError("bad_field", "thresholds: histogram edges/counts must be numbers")
            if counts and len(edges) != len(counts) + 1:  # type: ignore[arg-type,unused-ignore]
                raise WireError("bad_field", "thresholds: histogram needs len(counts) + 1 edges")
        return cls(
            threshold=f.number("threshold"),
            queries=f.integer("queries", False) or 0,
            grid=tuple(grid),
            edges=tuple(float(e) for e in edges),
            counts=tuple(counts),
            calibration=Calibration.read(f.obj("calibration")),
            total_queries=f.integer("total_queries", False),
            source=_source(f),
            note=f.text("note", MAX_TEXT, False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "source": self.source,
            "note": self.note,
            "queries": self.queries,
            "total_queries": self.total_queries,
            "grid": [
                {"threshold": g.threshold, "named": g.named, "unknown": g.unknown}
                for g in self.grid
            ],
            "histogram": {"edges": list(self.edges), "counts": list(self.counts)},
            "calibration": self.calibration.as_dict() if self.calibration is not None else None,
            "ts": self.ts,
        }
