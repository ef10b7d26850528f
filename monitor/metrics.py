"""The monitor's Prometheus metrics, served on ``/metrics`` behind the monitor's login
(a bearer token is what Prometheus sends: ``authorization`` in the scrape config).

Nothing is counted as messages arrive: a scrape reads the detection log (SQLite, the
record) for the rows written since the scrape before and folds them into counters and
histograms, and reads the state's and the writer's counters. So the MQTT thread does
no extra work, and a count is exact: every logged result is counted once. At most
``per_scrape`` rows are read per scrape (what is left waits for the next one, and
``facewire_monitor_metrics_backlog_rows`` says how many are waiting).

Counters start at zero with the process (rows logged before it started are not
counted), as Prometheus expects of a counter. Names and labels: docs/metrics.md.

Threads: :meth:`MonitorCollector.collect` runs on a web server thread, under its own
lock (two scrapes at once must not count the same rows twice).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from facewire.bus.latency import LATENCY_BUCKETS_S, OTHER, Buckets
from facewire.bus.messages import CLASSIFIER_STAGES, EDGE_STAGES, UNKNOWN
from facewire.monitor.state import STALE_AFTER_S, State
from facewire.monitor.store import Store

__all__ = ["CAPTURE_BUCKETS_S", "MAX_NODE_LABELS", "MonitorCollector", "MonitorMetrics"]

#: Bucket bounds of capture → result, seconds: a LAN round trip to a backlog.
CAPTURE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Nodes with a label of their own; later ones are counted as node="other". First come,
#: first named: a counter's series must not move between labels.
MAX_NODE_LABELS = 50
#: Rows read per query, and per scrape at most.
CHUNK = 2000
PER_SCRAPE = 20_000
#: The stage names a result's timings may have a series for (the wire's vocabulary);
#: any other key a client sends is not one.
STAGES = (*EDGE_STAGES, *CLASSIFIER_STAGES)
MESSAGE_KINDS = (
    "result", "result_repeat", "status", "error", "classifier_status", "thresholds",
    "gallery_reply",
)  # fmt: skip


class MonitorCollector(Collector):
    """Reads a monitor's store and state at scrape time (see the module text)."""

    def __init__(
        self,
        store: Store,
        state: State,
        max_nodes: int = MAX_NODE_LABELS,
        per_scrape: int = PER_SCRAPE,
    ) -> None:
        self.store = store
        self.state = state
        self.max_nodes = max_nodes
        self.per_scrape = per_scrape
        self._lock = threading.Lock()
        self._after = store.last_id()  # counting starts now
        self._results: dict[tuple[str, str], int] = {}
        self._named: set[str] = set()
        self._capture = Buckets(CAPTURE_BUCKETS_S)
        self._stages = {stage: Buckets(LATENCY_BUCKETS_S) for stage in STAGES}

    def _label(self, node: str) -> str:
        if node in self._named:
            return node
        if len(self._named) < self.max_nodes and node != OTHER:
            self._named.add(node)
            return node
        return OTHER

    def _fold(self) -> None:
        """Count the rows logged since the last scrape (at most ``per_scrape``)."""
        left = self.per_scrape
        while left > 0:
            limit = min(CHUNK, left)
            rows = self.store.query(limit=limit, since=self._after, raw=True, oldest_first=True)
            if not rows:
                return
            delays: list[float] = []
            stages: dict[str, list[float]] = {}
            for row in rows:
                outcome = "unknown" if row["name"] == UNKNOWN else "known"
                key = (self._label(row["node"]), outcome)
                self._results[key] = self._results.get(key, 0) + 1
                if row["delay_s"] is not None:
                    delays.append(row["delay_s"])
                _stage_values(row.get("result"), stages)
            self._capture.fold(delays)
            for stage, values in stages.items():
                self._stages[stage].fold(values)
            self._after = rows[-1]["id"]
            left -= len(rows)
            if len(rows) < limit:
                return

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._fold()
            results = sorted(self._results.items())
            capture = self._capture.samples()
            stages = {stage: b.samples() for stage, b in self._stages.items()}
            backlog = max(0, self.store.last_id() - self._after)
        family = CounterMetricFamily(
            "facewire_monitor_results",
            f"results logged, by node (the first {self.max_nodes}; later ones as other) "
            "and outcome (known: named; unknown)",
            labels=["node", "outcome"],
        )
        for (node, outcome), n in results:
            family.add_metric([node, outcome], n)
        yield family
        buckets, total = capture
        hist = HistogramMetricFamily(
            "facewire_monitor_capture_to_result_seconds",
            "received by the monitor − captured on the edge, per logged result (two "
            "clocks: their skew is in it)",
        )
        hist.add_metric([], buckets, total)
        yield hist
        hist = HistogramMetricFamily(
            "facewire_monitor_stage_seconds",
            "stage durations the logged results carry: the edge's (capture … encode) and "
            "the classifier's (queue, search, total_classifier)",
            labels=["stage"],
        )
        for stage in STAGES:
            buckets, total = stages[stage]
            hist.add_metric([stage], buckets, total)
        yield hist
        yield GaugeMetricFamily(
            "facewire_monitor_metrics_backlog_rows",
            "logged results not counted yet (read on the next scrapes)",
            value=backlog,
        )
        yield from self._state_metrics()

    def _state_metrics(self) -> Iterator[Metric]:
        state, store = self.state, self.store
        counts = dict.fromkeys(MESSAGE_KINDS, 0)
        counts.update(state.counts())
        family = CounterMetricFamily(
            "facewire_monitor_messages",
            "messages the monitor received, by kind (result_repeat: a result delivered "
            "again, logged once)",
            labels=["kind"],
        )
        for kind, n in sorted(counts.items()):
            family.add_metric([kind], n)
        yield family
        yield CounterMetricFamily(
            "facewire_monitor_malformed",
            "messages that did not decode (or, with sealing, were not signed)",
            value=state.malformed_total,
        )
        yield CounterMetricFamily(
            "facewire_monitor_error_reports",
            "error reports (faces/<node>/error) the classifier sent",
            value=state.errors_total(),
        )
        writer = store.stats()
        family = CounterMetricFamily(
            "facewire_monitor_rows",
            "detection log rows by fate (written; dropped: the writer's queue was full; "
            "failed: the database refused them)",
            labels=["fate"],
        )
        for fate in ("written", "dropped", "failed"):
            family.add_metric([fate], int(writer[fate]))
        yield family
        yield GaugeMetricFamily(
            "facewire_monitor_rows_queued",
            "rows waiting for the writer",
            value=int(writer["queued"]),
        )
        by_state = dict.fromkeys(("online", "offline", "stale", "unknown"), 0)
        for node in state.nodes():
            key = "stale" if node["stale"] else node["state"]
            by_state[key if key in by_state else "unknown"] += 1
        nodes = GaugeMetricFamily(
            "facewire_monitor_nodes",
            f"edge nodes known, by state (stale: online but silent over {STALE_AFTER_S:g} s)",
            labels=["state"],
        )
        for key, n in by_state.items():
            nodes.add_metric([key], n)
        yield nodes
        yield GaugeMetricFamily(
            "facewire_monitor_broker_connected",
            "1 while connected to the broker",
            value=1 if state.broker_connected() else 0,
        )
        yield GaugeMetricFamily(
            "facewire_monitor_stream_clients",
            "open live-log streams (server-sent events)",
            value=store.feed.listeners,
        )


_STAGE_KEYS = tuple((f"{stage}_ms", stage) for stage in STAGES)  # the results' JSON keys


def _stage_values(result: Any, out: dict[str, list[float]]) -> None:
    """The stage timings of one logged result (ms → s) into ``out``, by stage."""
    timings = result.get("timings") if isinstance(result, dict) else None
    if not isinstance(timings, dict):
        return
    for key, stage in _STAGE_KEYS:
        ms = timings.get(key)
        if type(ms) is float or type(ms) is int:  # not None, a bool or a string
            out.setdefault(stage, []).append(ms / 1000.0)


class MonitorMetrics:
    """The monitor's registry: :meth:`render` is the ``/metrics`` body."""

    def __init__(self, store: Store, state: State, **kw: Any) -> None:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        self.collector = MonitorCollector(store, state, **kw)
        self.registry = CollectorRegistry(auto_describe=False)
        for c in (self.collector, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(c)

    def render(self) -> bytes:
        return generate_latest(self.registry)
