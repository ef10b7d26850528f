"""The gallery's messages: a request to reload it, and the classifier's answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from facewire.bus.messages.fields import MAX_TEXT, JsonMessage, _Fields

MAX_REQUEST_ID = 64


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
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> GalleryReply:
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
            "ts": self.ts,
        }
