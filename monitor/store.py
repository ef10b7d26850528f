"""The detection log: every result the classifier publishes, one SQLite row each.

SQLite (WAL mode) is the record; a bounded in-memory window holds the newest rows for
the live pages. Opening an existing database reloads that window from disk, so a
monitor restart loses nothing. New rows are also pushed to a :class:`Feed`, which is
what the server-sent-events stream of ``/log/html`` listens to.

This module is the :class:`Store` and its readers; the writer thread is
:mod:`~facewire.monitor.writer`, the table and its rows :mod:`~facewire.monitor.rows`,
the live fan-out :mod:`~facewire.monitor.feed`.

Threads (DESIGN.md: one owner per piece of mutable state, nothing slow on the MQTT
network thread):

- :meth:`Store.add` runs on the caller's thread — the MQTT network thread in
  production. It only validates the result and builds its row, then appends it to a
  bounded hand-over queue: no SQLite, no I/O, never a wait. When the queue is full
  (the writer is stuck: the database locked by another process, a stalled disk) the
  row is dropped, counted in ``stats()["dropped"]`` and logged (at most every 10 s),
  and ``add`` returns ``False``.
- The writer thread (:class:`~facewire.monitor.writer.Writer`, which the store owns)
  owns the write connection, the window, ``last_id`` and the writer's counters: it
  inserts in batches, retries until a transaction commits, and only then appends the
  rows to the window and publishes them on the feed (its module says how).
- Readers (the web server's threads) use read-only connections from a small pool,
  never the writer's, and take no lock the writer holds: in WAL mode they read the
  last committed snapshot while a write transaction is open. The window and the
  counters are read as snapshots copied under a short lock.
- ``:memory:`` cannot be shared between connections (and has no WAL), so there one
  connection serves the writer and the readers under a lock. For tests and throw-away
  runs only.

:meth:`Store.flush` waits until everything handed in so far is written;
:meth:`Store.close` flushes, stops the writer and closes the connections.

No request needs a scan: the row count is kept by SQLite triggers in a one-row table
(so it stays exact even when rows are deleted by hand), every query is bounded by a
limit and served by an index.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from facewire.monitor.feed import Feed, Listener
from facewire.monitor.rows import (
    _COLUMNS,
    NEAR_MARGIN,
    _bounded,
    _create_schema,
    _int,
    _make_row,
    _num,
    _row,
    _text,
    band,
    pipeline_latency_ms,
    stages_ms,
)
from facewire.monitor.writer import Writer

__all__ = ["Feed", "Listener", "Store", "band", "stages_ms", "pipeline_latency_ms", "NEAR_MARGIN"]

log = logging.getLogger(__name__)


class Store:
    """SQLite detection log plus an in-memory window of the newest ``window`` rows.

    ``queue_size``: rows that may wait for the writer before :meth:`add` drops (about
    80 s at 8 nodes × 15 fps). ``batch``: most rows per transaction. ``readers``: idle
    read connections kept for reuse. ``busy_timeout``: how long one SQLite call waits
    for a lock another process holds. ``sql_trace``: called with every SQL statement
    run on any of the store's connections (``sqlite3`` trace callback; for debugging and
    tests — it runs on the thread that runs the statement).
    """

    def __init__(
        self,
        path: str | Path,
        window: int = 500,
        *,
        queue_size: int = 10_000,
        batch: int = 500,
        readers: int = 4,
        busy_timeout: float = 5.0,
        sql_trace: Callable[[str], None] | None = None,
        retention_days: float = 0.0,
        retention_check_s: float = 3600.0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if queue_size < 1 or batch < 1:
            raise ValueError("queue_size and batch must be >= 1")
        if retention_days < 0 or retention_check_s <= 0:
            raise ValueError("retention_days must be >= 0 and retention_check_s > 0")
        # 0: keep forever. Rows older than this are deleted by the retention thread.
        self.retention_s = retention_days * 86400.0
        self.path = str(path)
        self._memory = self.path == ":memory:"
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout = busy_timeout
        self._trace = sql_trace
        self.window_size = window
        self.feed = Feed()

        # Owned by the writer thread once it starts (opened here so errors surface in
        # the constructor).
        self._db = self._connect(self.path)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows (retention, `facewire gallery forget`) are overwritten, not
            # left readable in free pages.
            self._db.execute("PRAGMA secure_delete=ON")
            _create_schema(self._db)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM detections ORDER BY id DESC LIMIT ?", (window,)
            ).fetchall()
        except BaseException:
            self._db.close()
            raise

        # Read connections (not used for :memory:, where readers share _db under it).
        self._shared_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._max_idle = max(0, readers)
        self._ro_uri = None if self._memory else Path(self.path).resolve().as_uri() + "?mode=ro"

        # Started last: from here on the write connection is the writer thread's.
        self._writer = Writer(
            self._db,
            rows=(_row(r) for r in reversed(rows)),
            window=window,
            publish=self._publish,
            queue_size=queue_size,
            batch=batch,
            shared_lock=self._shared_lock if self._memory else None,
        )
        self._retention_stop = threading.Event()
        self._retention: threading.Thread | None = None
        if self.retention_s > 0:
            self._retention = threading.Thread(
                target=self._retain,
                args=(retention_check_s,),
                name="monitor-store-retention",
                daemon=True,
            )
            self._retention.start()

    # --- writing (the caller's thread: O(1), no SQLite) ------------------------------

    def add(
        self, result: Mapping[str, Any], node: str | None = None, received_at: float | None = None
    ) -> bool:
        """Hand one result message to the writer; ``False`` if it had to be dropped.

        ``node`` (from the topic) wins over the payload's own ``node`` field. Raises
        ``ValueError`` for a result without name or node, ``RuntimeError`` once closed.
        The row (with its id) reaches the window, the feed and queries once written;
        :meth:`flush` waits for that.
        """
        name = _text(result.get("name"))
        if not name:
            raise ValueError("result has no 'name'")
        node = _text(node or result.get("node"))
        if not node:
            raise ValueError("result has no 'node'")
        received_at = time.time() if received_at is None else float(received_at)
        result = _bounded(result)
        row = _make_row(
            0,  # set by the writer after the insert
            received_at,
            node,
            _int(result.get("seq")),
            name,
            _num(result.get("score")),
            _num(result.get("threshold")),
            stages_ms(result.get("timings")),
            _text(result.get("model")),
            _num(result.get("captured_at")),
            _text(result.get("track_name")),
        )
        # ensure_ascii (the default) also makes lone surrogates storable.
        raw = json.dumps(result, separators=(",", ":"), default=str)
        return self._writer.submit(row, raw)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row handed in before this call is written (or counted as
        failed); ``False`` if that took longer than ``timeout`` or the writer is gone."""
        return self._writer.flush(timeout)

    # --- reading (any thread; own connections, no writer lock) ------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            with self._shared_lock:
                yield self._db
            return
        with self._pool_lock:
            if self._writer.closed:
                raise RuntimeError("the detection store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            assert self._ro_uri is not None
            conn = self._connect(self._ro_uri, uri=True)
        ok = False
        try:
            yield conn
            ok = True
        finally:
            keep = False
            if ok:
                with self._pool_lock:
                    if not self._writer.closed and len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        keep = True
            if not keep:
                conn.close()

    def window(self, node: str | None = None) -> list[dict[str, Any]]:
        """The in-memory window, oldest first (optionally one node's rows only).

        The rows are shared with the window and the feed: read them, don't change them.
        """
        rows = self._writer.window()
        # Rows past retention may linger in the window of a quiet log: not shown.
        cutoff = time.time() - self.retention_s if self.retention_s else -math.inf
        return [
            r for r in rows if (node is None or r["node"] == node) and r["received_at"] >= cutoff
        ]

    def query(
        self,
        node: str | None = None,
        name: str | None = None,
        limit: int = 100,
        since: int | None = None,
        before: int | None = None,
        raw: bool = False,
        oldest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Rows from SQLite, newest first: ``since``/``before`` bound the id (exclusive).

        With ``oldest_first`` the *oldest* ``limit`` rows after ``since`` come back in
        ascending order. Every combination of filters is served by an index, so the
        work is bounded by ``limit``.
        """
        where: list[str] = []
        args: list[str | int] = []
        for col, val in (("node", node), ("name", name)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            where.append("id > ?")
            args.append(since)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = f"SELECT {_COLUMNS}{', raw' if raw else ''} FROM detections"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
        args.append(limit)
        with self._reading() as db:
            rows = db.execute(sql, args).fetchall()
        return [_row(r, raw=raw) for r in rows]

    def count(self) -> int:
        """Rows in SQLite: one row read from the trigger-kept counter, not a scan."""
        with self._reading() as db:
            found = db.execute("SELECT n FROM detections_count").fetchone()
        return int(found[0]) if found else 0

    def last_id(self) -> int:
        """The newest committed id (0 for an empty log)."""
        return self._writer.last_id()

    def stats(self) -> dict[str, Any]:
        """The writer's counters (a snapshot; no SQLite)."""
        return self._writer.stats()

    def close(self, timeout: float = 10.0) -> None:
        """Write what was handed in (waiting up to ``timeout``), then close everything.

        Rows still unwritten after that are counted as dropped and logged."""
        self._retention_stop.set()
        if self._retention is not None:
            self._retention.join(self._busy_timeout + 5.0)
        # A writer inside SQLite's busy wait returns within busy_timeout.
        stopped = self._writer.stop(timeout, self._busy_timeout + 5.0)
        self.feed.close()
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if not stopped:
            log.error("monitor: the detection log writer did not stop; leaving its connection")
            return
        with self._shared_lock:
            self._db.close()

    # --- retention (its own thread and write connection) --------------------------------

    def purge(self, now: float | None = None, batch: int = 2000) -> int:
        """Delete the rows received more than ``retention_days`` before ``now``; returns
        how many. Runs on the retention thread; callable from any thread (tests, a
        one-off). Short transactions (``batch`` rows each), so the writer waits little."""
        if not self.retention_s:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_s
        if self._memory:
            conn, own = self._db, False
        else:
            conn, own = self._connect(self.path), True
            conn.execute("PRAGMA secure_delete=ON")
        deleted = 0
        try:
            while not self._writer.closed:
                with self._shared_lock if not own else contextlib.nullcontext():
                    n = self._purge_batch(conn, cutoff, batch)
                deleted += n
                if n == 0:
                    break
            if deleted and own:
                # Copy the overwritten pages into the database file, empty the WAL.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            if own:
                conn.close()
        if deleted:
            log.info("monitor: deleted %d detections older than the retention", deleted)
        return deleted

    @staticmethod
    def _purge_batch(db: sqlite3.Connection, cutoff: float, batch: int) -> int:
        # Ids grow with time: look at the oldest `batch` rows only (no scan of the table).
        db.execute("BEGIN IMMEDIATE")
        try:
            (top,) = db.execute(
                "SELECT MAX(id) FROM (SELECT id, received_at FROM detections "
                "ORDER BY id LIMIT ?) WHERE received_at < ?",
                (batch, cutoff),
            ).fetchone()
            n = 0
            if top is not None:
                n = db.execute(
                    "DELETE FROM detections WHERE id <= ? AND received_at < ?", (top, cutoff)
                ).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return max(0, n)

    def _retain(self, every_s: float) -> None:
        while True:
            try:
                self.purge()
            except Exception:  # noqa: BLE001 - a locked or failing disk: try next time
                log.exception("monitor: deleting old detections failed; retrying later")
            if self._retention_stop.wait(every_s):
                return

    # --- helpers ---------------------------------------------------------------------

    def _publish(self, row: dict[str, Any]) -> None:
        # On the writer thread. Looked up per row: ``feed`` is a public attribute (tests
        # replace it).
        self.feed.publish(row)

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        # check_same_thread=False: a pooled connection serves one thread at a time, but
        # not always the same one; the write connection is handed to the writer thread.
        db = sqlite3.connect(
            target,
            uri=uri,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        db.row_factory = sqlite3.Row
        if self._trace is not None:
            db.set_trace_callback(self._trace)
        return db
