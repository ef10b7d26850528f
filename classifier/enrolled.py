"""The enrolment store beside the gallery: vectors people were taught from (a camera,
a sighting) and corrections ("this was not Alice"), kept across restarts.

One SQLite file, ``<cache_dir>/gallery.sqlite3`` (the gallery's cache folder), owned by
the classifier's gallery thread; ``facewire gallery`` opens it too, for listing and
forgetting. Vectors are stored with the model id they came from: only those of the
gallery's model are used. Every change is an audit line in the same file.

>>> import numpy as np, tempfile, pathlib
>>> store = EnrolmentStore(pathlib.Path(tempfile.mkdtemp()) / "gallery.sqlite3")
>>> ids = store.enrol("ann", [np.ones(4, np.float32) / 2], "m1", source="camera")
>>> vecs, names = store.enrolled("m1")
>>> names, vecs.shape, store.enrolled("m2")[1]
(['ann'], (1, 4), [])
>>> store.forget("ann"), store.enrolled("m1")[1]
({'enrolled': 1, 'corrections': 0}, [])
>>> [line["action"] for line in store.audit()]
['enrol', 'forget']
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrolled (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    person  TEXT NOT NULL,
    model   TEXT NOT NULL,
    vector  BLOB NOT NULL,
    source  TEXT NOT NULL,
    node    TEXT,
    seq     INTEGER,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS enrolled_model ON enrolled (model, person);
CREATE TABLE IF NOT EXISTS corrections (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    person  TEXT NOT NULL,
    model   TEXT NOT NULL,
    vector  BLOB NOT NULL,
    node    TEXT,
    seq     INTEGER,
    at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_model ON corrections (model, person);
CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    action  TEXT NOT NULL,
    person  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
"""


def _blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, "<f4").tobytes()


def _matrix(rows: Sequence[bytes], dim: int | None = None) -> np.ndarray:
    if not rows:
        return np.zeros((0, dim or 0), np.float32)
    return np.stack([np.frombuffer(r, "<f4") for r in rows]).astype(np.float32)


class EnrolmentStore:
    """Thread-safe (one connection under a lock: a few writes a minute at most)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    # --- writing -------------------------------------------------------------------

    def enrol(
        self,
        person: str,
        vectors: Sequence[np.ndarray],
        model: str,
        source: str,
        sightings: Sequence[tuple[str, int]] = (),
    ) -> list[int]:
        """Keep ``vectors`` as ``person``'s; ``sightings`` (node, seq) parallel to them."""
        at = time.time()
        where = list(sightings) + [(None, None)] * (len(vectors) - len(sightings))
        with self._lock, self._db:
            ids = []
            for vec, (node, seq) in zip(vectors, where, strict=True):
                cur = self._db.execute(
                    "INSERT INTO enrolled (person, model, vector, source, node, seq, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (person, model, _blob(vec), source, node, seq, at),
                )
                ids.append(int(cur.lastrowid or 0))
            self._audit(at, "enrol", person, {"vectors": len(ids), "source": source})
        return ids

    def correct(self, person: str, vector: np.ndarray, model: str, node: str, seq: int) -> int:
        """Keep ``vector`` as evidence that its face was *not* ``person``."""
        at = time.time()
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO corrections (person, model, vector, node, seq, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (person, model, _blob(vector), node, seq, at),
            )
            self._audit(at, "correct", person, {"node": node, "seq": seq})
        return int(cur.lastrowid or 0)

    def forget(self, person: str, detail: dict[str, Any] | None = None) -> dict[str, int]:
        """Delete every enrolled vector and correction of ``person``; an audit line
        (with ``detail``: what else was deleted elsewhere) says so."""
        at = time.time()
        with self._lock, self._db:
            enrolled = self._db.execute("DELETE FROM enrolled WHERE person = ?", (person,))
            corrected = self._db.execute("DELETE FROM corrections WHERE person = ?", (person,))
            counts = {"enrolled": enrolled.rowcount, "corrections": corrected.rowcount}
            self._audit(at, "forget", person, {**counts, **(detail or {})})
        return counts

    def _audit(self, at: float, action: str, person: str, detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, action, person, detail) VALUES (?, ?, ?, ?)",
            (at, action, person, json.dumps(detail, sort_keys=True)),
        )

    # --- reading -------------------------------------------------------------------

    def enrolled(self, model: str) -> tuple[np.ndarray, list[str]]:
        """The vectors enrolled for ``model`` and their people, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT person, vector FROM enrolled WHERE model = ? ORDER BY id", (model,)
            ).fetchall()
        return _matrix([r[1] for r in rows]), [r[0] for r in rows]

    def models(self) -> dict[str, int]:
        """Enrolled vectors and corrections per model id they were made with."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model, COUNT(*) FROM (SELECT model FROM enrolled"
                " UNION ALL SELECT model FROM corrections) GROUP BY model"
            ).fetchall()
        return {str(m): int(n) for m, n in rows}

    def corrections(self, model: str) -> tuple[np.ndarray, list[str]]:
        """The corrected vectors of ``model`` and the people they were *not*."""
        with self._lock:
            rows = self._db.execute(
                "SELECT person, vector FROM corrections WHERE model = ? ORDER BY id", (model,)
            ).fetchall()
        return _matrix([r[1] for r in rows]), [r[0] for r in rows]

    def people(self) -> dict[str, dict[str, int]]:
        """Per person: enrolled vectors by source, and corrections (any model)."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for person, source, n in self._db.execute(
                "SELECT person, source, COUNT(*) FROM enrolled GROUP BY person, source"
            ):
                out.setdefault(person, {})[source] = n
            for person, n in self._db.execute(
                "SELECT person, COUNT(*) FROM corrections GROUP BY person"
            ):
                out.setdefault(person, {})["corrections"] = n
        return out

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, action, person, detail FROM audit ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {"at": at, "action": action, "person": person, "detail": json.loads(detail)}
            for at, action, person, detail in reversed(rows)
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
