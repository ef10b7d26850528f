"""A :class:`~facewire.bus.messages.Result`'s JSON text for a whole batch, fast.

The classifier's hot path: building a ``Result`` and ``json.dumps`` of it per message
would cost more than the rest of the classifier's work per message, so names, model
and each node's fields are JSON-encoded once and the per-message numbers are
formatted straight into the text. Its output decodes (``Result.decode``) to the
``Result`` of the same values, scores rounded to 4 and milliseconds to 3 decimals;
``tests/test_results.py`` checks that.

>>> import numpy as np
>>> from facewire.bus.messages import Result
>>> enc = ResultEncoder(np.array(["ann", "bob"]), "sface@1234abcd", 0.363)
>>> text = enc.encode("door", 7, 3, 0, (1, 2, 3, 4), 1700000000.5, {"embed": 4.25},
...                   1, [1, 0], [0.8125, 0.25], 0.8125, True, 0.1, 0.2, 0.35, 1700000000.75)
>>> r = Result.decode(text)
>>> r.name, r.neighbours[1], r.timings["embed"]
('bob', Neighbour(name='ann', score=0.25), 4.25)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from facewire.bus.messages import UNKNOWN

_CACHE_MAX = 4096  # node ids and stage names seen; bounded against a flood of new ones


def _number(value: float, digits: int) -> str:
    """``round(value, digits)`` as JSON; ``null`` for NaN/inf (not valid JSON)."""
    if math.isfinite(value):
        return f"{value:.{digits}f}"
    return "null"


def _stage_key(name: str) -> str:
    # the one rule of the stage vocabulary: stage "embed" is JSON key "embed_ms"
    return json.dumps(f"{name}_ms")


def _exact(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "null"


def _remembered(cache: dict[str, str], value: str) -> str:
    """``value`` as JSON text, kept in ``cache`` (up to ``_CACHE_MAX`` entries)."""
    text = cache.get(value)
    if text is None:
        text = json.dumps(value)
        if len(cache) < _CACHE_MAX:
            cache[value] = text
    return text


class ResultEncoder:
    """Turns one classified message into its result JSON text (one per gallery)."""

    def __init__(
        self,
        names: Sequence[str] | np.ndarray,
        model_id: str,
        threshold: float,
        gallery: str | None = None,
    ) -> None:
        self._names = [json.dumps(str(n)) for n in names]
        self._unknown = json.dumps(UNKNOWN)
        self._model = json.dumps(model_id)
        self._threshold = _exact(threshold)
        self._gallery = json.dumps(gallery)
        self._nodes: dict[str, str] = {}
        self._texts: dict[str, str] = {}
        self._stage_formats: dict[tuple[str, ...], str] = {}

    def _node(self, node: str) -> str:
        return _remembered(self._nodes, node)

    def _text(self, value: str | None) -> str:
        """A name (or ``None``) as JSON, remembered: a track's decision repeats."""
        return "null" if value is None else _remembered(self._texts, value)

    def _stages(self, stages: Mapping[str, float]) -> str:
        """``"detect_ms":4.000,…`` for the edge's stage timings."""
        names = tuple(stages)
        values = tuple(stages.values())
        if not math.isfinite(sum(values)):  # NaN/inf from the wire: null, not invalid JSON
            return ",".join(f"{_stage_key(k)}:{_number(v, 3)}" for k, v in stages.items())
        fmt = self._stage_formats.get(names)
        if fmt is None:
            # an edge sends the same stages every time: one %-format per set of names
            fmt = ",".join(f"{_stage_key(k).replace('%', '%%')}:%.3f" for k in names)
            if len(self._stage_formats) < _CACHE_MAX:
                self._stage_formats[names] = fmt
        return fmt % values

    def encode(
        self,
        node: str,
        seq: int,
        frame: int,
        face: int,
        bbox: Sequence[int],
        captured_at: float,
        stages: Mapping[str, float],
        winner: int,
        codes: Sequence[int],
        sims: Sequence[float],
        score: float,
        known: bool,
        queue_ms: float,
        search_ms: float,
        total_ms: float,
        classified_at: float,
        track: int | None = None,
        track_frames: int | None = None,
        track_name: str | None = None,
    ) -> str:
        names = self._names
        name = names[winner] if known and winner >= 0 else self._unknown
        # similarities of real neighbours are finite (FAISS pads missing ones with id -1)
        neighbours = ",".join(
            [
                f'{{"name":{names[c]},"score":{s:.4f}}}'
                for c, s in zip(codes, sims, strict=True)
                if c >= 0
            ]
        )
        stage_text = self._stages(stages)
        x, y, w, h = bbox
        return (
            f'{{"node":{self._node(node)},"seq":{seq},"frame":{frame},"face":{face},'
            f'"name":{name},"score":{score:.4f},"threshold":{self._threshold},'
            f'"model":{self._model},"neighbours":[{neighbours}],'
            f'"bbox":[{x},{y},{w},{h}],"captured_at":{_exact(captured_at)},'
            f'"timings":{{{stage_text}{"," if stage_text else ""}'
            f'"queue_ms":{queue_ms:.3f},"search_ms":{search_ms:.3f},'
            f'"total_classifier_ms":{total_ms:.3f}}},"classified_at":{classified_at!r},'
            f'"gallery":{self._gallery},"track":{"null" if track is None else track},'
            f'"track_frames":{"null" if track_frames is None else track_frames},'
            f'"track_name":{self._text(track_name)}}}'
        )
