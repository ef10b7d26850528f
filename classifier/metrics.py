"""The classifier's Prometheus metrics: ``/metrics`` on a small HTTP server of its own.

Everything is read from the service's state when Prometheus scrapes, by a custom
collector; the hot path only keeps what it kept before, plus two integer counters
(``received``, ``named``) and a count of the values each timing window was given
(:class:`CountedWindow`). The names, labels and a scrape config: docs/metrics.md.

Latency histograms are folded at scrape time from the service's timing windows: the
values added since the last scrape go into cumulative buckets. A window holds the last
2000 values; when more arrived between two scrapes, the ones it still holds stand for
all of them (the count stays exact, the buckets are scaled to it).

Threads: :meth:`ClassifierCollector.collect` runs on the metrics server's threads,
under its own lock (two scrapes at once must not fold the same values twice). It
reads the service through snapshots taken under the service's locks.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from facewire.bus import codec
from facewire.bus.latency import LATENCY_BUCKETS_S, OTHER, Buckets, LatencyWindow

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from facewire.classifier.service import ClassifierService
    from facewire.config.schema import MetricsConfig

__all__ = [
    "LATENCY_BUCKETS_S",
    "OTHER",
    "Buckets",
    "ClassifierCollector",
    "CountedWindow",
    "MetricsServer",
    "registry_for",
    "top_nodes",
]

log = logging.getLogger("facewire.classifier")


class CountedWindow(LatencyWindow):
    """A :class:`LatencyWindow` that also counts every value it was given, so a scrape
    can take just the values added since the one before (:meth:`since`).

    The count is an integer add under the lock ``extend`` takes anyway.
    """

    def __init__(self, size: int = 1000) -> None:
        super().__init__(size)
        self.added = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(value)
            self.added += 1

    def extend(self, values: Iterable[float]) -> None:
        values = values if isinstance(values, list) else list(values)  # a generator: once
        with self._lock:
            self._values.extend(values)
            self.added += len(values)

    def since(self, seen: int) -> tuple[int, list[float]]:
        """(values added so far, those of them after the first ``seen`` still held)."""
        with self._lock:
            held = len(self._values)
            new = max(0, min(self.added - seen, held))
            return self.added, list(itertools.islice(self._values, held - new, held))


def top_nodes(values: Mapping[str, int], keep: int) -> dict[str, int]:
    """The ``keep`` largest values by node, the rest summed under :data:`OTHER` (a
    gauge's labels: which nodes are named may change from scrape to scrape)."""
    if len(values) <= keep:
        return dict(values)
    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ranked[:keep])
    out[OTHER] = out.get(OTHER, 0) + sum(v for _, v in ranked[keep:])
    return out


def refusals_by_reason(service: ClassifierService) -> dict[str, int]:
    """Refusals so far by reason, with ``bad_topic`` (no node to count them under)."""
    out = service.refusals.by_reason()
    bad_topics = service.refusals.bad_topics
    if bad_topics:
        out["bad_topic"] = bad_topics
    return out


#: The refusals of a classifier taking plain embeddings, and of one taking sealed ones.
PLAIN_REASONS = ("bad_topic", *codec.CHECKS, "wrong_model", "queue_full")
SEALED_REASONS = (*PLAIN_REASONS, "unsealed", "unknown_node", "bad_seal", "stale", "replayed")

#: The service's timing windows: (stage label, attribute, per what).
WINDOWS = (
    ("queue", "_queue_ms", "message"),
    ("search", "_search_ms", "batch"),
    ("publish", "_publish_ms", "batch"),
    ("total", "_inside_ms", "message"),
)


