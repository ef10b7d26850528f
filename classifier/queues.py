"""Per-node bounded queues served round-robin: fair across nodes, ordered within one.

>>> q = FairQueues(maxlen=2)
>>> for node, item in [("a", 1), ("a", 2), ("a", 3), ("b", 10)]:
...     dropped = q.put(node, item)
>>> dropped is None, q.dropped
(True, {'a': 1})
>>> q.take(10, timeout=0)
[('a', 2), ('b', 10), ('a', 3)]
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class FairQueues(Generic[T]):
    """One deque per node; ``put`` from the network thread, ``take`` from the worker.

    A full queue drops its *oldest* item (a late face is worth less than a fresh one)
    and counts it; ``take`` hands out up to ``n`` items, one per node per round, so a
    node that floods can only use its own queue, never delay the others beyond it.
    """

    def __init__(self, maxlen: int = 64) -> None:
        self.maxlen = maxlen
        self._queues: dict[str, deque[T]] = {}
        self._order: deque[str] = deque()  # round-robin order of nodes with items
        self._cond = threading.Condition()
        self._closed = False
        self.dropped: dict[str, int] = {}

    def put(self, node: str, item: T) -> T | None:
        """Queue ``item``; returns the dropped oldest item when the queue was full."""
        with self._cond:
            q = self._queues.get(node)
            if q is None:
                q = self._queues[node] = deque()
            dropped = None
            if len(q) >= self.maxlen:
                dropped = q.popleft()
                self.dropped[node] = self.dropped.get(node, 0) + 1
            if not q:
                self._order.append(node)
            q.append(item)
            self._cond.notify()
            return dropped

    def take(self, n: int, timeout: float | None = None) -> list[tuple[str, T]]:
        """Up to ``n`` items, round-robin over nodes; waits up to ``timeout`` for one."""
        with self._cond:
            if not self._order and not self._closed:
                self._cond.wait(timeout)
            out: list[tuple[str, T]] = []
            while self._order and len(out) < n:
                node = self._order.popleft()
                q = self._queues[node]
                out.append((node, q.popleft()))
                if q:
                    self._order.append(node)
            return out

    def drops(self) -> dict[str, int]:
        """Messages dropped so far per node (a snapshot)."""
        with self._cond:
            return dict(self.dropped)

    def depths(self) -> dict[str, int]:
        with self._cond:
            return {node: len(q) for node, q in self._queues.items()}

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
