"""The detection log: every result the classifier publishes, one SQLite row each.

SQLite (WAL mode) is the record; a bounded in-memory window holds the newest rows for
the live pages. Opening an existing database reloads that window from disk, so a
monitor restart loses nothing. New rows are also pushed to a :class:`Feed`, which is
what the server-sent-events stream of ``/log/html`` listens to.

Writes come from the MQTT network thread and reads from the web server's threads;
one connection guarded by a lock serves both.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["Feed", "Store", "band", "pipeline_latency_ms", "NEAR_MARGIN"]

# A named face whose score is within this much of the threshold is "near" (amber):
# one more point of noise and it would have been unknown.
NEAR_MARGIN = 0.10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS detections (
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
);
CREATE INDEX IF NOT EXISTS detections_node ON detections (node, id);
CREATE INDEX IF NOT EXISTS detections_name ON detections (name, id);
"""

_COLUMNS = "id, received_at, node, seq, name, score, threshold, latency_ms, model"


def pipeline_latency_ms(timings: Any) -> float | None:
    """Sum of the per-stage durations of a result, in ms.

    Keys starting with ``total`` (e.g. ``total_classifier_ms``) are aggregates of
    other stages and are left out so nothing is counted twice. ``None`` when the
    result carries no usable timings.
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
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class Feed:
    """Fan-out of new rows to live listeners (one bounded queue per listener).

    A listener that does not keep up loses rows rather than slowing the writer; it
    can catch up from SQLite with the last id it saw.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._queues: set[queue.Queue[dict[str, Any] | None]] = set()
        self._closed = False

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._queues)

    def listen(self) -> queue.Queue[dict[str, Any] | None]:
        q: queue.Queue[dict[str, Any] | None] = queue.Queue(self._maxsize)
        with self._lock:
            if self._closed:
                q.put_nowait(None)
            self._queues.add(q)
        return q

    def unlisten(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            self._queues.discard(q)

    def publish(self, row: dict[str, Any]) -> None:
        with self._lock:
            targets = list(self._queues)
        for q in targets:
            with contextlib.suppress(queue.Full):  # a slow listener loses rows
                q.put_nowait(row)

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
    """SQLite detection log plus an in-memory window of the newest ``window`` rows."""

    def __init__(self, path: str | Path, window: int = 500) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.window_size = window
        self._window: deque[dict[str, Any]] = deque(maxlen=window)
        self.feed = Feed()
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM detections ORDER BY id DESC LIMIT ?", (window,)
        ).fetchall()
        for r in reversed(rows):
            self._window.append(self._row(r))

    # --- writing ---------------------------------------------------------------------

    def add(
        self, result: Mapping[str, Any], node: str | None = None, received_at: float | None = None
    ) -> dict[str, Any]:
        """Record one result message; returns the stored row (with its ``id``).

        ``node`` (from the topic) wins over the payload's own ``node`` field.
        """
        name = result.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("result has no 'name'")
        node = node or result.get("node")
        if not isinstance(node, str) or not node:
            raise ValueError("result has no 'node'")
        received_at = time.time() if received_at is None else received_at
        values = (
            received_at,
            node,
            _int(result.get("seq")),
            name,
            _num(result.get("score")),
            _num(result.get("threshold")),
            pipeline_latency_ms(result.get("timings")),
            result.get("model") if isinstance(result.get("model"), str) else None,
            json.dumps(result, separators=(",", ":"), default=str),
        )
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO detections (received_at, node, seq, name, score, threshold,"
                " latency_ms, model, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            row = self._make_row(cur.lastrowid, *values[:-1])
            self._window.append(row)
        self.feed.publish(row)
        return row

    # --- reading ---------------------------------------------------------------------

    def window(self, node: str | None = None) -> list[dict[str, Any]]:
        """The in-memory window, oldest first (optionally one node's rows only)."""
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
        ascending order (what a client catching up needs).
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
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [self._row(r, raw=raw) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM detections").fetchone()[0])

    def last_id(self) -> int:
        with self._lock:
            return self._window[-1]["id"] if self._window else 0

    def close(self) -> None:
        self.feed.close()
        with self._lock:
            self._db.close()

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _make_row(
        rid: Any,
        received_at: float,
        node: str,
        seq: int | None,
        name: str,
        score: float | None,
        threshold: float | None,
        latency_ms: float | None,
        model: str | None,
    ) -> dict[str, Any]:
        return {
            "id": int(rid),
            "received_at": received_at,
            "node": node,
            "seq": seq,
            "name": name,
            "score": score,
            "threshold": threshold,
            "latency_ms": latency_ms,
            "model": model,
            "band": band(name, score, threshold),
        }

    def _row(self, r: sqlite3.Row, raw: bool = False) -> dict[str, Any]:
        row = self._make_row(
            r["id"],
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