class ClassifierCollector(Collector):
    """Reads a :class:`ClassifierService` at scrape time (see the module text)."""

    def __init__(self, service: ClassifierService, max_nodes: int = 20) -> None:
        self.service = service
        self.max_nodes = max_nodes
        self._lock = threading.Lock()
        self._seen = dict.fromkeys((stage for stage, _, _ in WINDOWS), 0)
        self._buckets = {stage: Buckets(LATENCY_BUCKETS_S) for stage, _, _ in WINDOWS}

    def _fold_windows(self) -> None:
        for stage, attr, _ in WINDOWS:
            window = getattr(self.service, attr, None)
            if not isinstance(window, CountedWindow):
                continue  # a service built without counted windows: no histogram
            added, values = window.since(self._seen[stage])
            new = added - self._seen[stage]
            self._seen[stage] = added
            self._buckets[stage].fold([v / 1000.0 for v in values], count=new)

    def collect(self) -> Iterator[Metric]:
        s = self.service
        with self._lock:
            self._fold_windows()
            hist = {stage: b.samples() for stage, b in self._buckets.items()}
        yield _counter(
            "facewire_classifier_messages",
            "embedding messages delivered to the classifier",
            s.received,
        )
        results = CounterMetricFamily(
            "facewire_classifier_results",
            "messages classified, by outcome (known: a name above the threshold)",
            labels=["outcome"],
        )
        with s._rate_lock:  # processed and named are written together under it
            processed, named = s.processed, s.named
        results.add_metric(["known"], named)
        results.add_metric(["unknown"], max(0, processed - named))
        yield results
        yield _counter(
            "facewire_classifier_repeats",
            "messages sent again, answered from the recent answers (not classified again)",
            s.repeats,
        )
        rejected = CounterMetricFamily(
            "facewire_classifier_rejections",
            "messages refused, by reason (docs/protocol.md; queue_full: dropped unanswered)",
            labels=["reason"],
        )
        # every reason the classifier can give, from 0: rate() sees the first one
        counts = dict.fromkeys(SEALED_REASONS if s.opener is not None else PLAIN_REASONS, 0)
        counts.update(refusals_by_reason(s))
        for reason, n in sorted(counts.items()):
            rejected.add_metric([reason], n)
        yield rejected
        depth = GaugeMetricFamily(
            "facewire_classifier_queue_depth",
            f"messages waiting per node (the {self.max_nodes} deepest; the rest as other)",
            labels=["node"],
        )
        for node, n in sorted(top_nodes(s.queues.depths(), self.max_nodes).items()):
            depth.add_metric([node], n)
        yield depth
        yield _gauge(
            "facewire_classifier_queue_capacity", "messages a node's queue holds", s.queues.maxlen
        )
        index = s.index
        yield _gauge("facewire_gallery_identities", "people in the gallery", index.identities)
        yield _gauge("facewire_gallery_vectors", "photos (vectors) in the gallery", index.vectors)
        yield _gauge(
            "facewire_classifier_threshold",
            "similarity a face needs to be named",
            index.matcher.threshold,
        )
        info = InfoMetricFamily(
            "facewire_gallery", "the gallery being searched", labels=["version", "model", "source"]
        )
        info.add_metric([index.version, index.model_id, index.threshold_source], {})
        yield info
        yield _gauge(
            "facewire_classifier_broker_connected",
            "1 while connected to the broker",
            1 if s.bus.connected else 0,
        )
        stages = HistogramMetricFamily(
            "facewire_classifier_stage_seconds",
            "time per stage: queue (arrival → search, per message), search and publish "
            "(per batch), total (arrival → result sent, per message)",
            labels=["stage"],
        )
        for stage, _, _ in WINDOWS:
            buckets, total = hist[stage]
            stages.add_metric([stage], buckets, total)
        yield stages


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def registry_for(service: ClassifierService, max_nodes: int = 20) -> CollectorRegistry:
    """A registry of the service's metrics and the process's (CPU, memory, files)."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClassifierCollector(service, max_nodes))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class MetricsServer:
    """The classifier's ``/metrics`` HTTP server (``metrics.*``); ``stop`` closes it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @classmethod
    def start(cls, service: ClassifierService, cfg: MetricsConfig) -> MetricsServer:
        """Serve ``service``'s metrics on ``cfg.host:cfg.port``; ``OSError`` if the port
        is taken."""
        server, thread = start_http_server(
            cfg.port, addr=cfg.host, registry=registry_for(service, cfg.max_nodes)
        )
        started = cls(server, thread)
        log.info("metrics on http://%s:%d/metrics", cfg.host, started.port)
        return started

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
