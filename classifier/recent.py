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


#: Nodes whose answers are kept; the least recently answered is forgotten beyond it
#: (node ids are capped elsewhere too, but a cache must bound itself).
ANSWER_NODES = 256


class RecentAnswers:
    """The last ``per_node`` result texts of each node, by seq, so a message sent again
    (its result was lost on the way) is answered with the text it got instead of being
    classified twice. Owned by the worker thread: no lock.

    An entry answers only a message with the same capture time: an edge that restarted
    numbers its messages from 1 again, and those are new.

    >>> answers = RecentAnswers(per_node=2)
    >>> for seq in (1, 2, 3):
    ...     answers.add("door", seq, 100.0 + seq, f"result {seq}")
    >>> answers.get("door", 1, 101.0), answers.get("door", 3, 103.0), answers.get("door", 3, 9.0)
    (None, 'result 3', None)
    """

    def __init__(self, per_node: int = 512, nodes: int = ANSWER_NODES) -> None:
        self.per_node = per_node
        self.nodes = nodes
        self._by_node: OrderedDict[str, OrderedDict[int, tuple[float, str | bytes]]] = OrderedDict()

    def get(self, node: str, seq: int, captured_at: float) -> str | bytes | None:
        kept = self._by_node.get(node)
        if kept is None:
            return None
        hit = kept.get(seq)
        return hit[1] if hit is not None and hit[0] == captured_at else None

    def add(self, node: str, seq: int, captured_at: float, text: str | bytes) -> None:
        if self.per_node <= 0:
            return
        by_node = self._by_node
        kept = by_node.get(node)
        if kept is None:
            kept = by_node[node] = OrderedDict()
            if len(by_node) > self.nodes:
                by_node.popitem(last=False)
        else:
            by_node.move_to_end(node)
        kept[seq] = (captured_at, text)
        if len(kept) > self.per_node:
            kept.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._by_node.values())
