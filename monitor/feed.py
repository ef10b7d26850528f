"""The live fan-out of new detection rows: what the server-sent-events stream of
``/log/html`` listens to.

Threads: the store's writer thread publishes, in id order, each row once SQLite has
accepted its insert and *before* the transaction commits (the commit, and a checkpoint
now and then, no longer delay the screen), then says up to which id rows are
:meth:`Feed.settled` (committed, or given up at close). Each listener (a web server
thread streaming to one browser) reads its own bounded queue. Neither waits for the
other: a listener that does not keep up loses rows rather than slowing the writer, and
is told how many, so it can catch up from SQLite — :meth:`Listener.take_missed` first
waits until the rows it lost are committed, so that catch-up finds them. A listener
that starts while rows are published but not yet committed gets them first (a reader
starting then would not find them in SQLite yet). Every structure here is under
:class:`Feed`'s or the listener's own short lock.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from typing import Any

__all__ = ["Feed", "Listener"]


class Listener(queue.Queue[dict[str, Any] | None]):
    """One listener's bounded queue of rows (``None``: the feed closed). It counts the
    rows it had no room for, so its reader knows to catch up from SQLite."""

    def __init__(self, maxsize: int, feed: Feed | None = None) -> None:
        super().__init__(maxsize)
        self._feed = feed
        self._missed_lock = threading.Lock()
        self._missed = 0
        self._missed_upto = 0  # the newest id lost

    def note_missed(self, row_id: int = 0) -> None:
        with self._missed_lock:
            self._missed += 1
            self._missed_upto = max(self._missed_upto, row_id)

    def take_missed(self) -> int:
        """Rows lost since the last call (and reset the count). Returns once they are
        committed (or given up), so a catch-up from SQLite right after finds them."""
        with self._missed_lock:
            missed, self._missed = self._missed, 0
            upto, self._missed_upto = self._missed_upto, 0
        if missed and self._feed is not None:
            self._feed.wait_settled(upto)
        return missed


class Feed:
    """Fan-out of new rows to live listeners (one bounded queue per listener).

    The store's writer thread publishes in id order, before each commit, and calls
    :meth:`settled` after it. A listener that does not keep up loses rows rather than
    slowing the writer, and :meth:`Listener.take_missed` says so: it can catch up from
    SQLite with the last id it saw.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._settled_cond = threading.Condition(self._lock)
        self._queues: set[Listener] = set()
        # Published, not yet committed: at most one transaction's rows.
        self._unsettled: deque[dict[str, Any]] = deque()
        self._settled = 0
        self._closed = False

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._queues)

    def listen(self) -> Listener:
        q = Listener(self._maxsize, self)
        with self._lock:
            if self._closed:
                q.put_nowait(None)
            for row in self._unsettled:  # not in SQLite yet: a backlog query misses them
                self._offer(q, row)
            self._queues.add(q)
        return q

    def unlisten(self, q: Listener) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, row: dict[str, Any]) -> None:
        """A new row (with its id), before its transaction commits."""
        with self._lock:
            self._unsettled.append(row)
            targets = list(self._queues)
        for q in targets:
            self._offer(q, row)

    def settled(self, upto: int) -> None:
        """Rows up to id ``upto`` are committed (or will never be): a listener's catch-up
        from SQLite can rely on them."""
        with self._lock:
            self._settled = max(self._settled, upto)
            while self._unsettled and self._unsettled[0]["id"] <= self._settled:
                self._unsettled.popleft()
            self._settled_cond.notify_all()

    def wait_settled(self, upto: int, timeout: float | None = None) -> bool:
        """Wait until rows up to id ``upto`` are settled (or the feed closed)."""
        with self._lock:
            return self._settled_cond.wait_for(
                lambda: self._settled >= upto or self._closed, timeout
            )

    @staticmethod
    def _offer(q: Listener, row: dict[str, Any]) -> None:
        try:
            q.put_nowait(row)
        except queue.Full:  # a slow listener loses rows (and is told)
            q.note_missed(row["id"])

    def close(self) -> None:
        """Wake every listener with ``None`` (the end-of-stream marker)."""
        with self._lock:
            self._closed = True
            self._settled_cond.notify_all()
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
