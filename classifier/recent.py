"""The vectors of the last results, so an operator can name or correct a sighting
from the monitor without any image: the classifier still has the vector.

Written by the worker after each batch, read by the gallery thread; under a lock.

>>> import numpy as np
>>> recent = RecentVectors(size=2)
>>> for seq in (1, 2, 3):
...     recent.add("door", seq, np.full(2, seq, np.float32), "m", "ann")
>>> recent.get("door", 1) is None, recent.get("door", 3).answered
(True, 'ann')
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False, slots=True)
class Held:
    vector: np.ndarray
    model: str
    answered: str  # the name the result gave (or "unknown")


class RecentVectors:
    """The last ``size`` (node, seq) → vector, oldest forgotten first."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int], Held] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, node: str, seq: int, vector: np.ndarray, model: str, answered: str) -> None:
        with self._lock:
            self._items[(node, seq)] = Held(vector, model, answered)
            self._items.move_to_end((node, seq))
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def add_many(self, rows: list[tuple[str, int, np.ndarray, str, str]]) -> None:
        with self._lock:
            items = self._items
            for node, seq, vector, model, answered in rows:
                items[(node, seq)] = Held(vector, model, answered)
                items.move_to_end((node, seq))
            while len(items) > self.size:
                items.popitem(last=False)

    def get(self, node: str, seq: int) -> Held | None:
        with self._lock:
            return self._items.get((node, seq))
