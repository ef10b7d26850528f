"""The live fan-out of new detection rows: what the server-sent-events stream of
``/log/html`` listens to.

Threads: the store's writer thread publishes, after each commit and in id order; each
listener (a web server thread streaming to one browser) reads its own bounded queue.
Neither waits for the other: a listener that does not keep up loses rows rather than
slowing the writer, and is told how many, so it can catch up from SQLite. Every
structure here is under :class:`Feed`'s or the listener's own short lock.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any

__all__ = ["Feed", "Listener"]


class Listener(queue.Queue[dict[str, Any] | None]):
    """One listener's bounded queue of rows (``None``: the feed closed). It counts the
    rows it had no room for, so its reader knows to catch up from SQLite."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._missed_lock = threading.Lock()
        self._missed = 0

    def note_missed(self) -> None:
        with self._missed_lock:
            self._missed += 1

    def take_missed(self) -> int:
        """Rows lost since the last call (and reset the count)."""
        with self._missed_lock:
            missed, self._missed = self._missed, 0
        return missed


class Feed:
    """Fan-out of new rows to live listeners (one bounded queue per listener).

    The store's writer thread publishes, after each commit, in id order. A listener
    that does not keep up loses rows rather than slowing the writer, and
    :meth:`Listener.take_missed` says so: it can catch up from SQLite with the last id
    it saw.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._queues: set[Listener] = set()
        self._closed = False

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._queues)

    def listen(self) -> Listener:
        q = Listener(self._maxsize)
        with self._lock:
            if self._closed:
                q.put_nowait(None)
            self._queues.add(q)
        return q

    def unlisten(self, q: Listener) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, row: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._queues)
        for q in targets:
            try:
                q.put_nowait(row)
            except queue.Full:  # a slow listener loses rows (and is told)
                q.note_missed()

    def close(self) -> None:
        """Wake every listener with ``None`` (the end-of-stream marker)."""
        with self._lock:
            self._closed = True
            targets = list(self._queues)
        for q in targets:
            # Make room for the marker if the queue is full.
            while True:
                try:
                    q.put_nowait(None)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()
