"""The gallery's messages: reload it, teach it someone (enrolment), tell it a name was
wrong (correction), and the classifier's answer to each (:class:`GalleryReply`)."""

from __future__ import annotations

import base64
import binascii
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from facewire.bus.errors import WireError
from facewire.bus.messages.fields import (
    MAX_MODEL,
    MAX_NAME,
    MAX_NODE,
    MAX_TEXT,
    UNKNOWN,
    JsonMessage,
    _Fields,
)

MAX_REQUEST_ID = 64


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a person's name, or ``None`` if it can.

    A person's name is also a gallery folder's, so the rule is a plain folder name's:
    1–128 bytes of UTF-8, not ``unknown`` (what the classifier says for nobody), no
    ``/`` or ``\\``, no control characters, not starting with ``.``, no space at
    either end.

    >>> name_problem("Zoë Smith") is None
    True
    >>> name_problem("unknown"), name_problem("a/b")
    ("'unknown' is what the classifier says for nobody", "'a/b' contains '/'")
    """
    if not name:
        return "the name is empty"
    if name.casefold() == UNKNOWN:
        return f"{name!r} is what the classifier says for nobody"
    for sep in ("/", "\\"):
        if sep in name:
            return f"{name!r} contains {sep!r}"
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in name):
        return f"{name!r} contains a control character"
    if name.startswith("."):
        return f"{name!r} starts with '.' (a hidden folder, or '..')"
    if name != name.strip():
        return f"{name!r} starts or ends with a space"
    if len(name.encode("utf-8")) > MAX_NAME:
        return f"the name is over {MAX_NAME} bytes of UTF-8"
    return None


@dataclass(frozen=True, slots=True)
class GalleryReload(JsonMessage):
    """``faces/gallery/reload``: read the gallery folder again now (the classifier also
    notices changes by itself). ``request_id`` comes back in the reply."""

    KIND: ClassVar[str] = "gallery reload"

    request_id: str | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> GalleryReload:
        return cls(request_id=f.text("request_id", MAX_REQUEST_ID, False))

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id}


@dataclass(frozen=True, slots=True)
class GalleryReply(JsonMessage):
    """``faces/gallery/reply``: what a gallery change did, or why it did not happen.

    ``request_id`` is the request's (``null`` for a change the classifier noticed
    itself); ``added``/``removed`` count vectors against the gallery before.
    """

    KIND: ClassVar[str] = "gallery reply"

    action: str
    ok: bool
    detail: str
    request_id: str | None = None
    version: str | None = None
    identities: int | None = None
    vectors: int | None = None
    added: int | None = None
    removed: int | None = None
    skipped: int | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    took_ms: float | None = None
    refused: tuple[str, ...] = ()  # enrolment: why each vector not kept was refused
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> GalleryReply:
        refused = f.array("refused") or ()
        if not all(isinstance(r, str) and len(r) <= MAX_TEXT for r in refused):
            raise WireError("bad_field", "gallery reply: 'refused' must be strings")
        return cls(
            action=f.text("action", 32),
            ok=f.boolean("ok"),
            detail=f.text("detail", MAX_TEXT),
            request_id=f.text("request_id", MAX_REQUEST_ID, False),
            version=f.text("version", MAX_TEXT, False),
            identities=f.integer("identities", False),
            vectors=f.integer("vectors", False),
            added=f.integer("added", False),
            removed=f.integer("removed", False),
            skipped=f.integer("skipped", False),
            threshold=f.number("threshold", False),
            threshold_source=f.text("threshold_source", 16, False),
            took_ms=f.number("took_ms", False),
            refused=tuple(refused),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "ok": self.ok,
            "detail": self.detail,
            "request_id": self.request_id,
            "version": self.version,
            "identities": self.identities,
            "vectors": self.vectors,
            "added": self.added,
            "removed": self.removed,
            "skipped": self.skipped,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "took_ms": self.took_ms,
            "refused": list(self.refused),
            "ts": self.ts,
        }


MAX_VECTORS = 64  # in one enrolment
MAX_DIM = 4096


def _vector(text: Any, what: str, dim: int) -> np.ndarray:
    """A base64 string of ``dim`` little-endian float32 values, finite."""
    if not isinstance(text, str) or len(text) > 4 * (4 * MAX_DIM + 2) // 3 + 4:
        raise WireError("bad_field", f"{what}: must be a base64 string of float32 values")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("bad_field", f"{what}: not base64") from None
    if len(raw) != 4 * dim:
        raise WireError("bad_field", f"{what}: {len(raw) // 4} values, 'dim' says {dim}")
    vec = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(vec).all():
        raise WireError("non_finite", f"{what}: NaN or infinity")
    return vec


def encode_vector(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, "<f4").tobytes()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Sighting:
    """A face the classifier answered: ``faces/<node>/result``'s node and seq."""

    node: str
    seq: int


