"""The messages for integrations (Home Assistant, automations): what a node saw last,
where a person was seen last, and intruder alerts. Plain JSON, never sealed: they are
for subscribers that cannot check a signature (the signed record is the track event
on ``faces/<node>/event``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from facewire.bus.errors import WireError
from facewire.bus.messages.fields import MAX_NAME, MAX_NODE, UNKNOWN, JsonMessage, _Fields
from facewire.bus.messages.node import TRACK_EVENTS, TrackEvent

#: Home Assistant event types of a node's decisions (its ``event`` entity).
DECISION_TYPES = ("recognized", "unknown")
#: A person's sightings: a track decision, or ``away`` (seen nowhere for a while).
PERSON_EVENTS = (*TRACK_EVENTS, "away")
#: Where a person is when no node has seen them for a while (Home Assistant's word).
NOT_HOME = "not_home"
#: The Home Assistant event type of an :class:`Alert`.
ALERT_TYPES = ("intruder",)


def _choice(f: _Fields, key: str, choices: tuple[str, ...], required: bool = True) -> Any:
    value = f.text(key, 32, required)
    if value is not None and value not in choices:
        raise WireError("bad_field", f"{f.what}: '{key}' must be one of {choices}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class NodeSighting(JsonMessage):
    """``faces/<node>/ha/last`` (retained) and ``faces/<node>/ha/event``: a node's track
    decision as Home Assistant reads it. ``event_type`` is ``recognized`` or
    ``unknown``; ``unknown`` is ``ON`` while an unknown face's track lasts, else
    ``OFF``; ``ts`` when the classifier decided (its clock)."""

    KIND: ClassVar[str] = "node sighting"

    node: str
    track: int
    event: str
    name: str
    score: float
    frames: int
    event_type: str
    unknown: str
    ts: float | None = None

    @classmethod
    def of(cls, e: TrackEvent, ts: float | None) -> NodeSighting:
        """The sighting a track event makes."""
        stranger = e.name == UNKNOWN
        present = "ON" if stranger and e.event != "left" else "OFF"
        kind = "unknown" if stranger else "recognized"
        return cls(e.node, e.track, e.event, e.name, e.score, e.frames, kind, present, ts)

    @classmethod
    def from_fields(cls, f: _Fields) -> NodeSighting:
        return cls(
            node=f.text("node", MAX_NODE),
            track=f.integer("track"),
            event=_choice(f, "event", TRACK_EVENTS),
            name=f.text("name", MAX_NAME),
            score=f.number("score"),
            frames=f.integer("frames", minimum=1),
            event_type=_choice(f, "event_type", DECISION_TYPES),
            unknown=_choice(f, "unknown", ("ON", "OFF")),
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
            "event_type": self.event_type,
            "unknown": self.unknown,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class PersonSighting(JsonMessage):
    """``faces/person/<slug>`` (retained): where and when a person was seen last.

    ``where`` is the node while the person is around, :data:`NOT_HOME` once no node has
    seen them for ``homeassistant.away_after_s`` (``event`` is then ``away``, and
    ``node``/``last_seen`` still say where and when they were seen last; both are
    ``null`` for someone never seen). ``last_seen``, ``ts``: the classifier's clock.
    """

    KIND: ClassVar[str] = "person sighting"

    name: str
    where: str
    event: str
    node: str | None = None
    track: int | None = None
    score: float | None = None
    frames: int | None = None
    last_seen: float | None = None
    ts: float | None = None

    @classmethod
    def from_fields(cls, f: _Fields) -> PersonSighting:
        return cls(
            name=f.text("name", MAX_NAME),
            where=f.text("where", MAX_NODE),
            event=_choice(f, "event", PERSON_EVENTS),
            node=f.text("node", MAX_NODE, False),
            track=f.integer("track", False),
            score=f.number("score", False),
            frames=f.integer("frames", False, minimum=1),
            last_seen=f.number("last_seen", False),
            ts=f.number("ts", False),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "event": self.event,
            "node": self.node,
            "track": self.track,
            "score": self.score,
            "frames": self.frames,
            "last_seen": self.last_seen,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class Alert(JsonMessage):
    """``faces/alerts``: a node decided on ``count`` unknown faces' tracks within
    ``window_s`` seconds (``alerts.unknown_count``, ``alerts.window_s``). ``tracks``:
    those tracks; ``first_seen``/``ts``: the first of them and the alert (classifier's
    clock). ``event_type`` is for Home Assistant's event entity."""

    KIND: ClassVar[str] = "alert"

    node: str
    count: int
    window_s: float
    tracks: tuple[int, ...] = ()
    first_seen: float | None = None
    ts: float | None = None
    event_type: str = "intruder"

    @classmethod
    def from_fields(cls, f: _Fields) -> Alert:
        tracks = f.array("tracks") or []
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in tracks):
            raise WireError("bad_field", "alert: 'tracks' must be a list of track numbers")
        return cls(
            node=f.text("node", MAX_NODE),
            count=f.integer("count", minimum=1),
            window_s=f.number("window_s"),
            tracks=tuple(tracks),
            first_seen=f.number("first_seen", False),
            ts=f.number("ts", False),
            event_type=_choice(f, "event_type", ALERT_TYPES, False) or "intruder",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "node": self.node,
            "count": self.count,
            "window_s": self.window_s,
            "tracks": list(self.tracks),
            "first_seen": self.first_seen,
            "ts": self.ts,
        }
