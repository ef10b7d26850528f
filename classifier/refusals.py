"""What the classifier refused, counted per node and reason, and when it may say so.

A flood of bad messages must not become a flood of error replies and log lines: each
(node, reason) is reported at most once per ``every_s``, while its count counts them
all.

>>> r = Refusals(every_s=1.0)
>>> r.count("door", "bad_dim", now=0.0), r.count("door", "bad_dim", now=0.5)
((1, True), (2, False))
>>> r.count("door", "bad_dim", now=1.5), r.by_node()
((3, True), {'door': 3})

Thousands of invented node ids must not grow it without bound: past ``max_keys``
(node, reason) pairs, those reported longest ago are folded into :data:`OTHERS`, so
the totals stay exact.

>>> r = Refusals(max_keys=2)
>>> for i, node in enumerate(["a", "b", "c"]):
...     _ = r.count(node, "bad_dim", now=float(i))
>>> r.by_node()
{'b': 1, 'c': 1, '(other nodes)': 1}

Nor must a thousand nodes' refusals become a thousand log lines a second:

>>> r = Refusals()
>>> [r.may_log(5.0) for _ in range(11)][-2:]   # ten lines a second, then none
[0, None]
>>> r.may_log(6.0)                             # the next says one was held back
1
"""

from __future__ import annotations

import threading

#: How often one node may be told about one reason, and warned of in the log.
REPORT_EVERY_S = 1.0
#: (node, reason) pairs remembered; the rest are counted under OTHERS.
MAX_KEYS = 2000
OTHERS = "(other nodes)"
#: Warning lines a second for all refusals together (each pair's own limit aside).
LOG_LINES_PER_S = 10


class Refusals:
    """Counts refusals per (node, reason) and says when one may be reported again.

    Used on the delivery thread (and the worker, for ``queue_full``); read by the
    statistics thread; all under its lock.
    """

    def __init__(self, every_s: float = REPORT_EVERY_S, max_keys: int = MAX_KEYS) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], float] = {}
        self._others: dict[str, int] = {}  # reason → count of the pairs folded away
        self.bad_topics = 0
        self._log_second = -1.0
        self._log_lines = 0
        self.not_logged = 0  # warning lines held back since the last one written

    def may_log(self, now: float) -> int | None:
        """Whether a warning line may be written now (at most ``LOG_LINES_PER_S`` a
        second): ``None`` if not, else how many were held back before it."""
        with self._lock:
            second = float(int(now))
            if second != self._log_second:
                self._log_second, self._log_lines = second, 0
            if self._log_lines >= LOG_LINES_PER_S:
                self.not_logged += 1
                return None
            self._log_lines += 1
            held, self.not_logged = self.not_logged, 0
            return held

    def _fold(self) -> None:
        """Fold the pairs reported longest ago into OTHERS (under the lock)."""
        keep = self.max_keys * 3 // 4
        oldest = sorted(self._counts, key=lambda k: self._last.get(k, -1e18))
        for key in oldest[: len(self._counts) - keep]:
            self._others[key[1]] = self._others.get(key[1], 0) + self._counts.pop(key)
            self._last.pop(key, None)

    def count(self, node: str, reason: str, now: float) -> tuple[int, bool]:
        """Count one; returns (count so far, whether to report it now)."""
        key = (node, reason)
        with self._lock:
            if key not in self._counts and len(self._counts) >= self.max_keys:
                self._fold()
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

    def by_reason(self) -> dict[str, int]:
        """Refusals so far by reason (those folded into OTHERS included; ``bad_topic``
        counted apart, in ``bad_topics``)."""
        with self._lock:
            out = dict(self._others)
            for (_, reason), n in self._counts.items():
                out[reason] = out.get(reason, 0) + n
            return out

    def by_node(self, skip: str = "queue_full") -> dict[str, int]:
        with self._lock:
            out: dict[str, int] = {}
            for (node, reason), n in self._counts.items():
                if reason != skip:
                    out[node] = out.get(node, 0) + n
            others = sum(n for reason, n in self._others.items() if reason != skip)
            if others:
                out[OTHERS] = others
            return out
