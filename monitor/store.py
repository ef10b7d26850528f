"""The detection log: every result the classifier publishes, one SQLite row each.

SQLite (WAL mode) is the record; a bounded in-memory window holds the newest rows for
the live pages. Opening an existing database reloads that window from disk, so a
monitor restart loses nothing. New rows are also pushed to a :class:`Feed`, which is
what the server-sent-events stream of ``/log/html`` listens to.

Threads (DESIGN.md: one owner per piece of mutable state, nothing slow on the MQTT
network thread):

- :meth:`Store.add` runs on the caller's thread — the MQTT network thread in
  production. It only validates the result and builds its row, then appends it to a
  bounded hand-over queue: no SQLite, no I/O, never a wait. When the queue is full
  (the writer is stuck: the database locked by another process, a stalled disk) the
  row is dropped, counted in ``stats()["dropped"]`` and logged (at most every 10 s),
  and ``add`` returns ``False``.
- The writer thread owns the write connection. It drains the queue and inserts up to
  ``batch`` rows per transaction; only after the commit does it append them, with
  their SQLite ids, to the window and publish them on the feed, so ids reach both in
  increasing order and every row a reader sees there is already in SQLite. A failed
  transaction is rolled back and retried with backoff: rows are never skipped.
  It also keeps ``last_id`` (the newest committed id).
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
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Feed", "Listener", "Store", "band", "stages_ms", "pipeline_latency_ms", "NEAR_MARGIN"]

log = logging.getLogger(__name__)

# A named face whose score is within this much of the threshold is "near" (amber):
# one more point of noise and it would have been unknown.
NEAR_MARGIN = 0.10

# The column ``latency_ms`` holds the sum of the result's stage durations (see
# stages_ms). It keeps its old name so databases written by earlier versions open
# unchanged; rows expose it as ``stages_ms`` (and ``latency_ms`` for compatibility).
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS detections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL    NOT NULL,
    node        TEXT    NOT NULL,
    seq         INTEGER,
    name        TEXT    NOT NULL,
    score       REAL,
    threshold   REAL,
    latency_ms  REAL,
    model       TEXT,
    raw         TEXT    NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS detections_node ON detections (node, id)",
    "CREATE INDEX IF NOT EXISTS detections_name ON detections (name, id)",
    # node + name together: without it, a rare name at one node walks that node's rows.
    "CREATE INDEX IF NOT EXISTS detections_node_name ON detections (node, name, id)",
    # The row count, kept by SQLite itself: /healthz reads one row instead of COUNT(*).
    "CREATE TABLE IF NOT EXISTS detections_count (n INTEGER NOT NULL)",
    """CREATE TRIGGER IF NOT EXISTS detections_count_insert AFTER INSERT ON detections
    BEGIN UPDATE detections_count SET n = n + 1; END""",
    """CREATE TRIGGER IF NOT EXISTS detections_count_delete AFTER DELETE ON detections
    BEGIN UPDATE detections_count SET n = n - 1; END""",
)

_COLUMNS = "id, received_at, node, seq, name, score, threshold, latency_ms, model"
_INSERT = (
    "INSERT INTO detections (received_at, node, seq, name, score, threshold, latency_ms,"
    " model, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INT64 = (-(2**63), 2**63 - 1)
_LOG_EVERY_S = 10.0


def stages_ms(timings: Any) -> float | None:
    """Sum of the per-stage durations of a result, in ms.

    This is work done (edge stages + classifier queue wait and search), *not* capture →
    result: network transit is not in it. Capture → result is measured by each edge on
    its own clock and reported as p50/p99 in its status. Keys starting with ``total``
    (e.g. ``total_classifier_ms``) are aggregates of other stages and are left out so
    nothing is counted twice. ``None`` when the result carries no usable timings.
    """
    if not isinstance(timings, Mapping):
        return None
    total = 0.0
    seen = False
    for key, value in timings.items():
        if str(key).startswith("total"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            continue
        total += float(value)
        seen = True
    return round(total, 3) if seen else None


#: The old name of :func:`stages_ms` (same function).
pipeline_latency_ms = stages_ms


def band(name: str, score: float | None, threshold: float | None) -> str:
    """Colour class of a detection: ``strong``, ``near`` or ``unknown``."""
    if name == "unknown":
        return "unknown"
    if score is None or threshold is None:
        return "near"
    return "strong" if score >= threshold + NEAR_MARGIN else "near"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:  # SQLite's INTEGER
        return value
    return None


def _text(value: Any) -> str | None:
    """A string SQLite can store (UTF-8), else ``None`` (JSON allows lone surrogates)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _make_row(
    rid: int,
    received_at: float,
    node: str,
    seq: int | None,
    name: str,
    score: float | None,
    threshold: float | None,
    stages: float | None,
    model: str | None,
) -> dict[str, Any]:
    """One detection as the JSON endpoints, the window and the feed show it.

    ``stages_ms`` is the sum of the result's stage durations (:func:`stages_ms`);
    ``latency_ms`` is the same value under its old name, kept for compatibility.
    """
    return {
        "id": rid,
        "received_at": received_at,
        "node": node,
        "seq": seq,
        "name": name,
        "score": score,
        "threshold": threshold,
        "stages_ms": stages,
        "latency_ms": stages,
        "model": model,
        "band": band(name, score, threshold),
    }


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
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if queue_size < 1 or batch < 1:
            raise ValueError("queue_size and batch must be >= 1")
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
            self._create_schema(self._db)
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM detections ORDER BY id DESC LIMIT ?", (window,)
            ).fetchall()
        except BaseException:
            self._db.close()
            raise

        # Written by the writer thread, read as snapshots under _lock.
        self._lock = threading.Lock()
        self._window: deque[dict[str, Any]] = deque(
            (self._row(r) for r in reversed(rows)), maxlen=window
        )
        self._last_id = self._window[-1]["id"] if self._window else 0
        self._written = 0
        self._failed = 0
        self._writer_error: str | None = None

        # The hand-over queue and its counters, under _cond (O(1) work only).
        self._cond = threading.Condition()
        self._pending: deque[tuple[dict[str, Any], str]] = deque()
        self._queue_size = queue_size
        self._batch = batch
        self._submitted = 0  # rows accepted by add()
        self._handled = 0  # rows the writer is done with (written or counted as failed)
        self._dropped = 0  # rows add() refused because the queue was full
        self._closed = False
        self._stopping = False
        self._give_up = threading.Event()  # close() timed out: stop retrying
        self._warn = _Every()

        # Read connections (not used for :memory:, where readers share _db under it).
        self._shared_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._max_idle = max(0, readers)
        self._ro_uri = None if self._memory else Path(self.path).resolve().as_uri() + "?mode=ro"

        self._writer = threading.Thread(target=self._run, name="monitor-store-writer", daemon=True)
        self._writer.start()

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
        )
        # ensure_ascii (the default) also makes lone surrogates storable.
        raw = json.dumps(result, separators=(",", ":"), default=str)
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
            node,
            dropped,
        )
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every row handed in before this call is written (or counted as
        failed); ``False`` if that took longer than ``timeout`` or the writer is gone."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(
                lambda: self._handled >= target or not self._writer.is_alive(), timeout
            ) and (self._handled >= target)

    # --- the writer thread ------------------------------------------------------------

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
            self.feed.publish(row)

    def _retrying(self, insert: Callable[[], list[int]], n: int) -> list[int | None]:
        """``insert()`` until it commits; locked/busy/I/O errors are retried with backoff
        (rows are never skipped) unless close() has given up, which counts them lost."""
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
        if self._memory:
            with self._shared_lock:
                yield self._db
        else:
            yield self._db

    # --- reading (any thread; own connections, no writer lock) ------------------------

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        if self._memory:
            with self._shared_lock:
                yield self._db
            return
        with self._pool_lock:
            if self._closed:
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
                    if not self._closed and len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        keep = True
            if not keep:
                conn.close()

    def window(self, node: str | None = None) -> list[dict[str, Any]]:
        """The in-memory window, oldest first (optionally one node's rows only).

        The rows are shared with the window and the feed: read them, don't change them.
        """
        with self._lock:
            rows = list(self._window)
        return [r for r in rows if node is None or r["node"] == node]

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
        return [self._row(r, raw=raw) for r in rows]

    def count(self) -> int:
        """Rows in SQLite: one row read from the trigger-kept counter, not a scan."""
        with self._reading() as db:
            found = db.execute("SELECT n FROM detections_count").fetchone()
        return int(found[0]) if found else 0

    def last_id(self) -> int:
        """The newest committed id (0 for an empty log)."""
        with self._lock:
            return self._last_id

    def stats(self) -> dict[str, Any]:
        """The writer's counters (a snapshot; no SQLite)."""
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
                "writer_alive": self._writer.is_alive(),
                "writer_error": self._writer_error,
            }

    def close(self, timeout: float = 10.0) -> None:
        """Write what was handed in (waiting up to ``timeout``), then close everything.

        Rows still unwritten after that are counted as dropped and logged."""
        if not self.flush(timeout):
            self._give_up.set()
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        # A writer inside SQLite's busy wait returns within busy_timeout.
        self._writer.join(self._busy_timeout + 5.0)
        self.feed.close()
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._writer.is_alive():
            log.error("monitor: the detection log writer did not stop; leaving its connection")
            return
        with self._shared_lock:
            self._db.close()

    # --- helpers ---------------------------------------------------------------------

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

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # triggers and the counter's first value together
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            if db.execute("SELECT n FROM detections_count").fetchone() is None:
                # Once per database (a new one, or one from before the counter).
                db.execute("INSERT INTO detections_count (n) SELECT COUNT(*) FROM detections")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _row(r: sqlite3.Row, raw: bool = False) -> dict[str, Any]:
        row = _make_row(
            int(r["id"]),
            r["received_at"],
            r["node"],
            r["seq"],
            r["name"],
            r["score"],
            r["threshold"],
            r["latency_ms"],
            r["model"],
        )
        if raw:
            row["result"] = json.loads(r["raw"])
        return row


def _values(row: dict[str, Any], raw: str) -> tuple[Any, ...]:
    return (
        row["received_at"],
        row["node"],
        row["seq"],
        row["name"],
        row["score"],
        row["threshold"],
        row["stages_ms"],
        row["model"],
        raw,
    )
