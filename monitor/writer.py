"""The detection log's writer: the hand-over queue, the writer thread and what it writes.

:class:`~facewire.monitor.store.Store` owns one :class:`Writer`. Threads:

- :meth:`Writer.submit` runs on the thread calling :meth:`Store.add
  <facewire.monitor.store.Store.add>` (the MQTT network thread in production): O(1)
  under ``_cond``, no SQLite, never a wait. A full queue drops the row (counted in
  ``stats()["dropped"]``, logged at most every 10 s).
- The writer thread owns the write connection. It drains the queue and inserts up to
  ``batch`` rows per transaction; only after the commit does it append them, with
  their SQLite ids, to the window and publish them on the feed, so ids reach both in
  increasing order and every row a reader sees there is already in SQLite. A failed
  transaction is rolled back and retried with backoff: rows are never skipped (a row
  SQLite refuses outright is found, counted in ``stats()["failed"]`` and logged; the
  rest of its batch is written). It also keeps ``last_id`` (the newest committed id).
- It is the only writer of the window, ``last_id`` and the counters; readers get
  snapshots copied under the short ``_lock`` (:meth:`Writer.window`,
  :meth:`Writer.last_id`, :meth:`Writer.stats`).
- For ``:memory:`` the store's readers share the write connection: each transaction
  then runs under the store's shared lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from facewire.monitor.rows import _INSERT, _values

# The store's logger: these are the detection log's messages, under the name they have
# always had (logging configurations select it).
log = logging.getLogger("facewire.monitor.store")

_LOG_EVERY_S = 10.0


class _Every:
    """Rate-limited warnings: at most one per interval, saying how many were held back."""

    def __init__(self, interval: float = _LOG_EVERY_S) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last = -math.inf
        self._held = 0

    def __call__(self, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < self._interval:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        more = f" ({held} similar since the last one)" if held else ""
        log.log(level, msg + more, *args, exc_info=exc_info)


class Writer:
    """Writes handed-in rows to ``db`` on a thread of its own (started here).

    ``rows``: the window's initial content, oldest first (at most ``window`` are kept).
    ``publish``: called on the writer thread with each row once committed, in id order.
    ``shared_lock``: held around every transaction when the connection is shared with
    readers (``:memory:``), else ``None``. ``queue_size``/``batch``: as for the store.
    The caller keeps ``db`` and closes it once :meth:`stop` returned ``True``.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        rows: Iterable[dict[str, Any]],
        window: int,
        publish: Callable[[dict[str, Any]], None],
        queue_size: int,
        batch: int,
        shared_lock: threading.Lock | None = None,
    ) -> None:
        self._db = db
        self._shared_lock = shared_lock
        self._publish = publish

        # Written by the writer thread, read as snapshots under _lock.
        self._lock = threading.Lock()
        self._window: deque[dict[str, Any]] = deque(rows, maxlen=window)
        self._last_id = self._window[-1]["id"] if self._window else 0
        self._written = 0
        self._failed = 0
        self._writer_error: str | None = None

        # The hand-over queue and its counters, under _cond (O(1) work only).
        self._cond = threading.Condition()
        self._pending: deque[tuple[dict[str, Any], str]] = deque()
        self._queue_size = queue_size
        self._batch = batch
        self._submitted = 0  # rows accepted by submit()
        self._handled = 0  # rows the writer is done with (written or counted as failed)
        self._dropped = 0  # rows submit() refused because the queue was full
        self._closed = False
        self._stopping = False
        self._give_up = threading.Event()  # stop() timed out: stop retrying
        self._warn = _Every()

        self._thread = threading.Thread(target=self._run, name="monitor-store-writer", daemon=True)
        self._thread.start()

    # --- the caller's thread: O(1), no SQLite ------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`stop` began: :meth:`submit` raises from then on."""
        return self._closed

    def submit(self, row: dict[str, Any], raw: str) -> bool:
        """Queue ``row`` (its message as ``raw`` JSON); ``False`` if the queue was full."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the detection store is closed")
            if len(self._pending) >= self._queue_size:
                self._dropped += 1
                dropped = self._dropped
            else:
                self._pending.append((row, raw))
                self._submitted += 1
                self._cond.notify_all()
                return True
        self._warn(
            logging.ERROR,
            "monitor: detection log queue full (%d rows waiting for the writer: %s);"
            " dropped a result from %s, %d dropped so far",
            self._queue_size,
            self._writer_error or "writes are slow",
            row["node"],
            dropped,
        )
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row submitted before this call is written (or counted as
        failed); ``False`` if that took longer than ``timeout`` or the writer is gone."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(
                lambda: self._handled >= target or not self._thread.is_alive(), timeout
            ) and (self._handled >= target)

    def stop(self, timeout: float, join_timeout: float) -> bool:
        """Write what was submitted (waiting up to ``timeout``; rows still unwritten then
        are counted as dropped and logged), refuse more, and stop the thread (waiting up
        to ``join_timeout``). ``True`` if it stopped: the connection is free again."""
        if not self.flush(timeout):
            self._give_up.set()
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(join_timeout)
        return not self._thread.is_alive()

    # --- snapshots (any thread) ---------------------------------------------------------

    def window(self) -> list[dict[str, Any]]:
        """The window, oldest first (the rows themselves, shared: don't change them)."""
        with self._lock:
            return list(self._window)

    def last_id(self) -> int:
        with self._lock:
            return self._last_id

    def stats(self) -> dict[str, Any]:
        with self._cond:
            queued = self._submitted - self._handled
            dropped = self._dropped
        with self._lock:
            return {
                "last_id": self._last_id,
                "window": len(self._window),
                "queued": queued,
                "written": self._written,
                "dropped": dropped,
                "failed": self._failed,
                "writer_alive": self._thread.is_alive(),
                "writer_error": self._writer_error,
            }

    # --- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        batch: list[tuple[dict[str, Any], str]] = []
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._stopping:
                        self._cond.wait()
                    if not self._pending:  # stopping, nothing left
                        return
                    n = min(len(self._pending), self._batch)
                    batch = [self._pending.popleft() for _ in range(n)]
                self._write(batch)
                with self._cond:
                    self._handled += len(batch)
                    self._cond.notify_all()
        except Exception as exc:  # a bug: say so loudly, /healthz reports the writer gone
            log.exception("monitor: the detection log writer stopped")
            with self._lock:
                self._writer_error = f"writer stopped: {type(exc).__name__}: {exc}"
        finally:
            with self._cond:  # wake flush() callers: the writer is gone
                self._cond.notify_all()

    def _write(self, batch: list[tuple[dict[str, Any], str]]) -> None:
        """Insert ``batch`` in one transaction (retried until it commits), then hand the
        rows with their ids to the window and the feed."""
        try:
            ids = self._retrying(lambda: self._insert(batch), len(batch))
        except Exception:  # noqa: BLE001 - a row SQLite refuses: find it, keep the rest
            ids = [self._insert_refusable(item, i, len(batch)) for i, item in enumerate(batch)]
        done = []
        for (row, _raw), rid in zip(batch, ids, strict=True):
            if rid is not None:
                row["id"] = rid
                done.append(row)
        with self._lock:
            self._window.extend(done)
            if done:
                self._last_id = done[-1]["id"]
            self._written += len(done)
        for row in done:
            self._publish(row)

    def _retrying(self, insert: Callable[[], list[int]], n: int) -> list[int | None]:
        """``insert()`` until it commits; locked/busy/I/O errors are retried with backoff
        (rows are never skipped) unless stop() has given up, which counts them lost."""
        backoff = 0.05
        while True:
            try:
                ids = insert()
            except sqlite3.OperationalError as exc:
                with self._lock:
                    self._writer_error = f"{type(exc).__name__}: {exc}"
                if self._give_up.is_set():
                    with self._cond:
                        self._dropped += n
                    log.error("monitor: %d detections were not written before close: %s", n, exc)
                    return [None] * n
                self._warn(
                    logging.WARNING, "monitor: writing %d detections failed (%s); retrying", n, exc
                )
                self._give_up.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            with self._lock:
                self._writer_error = None
            return list(ids)

    def _insert(self, batch: list[tuple[dict[str, Any], str]]) -> list[int]:
        ids: list[int] = []
        with self._writing() as db:
            try:
                db.execute("BEGIN IMMEDIATE")
                for row, raw in batch:
                    ids.append(int(db.execute(_INSERT, _values(row, raw)).lastrowid or 0))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return ids

    def _insert_refusable(self, item: tuple[dict[str, Any], str], i: int, n: int) -> int | None:
        """One row in its own transaction; a row SQLite refuses is counted and logged."""
        try:
            return self._retrying(lambda: self._insert([item]), 1)[0]
        except Exception:  # noqa: BLE001
            with self._lock:
                self._failed += 1
            log.exception(
                "monitor: SQLite refused a detection from %s (%d of a batch of %d); not logged",
                item[0]["node"],
                i + 1,
                n,
            )
            return None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        if self._shared_lock is not None:
            with self._shared_lock:
                yield self._db
        else:
            yield self._db
