"""The detection log's table and its rows: the SQL, and a result as a row.

Pure functions and constants, no state and no threads: :mod:`~facewire.monitor.store`
builds rows with them on the caller's thread and reads them back on the readers',
:mod:`~facewire.monitor.writer` inserts them on the writer thread. The underscored
names are those two modules' internals, not API; :data:`NEAR_MARGIN`, :func:`band`
and :func:`stages_ms` are also exported by :mod:`~facewire.monitor.store`.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from typing import Any

__all__ = ["NEAR_MARGIN", "band", "pipeline_latency_ms", "stages_ms"]

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
    raw         TEXT    NOT NULL,
    captured_at REAL,
    track_name  TEXT
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

_COLUMNS = (
    "id, received_at, node, seq, name, score, threshold, latency_ms, model, captured_at, track_name"
)
_INSERT = (
    "INSERT INTO detections (received_at, node, seq, name, score, threshold, latency_ms,"
    " model, raw, captured_at, track_name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: What a row keeps of a result's lists and objects: any client can publish a result,
#: and the decoder allows thousands of entries (issue 12: 1 MB results made 2.9 GB).
MAX_NEIGHBOURS = 16
MAX_TIMINGS = 32
MAX_KEY = 48
_INT64 = (-(2**63), 2**63 - 1)


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
    captured_at: float | None = None,
    track_name: str | None = None,
) -> dict[str, Any]:
    """One detection as the JSON endpoints, the window and the feed show it.

    ``stages_ms`` is the sum of the result's stage durations (:func:`stages_ms`);
    ``latency_ms`` is the same value under its old name, kept for compatibility.
    ``delay_s``: received (monitor clock) − captured (edge clock), ``None`` without a
    capture time; the two clocks may differ by their skew. ``track_name``: the
    decision of the face's track after this frame (the classifier's, over all its
    frames), ``None`` before it has one.
    """
    delay = None if captured_at is None else round(received_at - captured_at, 3)
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
        "captured_at": captured_at,
        "delay_s": delay,
        "track_name": track_name,
    }


def _row(r: sqlite3.Row, raw: bool = False) -> dict[str, Any]:
    """A row read back from SQLite (``SELECT _COLUMNS``, plus ``raw`` with ``raw``)."""
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
        r["captured_at"],
        r["track_name"],
    )
    if raw:
        row["result"] = json.loads(r["raw"])
    return row


def _values(row: dict[str, Any], raw: str) -> tuple[Any, ...]:
    """The parameters of :data:`_INSERT` for ``row`` and its message ``raw``."""
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
        row.get("captured_at"),
        row.get("track_name"),
    )


def _bounded(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` with its lists and objects cut to what a row keeps (the top
    :data:`MAX_NEIGHBOURS` neighbours, :data:`MAX_TIMINGS` timings with short keys):
    what is stored per row stays a few KB whatever a client publishes."""
    out = dict(result)
    neighbours = out.get("neighbours")
    if isinstance(neighbours, list) and len(neighbours) > MAX_NEIGHBOURS:
        out["neighbours"] = neighbours[:MAX_NEIGHBOURS]
    timings = out.get("timings")
    if isinstance(timings, Mapping):
        kept = [(k, v) for k, v in timings.items() if isinstance(k, str) and len(k) <= MAX_KEY]
        out["timings"] = dict(kept[:MAX_TIMINGS])
    for key, value in out.items():  # the decoder caps its strings; others are not ours
        if isinstance(value, str) and len(value) > 1000:
            out[key] = value[:1000]
    return out


def _create_schema(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")  # triggers and the counter's first value together
    try:
        for statement in _SCHEMA:
            db.execute(statement)
        columns = {r[1] for r in db.execute("PRAGMA table_info(detections)")}
        if "captured_at" not in columns:  # a log written before capture times were kept
            db.execute("ALTER TABLE detections ADD COLUMN captured_at REAL")
        if "track_name" not in columns:  # … or before track decisions were
            db.execute("ALTER TABLE detections ADD COLUMN track_name TEXT")
        if db.execute("SELECT n FROM detections_count").fetchone() is None:
            # Once per database (a new one, or one from before the counter).
            db.execute("INSERT INTO detections_count (n) SELECT COUNT(*) FROM detections")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
