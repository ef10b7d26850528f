"""The classifier service: embeddings in, names out, over the broker.

Threads: paho's network thread decodes and checks each message (microseconds) and
puts it on its node's queue; one worker takes what is queued, round-robin across
nodes, searches it as one FAISS batch and sends one result per message, in order per
node, in one socket write. (A second thread publishing one batch while the next is
searched was slower: 15.2 / 16.4k against 17.8 / 19.3k embeddings/s at 10k × 128-d,
alternating runs; handing batches over cost more than the overlap gained.) A message
that can't be used gets a reason on ``faces/<node>/error``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from facewire.bus import codec, topics
from facewire.bus.client import BusClient, Message
from facewire.classifier.queues import FairQueues
from facewire.classifier.results import ResultEncoder
from facewire.classifier.search import Matcher, describe
from facewire.classifier.thresholds import LiveThresholds
from facewire.config.schema import ClassifierConfig

log = logging.getLogger("facewire.classifier")


@dataclass(slots=True)
class Pending:
    """A decoded message waiting for the worker."""

    msg: codec.EmbeddingMessage
    received: float  # perf_counter on arrival


@dataclass
class GalleryIndex:
    """What the worker searches: swapped whole when the gallery changes."""

    matcher: Matcher
    model_id: str
    identities: int
    vectors: int
    version: str
    calibration: dict[str, Any] | None = None


#: How long a Python thread may hold the GIL while another waits (CPython: 5 ms). The
#: network thread and the worker hand work to each other many times per ms; at 0.5 ms,
#: 10k × 128-d went from 14.0 / 16.3k to 17.8 / 17.5k embeddings/s (alternating runs)
#: and a worker coming back from FAISS waits less for the GIL.
GIL_SWITCH_INTERVAL_S = 0.0005


def _pct(values: deque[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(np.fromiter(values, float, len(values)), [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


class ClassifierService:
    """Wire a ``GalleryIndex`` to the broker. ``start()`` returns once subscribed."""

    def __init__(
        self, cfg: ClassifierConfig, index: GalleryIndex, client_id: str | None = None
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.queues: FairQueues[Pending] = FairQueues(cfg.queue_size)
        self.live = LiveThresholds(cfg.stats_window)
        self.rejected: dict[str, int] = {}
        self.processed = 0
        self._queue_ms: deque[float] = deque(maxlen=2000)
        self._search_ms: deque[float] = deque(maxlen=2000)
        self._publish_ms: deque[float] = deque(maxlen=2000)  # per batch: results built + sent
        self._inside_ms: deque[float] = deque(maxlen=2000)  # per message: arrival → sent
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._last_drop_note: dict[str, float] = {}
        self._encoder: tuple[GalleryIndex, ResultEncoder] | None = None
        self._result_topics: dict[str, str] = {}
        self._stop = threading.Event()
        offline = json.dumps({"state": "offline"})
        self.client_id = client_id or f"classifier-{os.getpid()}"
        self.bus = BusClient(
            cfg.broker, self.client_id, will=(topics.CLASSIFIER_STATUS, offline, 1, True)
        )
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> ClassifierService:
        self.bus.subscribe(
            topics.shared(topics.EMBEDDINGS, self.cfg.group), self._on_embedding, qos=1
        )
        # keep retrying in the background: an unattended service outlives a broker restart
        self.bus.connect(wait=False)
        deadline = time.monotonic() + timeout
        while not self.bus.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.bus.connected:
            log.warning("broker %s not reachable yet; retrying in the background", self.bus.address)
        self.start_workers()
        self.publish_status()
        self.publish_thresholds()
        log.info(
            "classifier ready on %s: %d identities, %d vectors (%s), model %s",
            self.bus.address,
            self.index.identities,
            self.index.vectors,
            describe(self.index.matcher.index),
            self.index.model_id,
        )
        return self

    def start_workers(self, stats: bool = True) -> None:
        """Start the worker thread (and the statistics one).

        Also shortens the interpreter's GIL switch interval (process-wide): the
        classifier process is these threads and paho's.
        """
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        targets = [(self._work, "classifier-worker")]
        if stats:
            targets.append((self._report, "classifier-stats"))
        for target, name in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self.queues.close()
        for t in self._threads:
            t.join(5)
        try:
            self.bus.publish(
                topics.CLASSIFIER_STATUS,
                json.dumps({"state": "offline", "ts": time.time()}),
                1,
                True,
            )
        finally:
            self.bus.close()

    def request_stop(self, *_: object) -> None:
        """Ask ``wait()`` to return (safe from a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    # -- network thread -------------------------------------------------------------

    def _on_embedding(self, m: Message) -> None:
        received = time.perf_counter()
        node = topics.node_of(m.topic)
        try:
            msg = codec.decode(m.payload, self.index.matcher.dim)
            if msg.node != node:
                raise codec.CodecError(
                    "bad_metadata",
                    f"node {msg.node!r} in the payload, {node!r} in the topic",
                    seq=msg.seq,
                )
            if msg.model_id != self.index.model_id:
                raise codec.CodecError(
                    "wrong_model",
                    f"vector from model {msg.model_id!r}, gallery is {self.index.model_id!r}",
                    node=msg.node,
                    seq=msg.seq,
                )
        except codec.CodecError as exc:
            self._reject(node, exc.code, exc.message, exc.seq)
            return
        dropped = self.queues.put(node, Pending(msg, received))
        if dropped is not None:
            self._note_drop(node, dropped.msg.seq)

    def _reject(self, node: str, reason: str, detail: str, seq: int | None) -> None:
        self.rejected[node] = self.rejected.get(node, 0) + 1
        log.warning("rejected message from %s: %s (%s)", node, reason, detail)
        payload = {
            "node": node,
            "reason": reason,
            "detail": detail,
            "seq": seq,
            "count": self.rejected[node],
            "ts": time.time(),
        }
        self.bus.publish(topics.error(node), json.dumps(payload), qos=0)

    def _note_drop(self, node: str, seq: int) -> None:
        # at most one note per node per second: a flood must not become a flood of errors
        now = time.monotonic()
        if now - self._last_drop_note.get(node, 0.0) < 1.0:
            return
        self._last_drop_note[node] = now
        count = self.queues.dropped.get(node, 0)
        detail = (
            f"queue of {self.cfg.queue_size} full: dropped the oldest (seq {seq}); "
            f"{count} dropped so far"
        )
        log.warning("node %s: %s", node, detail)
        payload = {
            "node": node,
            "reason": "queue_full",
            "detail": detail,
            "seq": seq,
            "count": count,
            "ts": time.time(),
        }
        self.bus.publish(topics.error(node), json.dumps(payload), qos=0)

    # -- worker -------------------------------------------------------------------------

    def prepare_worker_thread(self) -> None:
        """Call first on the thread that will call ``classify``.

        FAISS's OpenMP threads are set per calling thread; one thread keeps a small
        batch's search at ~2 ms p99 when the other core is busy (28 ms with two).
        """
        faiss.omp_set_num_threads(max(1, self.cfg.search.threads))

    def _work(self) -> None:
        self.prepare_worker_thread()
        while not self._stop.is_set():
            batch = self.queues.take(self.cfg.batch_max, timeout=0.25)
            if batch:
                try:
                    self.classify(batch)
                except Exception:  # a bug must not stop the service; it is logged loudly
                    log.exception("classifying a batch of %d failed", len(batch))

    def classify(self, batch: list[tuple[str, Pending]]) -> None:
        """Search ``batch`` in one FAISS call and publish a result per message, in order,
        in one socket write."""
        started = time.perf_counter()
        index = self.index  # one consistent gallery for the whole batch
        found = index.matcher.match(np.stack([p.msg.vector for _, p in batch]))
        begun = time.perf_counter()
        search_ms = (begun - started) * 1000.0
        self._search_ms.append(search_ms)
        encoder = self._encoder_for(index)
        scores = found.scores.tolist()
        self.live.extend(scores)
        rows = zip(
            batch,
            found.winner.tolist(),
            found.codes.tolist(),
            found.sims.tolist(),
            scores,
            found.known.tolist(),
            strict=True,
        )
        topic_of, queue_ms_log = self._result_topic, self._queue_ms
        now = time.time()
        out = []
        for (node, p), winner, codes, sims, score, known in rows:
            msg = p.msg
            queue_ms = (started - p.received) * 1000.0
            queue_ms_log.append(queue_ms)
            text = encoder.encode(
                node,
                msg.seq,
                msg.frame_id,
                msg.face_index,
                msg.bbox,
                msg.captured_at,
                msg.stages,
                winner,
                codes,
                sims,
                score,
                known,
                queue_ms,
                search_ms,
                (time.perf_counter() - p.received) * 1000.0,
                now,
            )
            out.append((topic_of(node), text))
        self.bus.publish_many(out)
        done = time.perf_counter()
        self._publish_ms.append((done - begun) * 1000.0)
        self._inside_ms.extend((done - p.received) * 1000.0 for _, p in batch)
        self.processed += len(batch)
        self._rate.append((time.monotonic(), self.processed))

    def _encoder_for(self, index: GalleryIndex) -> ResultEncoder:
        # one encoder per gallery: names and model are encoded once, not per message
        if self._encoder is None or self._encoder[0] is not index:
            m = index.matcher
            self._encoder = (index, ResultEncoder(m.names, index.model_id, m.threshold))
        return self._encoder[1]

    def _result_topic(self, node: str) -> str:
        topic = self._result_topics.get(node)
        if topic is None:
            topic = topics.result(node)
            if len(self._result_topics) < 4096:
                self._result_topics[node] = topic
        return topic

    # -- status and statistics --------------------------------------------------------

    def messages_per_s(self) -> float:
        if len(self._rate) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        if time.monotonic() - t1 > 5.0:
            return 0.0
        return round((n1 - n0) / max(t1 - t0, 1e-6), 1)

    def status(self) -> dict[str, Any]:
        q50, q99 = _pct(self._queue_ms)
        s50, s99 = _pct(self._search_ms)
        p50, p99 = _pct(self._publish_ms)
        i50, i99 = _pct(self._inside_ms)
        return {
            "state": "online",
            "client_id": self.client_id,
            "model": self.index.model_id,
            "gallery": {
                "identities": self.index.identities,
                "vectors": self.index.vectors,
                "version": self.index.version,
                "index": describe(self.index.matcher.index),
            },
            "threshold": self.index.matcher.threshold,
            "queues": self.queues.depths(),
            "dropped": dict(self.queues.dropped),
            "rejected": sum(self.rejected.values()),
            "rejected_by_node": dict(self.rejected),
            "processed": self.processed,
            "messages_per_s": self.messages_per_s(),
            "timings": {
                "queue_ms_p50": q50,
                "queue_ms_p99": q99,
                "search_ms_p50": s50,
                "search_ms_p99": s99,
                "publish_ms_p50": p50,  # per batch: its results built and handed to the broker
                "publish_ms_p99": p99,
                "total_ms_p50": i50,  # per message: arrival → its result sent
                "total_ms_p99": i99,
            },
            "ts": time.time(),
        }

    def publish_status(self) -> None:
        self.bus.publish(topics.CLASSIFIER_STATUS, json.dumps(self.status()), qos=1, retain=True)

    def publish_thresholds(self) -> None:
        snap = self.live.snapshot(self.index.matcher.threshold, self.index.calibration)
        self.bus.publish(topics.THRESHOLDS, json.dumps(snap), qos=1, retain=True)

    def _report(self) -> None:
        while not self._stop.wait(self.cfg.stats_interval_s):
            try:
                self.publish_status()
                self.publish_thresholds()
            except Exception:
                log.exception("publishing statistics failed")
