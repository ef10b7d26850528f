"""What the classifier refused, counted per node and reason, and when it may say so.

A flood of bad messages must not become a flood of error replies and log lines: each
(node, reason) is reported at most once per ``every_s``, while its count counts them
all.

>>> r = Refusals(every_s=1.0)
>>> r.count("door", "bad_dim", now=0.0), r.count("door", "bad_dim", now=0.5)
((1, True), (2, False))
>>> r.count("door", "bad_dim", now=1.5), r.by_node()
((3, True), {'door': 3})
"""

from __future__ import annotations

import threading

#: How often one node may be told about one reason, and warned of in the log.
REPORT_EVERY_S = 1.0


class Refusals:
    """Counts refusals per (node, reason) and says when one may be reported again.

    Used on the delivery thread (and the worker, for ``queue_full``); read by the
    statistics thread; all under its lock.
    """

    def __init__(self, every_s: float = REPORT_EVERY_S) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], float] = {}
        self.bad_topics = 0

    def count(self, node: str, reason: str, now: float) -> tuple[int, bool]:
        """Count one; returns (count so far, whether to report it now)."""
        key = (node, reason)
        with self._lock:
            n = self._counts[key] = self._counts.get(key, 0) + 1
            due = now - self._last.get(key, -1e18) >= self.every_s
            if due:
                self._last[key] = now
            return n, due

    def topic(self, now: float) -> bool:
        """Count a message on an invalid topic; whether to log it now."""
        with self._lock:
            self.bad_topics += 1
            due = now - self._last.get(("", "bad_topic"), -1e18) >= self.every_s
            if due:
                self._last[("", "bad_topic")] = now
            return due

    def by_node(self, skip: str = "queue_full") -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for (node, reason), n in self._counts.items():
                if reason != skip:
                    out[node] = out.get(node, 0) + n
            return out
