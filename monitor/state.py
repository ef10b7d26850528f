"""What the monitor knows right now, apart from the detection log.

Latest status of every node and of the classifier, the latest threshold statistics,
recent errors, per-node latency history (from the statuses' p50/p99) and counts of
messages that could not be understood.

Threads: the MQTT network thread owns it — the subscriber's handlers are its only
writers, and every write is a few dict/deque operations under ``_lock`` (no I/O, so
it is safe on that thread). The web server's threads only read, through the methods
below, which return copies taken under the same lock; everything they copy is
bounded (``errors``, ``history`` and ``malformed`` are fixed-length deques).

Any client may publish, so nothing here grows with what it sends: at most
``max_nodes`` node ids are kept (the least recently seen is forgotten first, and
counted), and every stored message is cut by :func:`bounded` (strings, lists and
objects; the wire decoders already bound most fields).
``broker_connected``/``broker_address`` are set once by the subscriber at start.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["State"]

# A node whose last message is older than this is shown as stale on the pages.
STALE_AFTER_S = 30.0
#: Default for ``max_nodes`` (config ``monitor.max_nodes``).
MAX_NODES = 1000
#: What :func:`bounded` keeps: characters of a string, entries of a list or object.
MAX_STR = 1000
MAX_ITEMS = 4096


def bounded(value: Any, max_str: int = MAX_STR, max_items: int = MAX_ITEMS, depth: int = 0) -> Any:
    """A copy of a decoded JSON value with every string, list and object cut to size
    (nesting past 8 levels becomes ``None``), so what a client publishes cannot grow
    the monitor's memory or its responses."""
    if isinstance(value, str):
        return value if len(value) <= max_str else value[:max_str] + "…"
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if len(out) >= max_items:
                break
            out[bounded(str(key), 64)] = bounded(item, max_str, max_items, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [bounded(v, max_str, max_items, depth + 1) for v in list(value)[:max_items]]
    return value


class State:
    def __init__(
        self,
        errors: int = 200,
        history: int = 360,
        malformed: int = 50,
        max_nodes: int = MAX_NODES,
        alerts: int = 50,
    ) -> None:
        if max_nodes < 1:
            raise ValueError("max_nodes must be >= 1")
        self._lock = threading.Lock()
        self.started_at = time.time()
        # In order of last touch (oldest first): the first is the one to forget.
        self._nodes: dict[str, dict[str, Any]] = {}
        self.max_nodes = max_nodes
        self._forgotten = 0
        self._history: dict[str, deque[tuple[float, float | None, float | None]]] = {}
        self._history_len = history
        self._classifier: dict[str, Any] | None = None
        self._classifier_at: float | None = None
        self._thresholds: dict[str, Any] | None = None
        self._thresholds_at: float | None = None
        self._errors: deque[dict[str, Any]] = deque(maxlen=errors)
        self._errors_total = 0
        self._malformed: deque[dict[str, Any]] = deque(maxlen=malformed)
        self._malformed_total = 0
        self._counts: dict[str, int] = {}
        self._gallery_replies: deque[dict[str, Any]] = deque(maxlen=50)
        self._alerts: deque[dict[str, Any]] = deque(maxlen=alerts)
        self._alerts_total = 0
        # Set by the subscriber: () -> bool, is the broker connection up?
        self.broker_connected: Callable[[], bool] = lambda: False
        self.broker_address = ""

    # --- writes (from the MQTT thread) ------------------------------------------------

    def _node(self, node: str) -> dict[str, Any]:
        entry = self._nodes.pop(node, None)
        if entry is not None:
            self._nodes[node] = entry  # now the most recently seen
        else:
            while len(self._nodes) >= self.max_nodes:
                oldest = next(iter(self._nodes))
                del self._nodes[oldest]
                self._history.pop(oldest, None)
                self._forgotten += 1
            entry = self._nodes[node] = {
                "node": node,
                "state": "unknown",  # no status message seen yet
                "status": None,
                "status_at": None,
                "last_seen": None,
                "results": 0,
                "last_result_at": None,
                "errors": 0,
                "alerts": 0,
                "last_alert": None,
            }
        return entry

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def seen_result(self, node: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            entry = self._node(node)
            entry["results"] += 1
            entry["last_result_at"] = at
            entry["last_seen"] = at

    def node_status(self, node: str, status: Mapping[str, Any], at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            entry = self._node(node)
            state = status.get("state")
            entry["state"] = state if isinstance(state, str) and state else "unknown"
            # Merge: a last will ({"node", "state": "offline"}) keeps the last known
            # model, fps and latency on display.
            entry["status"] = bounded({**(entry["status"] or {}), **dict(status)}, 200, 64)
            entry["status_at"] = at
            entry["last_seen"] = at
            lat = status.get("latency_ms")
            if entry["state"] == "online" and isinstance(lat, Mapping):
                p50, p99 = _num(lat.get("p50")), _num(lat.get("p99"))
                if p50 is not None or p99 is not None:
                    hist = self._history.setdefault(node, deque(maxlen=self._history_len))
                    hist.append((at, p50, p99))

    def forget_node_status(self, node: str) -> None:
        """An empty retained status: the node was decommissioned."""
        with self._lock:
            entry = self._nodes.get(node)
            if entry is None:
                return
            if entry["results"] == 0 and entry["errors"] == 0:
                del self._nodes[node]
                self._history.pop(node, None)
            else:
                entry.update(state="unknown", status=None, status_at=None)

    def classifier_status(self, status: Mapping[str, Any] | None, at: float | None = None) -> None:
        with self._lock:
            self._classifier = bounded(dict(status), 200) if status is not None else None
            self._classifier_at = (time.time() if at is None else at) if status else None

    def thresholds(self, stats: Mapping[str, Any] | None, at: float | None = None) -> None:
        with self._lock:
            self._thresholds = bounded(dict(stats), 200) if stats is not None else None
            self._thresholds_at = (time.time() if at is None else at) if stats else None

    def error(self, node: str, payload: Mapping[str, Any], at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            entry = self._node(node)
            entry["errors"] += 1
            entry["last_seen"] = at
            self._errors.append({"received_at": at, **bounded(dict(payload)), "node": node})
            self._errors_total += 1

    def alert(self, alert: Mapping[str, Any], at: float | None = None) -> None:
        """An intruder alert (``faces/alerts``): kept among the last ones, and counted
        on its node."""
        at = time.time() if at is None else at
        row = {"received_at": at, **bounded(dict(alert), 200, 64)}
        with self._lock:
            self._alerts.append(row)
            self._alerts_total += 1
            node = alert.get("node")
            if isinstance(node, str) and node:
                entry = self._node(node)
                entry["alerts"] += 1
                entry["last_alert"] = row
                entry["last_seen"] = at

    def malformed(self, topic: str, reason: str, payload: bytes, at: float | None = None) -> None:
        at = time.time() if at is None else at
        with self._lock:
            self._malformed_total += 1
            self._malformed.append(
                {
                    "received_at": at,
                    "topic": bounded(topic, 200),
                    "reason": bounded(reason, 500),
                    "payload": payload[:200].decode("utf-8", "replace"),
                }
            )

    # --- reads (snapshots for the web threads) ----------------------------------------

    @property
    def nodes_forgotten(self) -> int:
        """Node ids dropped to stay within ``max_nodes``."""
        with self._lock:
            return self._forgotten

    @property
    def malformed_total(self) -> int:
        with self._lock:
            return self._malformed_total

    def nodes(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        with self._lock:
            out = []
            for name in sorted(self._nodes):
                entry = copy.deepcopy(self._nodes[name])
                status = entry.pop("status") or {}
                entry.update(
                    model=status.get("model"),
                    fps=status.get("fps"),
                    latency_ms=status.get("latency_ms"),
                    sent=status.get("sent"),
                    dropped_dedup=status.get("dropped_dedup"),
                    buffered=status.get("buffered"),
                    ts=status.get("ts"),
                )
                age = None if entry["last_seen"] is None else now - entry["last_seen"]
                entry["age_s"] = None if age is None else round(age, 3)
                entry["stale"] = bool(
                    entry["state"] == "online" and age is not None and age > STALE_AFTER_S
                )
                entry["history"] = [list(p) for p in self._history.get(name, ())]
                out.append(entry)
            return out

    def classifier(self) -> dict[str, Any] | None:
        with self._lock:
            if self._classifier is None:
                return None
            return {**copy.deepcopy(self._classifier), "received_at": self._classifier_at}

    def threshold_stats(self) -> tuple[dict[str, Any] | None, float | None]:
        with self._lock:
            return copy.deepcopy(self._thresholds), self._thresholds_at

    def gallery_reply(self, reply: Mapping[str, Any], at: float | None = None) -> None:
        """A ``faces/gallery/reply``: what an enrolment, correction or reload did."""
        with self._lock:
            self._gallery_replies.append(
                {"received_at": at or time.time(), **bounded(dict(reply), MAX_STR, 256)}
            )

    def gallery_replies(self, request_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r) for r in reversed(self._gallery_replies)]
        return [r for r in rows if request_id is None or r.get("request_id") == request_id]

    def errors(self, limit: int = 100, node: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(e) for e in reversed(self._errors) if node is None or e["node"] == node]
        return rows[:limit]

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last intruder alerts, newest first."""
        with self._lock:
            return [dict(a) for a in reversed(self._alerts)][:limit]

    def alerts_total(self) -> int:
        with self._lock:
            return self._alerts_total

    def errors_total(self) -> int:
        with self._lock:
            return self._errors_total

    def malformed_recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(m) for m in reversed(self._malformed)]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
