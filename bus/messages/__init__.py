"""The JSON half of the wire contract: one frozen, validated type per message.

Producers build the type and ``encode()`` it; consumers ``decode(payload)`` it. A
payload that is not valid raises :class:`~facewire.bus.errors.WireError` (``bad_json``
or ``bad_field``) saying which field and why; keys a reader does not know are
ignored, so producers may add keys later. ``docs/protocol.md`` is the human spec and
every JSON example on that page is decoded and re-encoded by a test.

>>> from facewire.bus.messages import EdgeStatus, Result
>>> status = EdgeStatus.decode(b'{"node": "door", "state": "offline"}')
>>> status.state, status.encode()
('offline', '{"node":"door","state":"offline"}')
>>> Result.decode(b'{"node": "door", "seq": 1, "name": "ann", "score": "high"}')
Traceback (most recent call last):
...
facewire.bus.errors.WireError: [bad_field] result: 'score' must be a finite number, got 'high'

Stage names are one vocabulary end to end: the edge's stages (:data:`EDGE_STAGES`) go
into the embedding message by name, and a result's ``timings`` carries them, plus the
classifier's own (:data:`CLASSIFIER_STAGES`), as ``<stage>_ms`` (the JSON key names its
unit); :attr:`Result.timings` is keyed by the bare stage name.
"""

from facewire.bus.messages.fields import (
    CLASSIFIER_STAGES,
    EDGE_STAGES,
    UNKNOWN,
    JsonMessage,
)
from facewire.bus.messages.gallery import (
    Correction,
    Enrolment,
    GalleryReload,
    GalleryReply,
    Sighting,
)
from facewire.bus.messages.integration import Alert, NodeSighting, PersonSighting
from facewire.bus.messages.node import (
    EdgeStatus,
    ErrorReport,
    Neighbour,
    Percentiles,
    Result,
    TrackEvent,
)
from facewire.bus.messages.service import (
    Calibration,
    ClassifierStatus,
    CurvePoint,
    GalleryInfo,
    GridPoint,
    ThresholdStats,
)

__all__ = [
    "CLASSIFIER_STAGES",
    "EDGE_STAGES",
    "UNKNOWN",
    "Alert",
    "Calibration",
    "ClassifierStatus",
    "Correction",
    "CurvePoint",
    "EdgeStatus",
    "Enrolment",
    "ErrorReport",
    "GalleryInfo",
    "GalleryReload",
    "GalleryReply",
    "GridPoint",
    "JsonMessage",
    "Neighbour",
    "NodeSighting",
    "Percentiles",
    "PersonSighting",
    "Result",
    "Sighting",
    "ThresholdStats",
    "TrackEvent",
]
