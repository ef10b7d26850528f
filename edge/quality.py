"""The quality gate: is a detected face good enough to keep?

``passes(face, gate)`` checks a face's :class:`~facewire.models.face.Quality` (size,
sharpness, exposure, measured on its box when it was detected) against the
``quality`` settings, and says why it fails. ``facewire enroll`` keeps only faces that
pass; it is one function so that live frames can be gated the same way.

>>> from facewire.config.schema import QualityConfig
>>> from facewire.models.face import Face, Quality
>>> gate = QualityConfig()
>>> passes(Face((0, 0, 80, 90), quality=Quality(7200.0, 850.0, 130.0)), gate) is None
True
>>> passes(Face((0, 0, 80, 90), quality=Quality(7200.0, 850.0, 21.0)), gate)
'too dark: brightness 21 < 40'
>>> reason_kind('too dark: brightness 21 < 40')
'too dark'
"""

from __future__ import annotations

from facewire.config.schema import QualityConfig
from facewire.models.face import Face

__all__ = ["passes", "reason_kind"]


def passes(face: Face, gate: QualityConfig) -> str | None:
    """``None`` if ``face`` passes ``gate``, else why not: ``"<kind>: <figures>"``
    (the kind, before the colon, is one of ``too small``, ``too dark``, ``too bright``,
    ``blurred``, checked in that order)."""
    q = face.quality
    if q.area < gate.min_area:
        return f"too small: {q.area:.0f} px < {gate.min_area:.0f}"
    if q.brightness < gate.min_brightness:
        return f"too dark: brightness {q.brightness:.0f} < {gate.min_brightness:.0f}"
    if q.brightness > gate.max_brightness:
        return f"too bright: brightness {q.brightness:.0f} > {gate.max_brightness:.0f}"
    # after the exposure: a dark or washed-out face has little contrast, so it measures
    # low here too, and the light is what to fix
    if q.blur < gate.min_blur:
        return f"blurred: sharpness {q.blur:.0f} < {gate.min_blur:.0f}"
    return None


def reason_kind(reason: str) -> str:
    """The part of a refusal that is the same every time (to count them)."""
    return reason.partition(":")[0]