@dataclass(frozen=True, eq=False, slots=True)
class Enrolment(JsonMessage):
    """``faces/gallery/enroll``: teach the classifier ``name`` from vectors (never
    images) — ``vectors`` an edge embedded (their ``model`` must be the gallery's), or
    ``sightings`` the classifier answered recently (it still holds their vectors).
    The answer is a :class:`GalleryReply` with ``action`` ``enroll``."""

    KIND: ClassVar[str] = "enrolment"

    name: str
    request_id: str | None = None
    model: str | None = None
    vectors: tuple[np.ndarray, ...] = ()
    sightings: tuple[Sighting, ...] = ()
    source: str = "camera"  # camera | sighting | auto

    @classmethod
    def from_fields(cls, f: _Fields) -> Enrolment:
        vectors: list[np.ndarray] = []
        texts = f.array("vectors") or ()
        if len(texts) > MAX_VECTORS:
            raise WireError("bad_field", f"enrolment: at most {MAX_VECTORS} vectors")
        if texts:
            dim = f.integer("dim", minimum=1)
            if dim > MAX_DIM:
                raise WireError("bad_field", f"enrolment: 'dim' {dim} over {MAX_DIM}")
            vectors = [_vector(t, f"enrolment.vectors[{i}]", dim) for i, t in enumerate(texts)]
        sightings = []
        for i, item in enumerate(f.array("sightings") or ()):
            s = _Fields(item, f"enrolment.sightings[{i}]")
            sightings.append(Sighting(s.text("node", MAX_NODE), s.integer("seq")))
        if not vectors and not sightings:
            raise WireError("bad_field", "enrolment: needs 'vectors' or 'sightings'")
        source = f.text("source", 16, False) or ("camera" if vectors else "sighting")
        if source not in ("camera", "sighting", "auto"):
            raise WireError("bad_field", "enrolment: 'source' must be camera, sighting or auto")
        name = f.text("name", MAX_NAME)
        problem = name_problem(name)
        if problem is not None:
            raise WireError("bad_field", f"enrolment: not a name: {problem}")
        return cls(
            name=name,
            request_id=f.text("request_id", MAX_REQUEST_ID, False),
            model=f.text("model", MAX_MODEL, bool(vectors)),
            vectors=tuple(vectors),
            sightings=tuple(sightings),
            source=source,
        )

    def __eq__(self, other: object) -> bool:  # vectors are arrays: compare the wire form
        return isinstance(other, Enrolment) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "request_id": self.request_id}
        if self.vectors:
            out["model"] = self.model
            out["dim"] = int(len(self.vectors[0]))
            out["vectors"] = [encode_vector(v) for v in self.vectors]
        if self.sightings:
            out["sightings"] = [{"node": s.node, "seq": s.seq} for s in self.sightings]
        out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True)
class Correction(JsonMessage):
    """``faces/gallery/correct``: the face of this sighting was *not* ``wrong_name``.

    The classifier keeps its vector as negative evidence: it can no longer name that
    person, and the calibration counts it as an impostor score for them."""

    KIND: ClassVar[str] = "correction"

    node: str
    seq: int
    wrong_name: str
    request_id: str | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> Correction:
        return cls(
            node=f.text("node", MAX_NODE),
            seq=f.integer("seq"),
            wrong_name=f.text("wrong_name", MAX_NAME),
            request_id=f.text("request_id", MAX_REQUEST_ID, False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "seq": self.seq,
            "wrong_name": self.wrong_name,
            "request_id": self.request_id,
        }
