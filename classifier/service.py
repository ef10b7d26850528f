"""The classifier service: embeddings in, names out, over a transport.

Threads and what each owns:

- the transport's delivery thread (paho's network thread) runs :meth:`_on_embedding`:
  it checks the topic, decodes and checks the message (microseconds) and puts it on
  its node's queue, or refuses it. It owns the refusal counters.
- one worker takes what is queued, round-robin across nodes, searches it as one FAISS
  batch and sends one result per message, in order per node, in one socket write. It
  owns the timing windows' writes and ``processed``.
- the statistics thread publishes the status and threshold statistics, reading
  snapshots (each window and counter under its own lock).

The checks on an embedding, in order, each refusal answered on ``faces/<node>/error``
(at most one report per node and reason a second; ``count`` counts them all): the
topic's node id (``bad_topic``: logged and counted, but there is no valid topic to
answer on), the payload (the codec's checks, :data:`facewire.bus.codec.CHECKS`), the
payload's node against the topic's (``bad_metadata``), the model id against the
gallery's (``wrong_model``); a full queue drops its oldest message (``queue_full``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from facewire.bus import codec, topics
from facewire.bus.errors import WireError
from facewire.bus.keys import KeyRing
from facewire.bus.messages import (
    UNKNOWN,
    Calibration,
    ClassifierStatus,
    ErrorReport,
    GalleryInfo,
    TrackEvent,
)
from facewire.bus.result_text import ResultEncoder
from facewire.bus.sealing import Opener, ResultSigner, classifier_keys, key_folder
from facewire.bus.transport import Message, Transport
from facewire.classifier.integrations import Integrations
from facewire.classifier.metrics import CountedWindow
from facewire.classifier.queues import FairQueues
from facewire.classifier.recent import RecentAnswers, RecentVectors
from facewire.classifier.refusals import Refusals
from facewire.classifier.search import Matcher, describe
from facewire.classifier.thresholds import LiveThresholds
from facewire.classifier.tracks import Tracker
from facewire.config.schema import ClassifierConfig

log = logging.getLogger("facewire.classifier")

#: A sealed message seen before is a repeat the worker answers from its recent answers
#: (or copies within its batch) when it came again within this long; later, with no
#: answer kept, it is refused as replayed.
REPEAT_GRACE_S = 2.0
#: How often the nodes' keys are read again while running.
KEYS_EVERY_S = 10.0


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
    calibration: Calibration | None = None
    threshold_source: str = "fixed"  # auto | default | fixed: see classifier.calibrate
    threshold_note: str = ""


#: How long a Python thread may hold the GIL while another waits (CPython: 5 ms). The
#: network thread and the worker hand work to each other many times per ms; the
#: classifier's ``main`` sets it (process-wide), docs/benchmarks.md has the figures.
GIL_SWITCH_INTERVAL_S = 0.0005


class ClassifierService:
    """Wire a ``GalleryIndex`` to a transport. ``start()`` returns once subscribed.

    >>> from facewire.bus.memory import MemoryBroker
    >>> from facewire.config.schema import ClassifierConfig
    >>> from facewire.classifier.search import Matcher
    >>> m = Matcher(np.eye(2, dtype=np.float32), ["ann", "bob"], k=1)
    >>> index = GalleryIndex(m, "toy-00000000", 2, 2, "v1")
    >>> broker = MemoryBroker()
    >>> service = ClassifierService(ClassifierConfig(), index, broker.transport("classifier"))
    >>> _ = service.start()
    >>> broker.settle(), ClassifierStatus.decode(broker.retained(topics.CLASSIFIER_STATUS)).model
    (True, 'toy-00000000')
    >>> service.stop()
    """

    def __init__(self, cfg: ClassifierConfig, index: GalleryIndex, transport: Transport) -> None:
        self.cfg = cfg
        self.index = index
        self.queues: FairQueues[Pending] = FairQueues(cfg.queue_size)
        self.live = LiveThresholds(cfg.stats_window)
        self.refusals = Refusals()
        self.recent = RecentVectors(cfg.remember)
        self.answers = RecentAnswers(cfg.recent_answers)
        self.repeats = 0  # messages sent again, answered from self.answers (worker's)
        # sealed embeddings in, signed results out (sealing.enabled; facewire nodes)
        self.opener: Opener | None = None
        self.signer: ResultSigner | None = None
        self._key_ring: KeyRing | None = None
        self._keys_read = time.monotonic()
        if cfg.sealing.enabled:
            self.opener, self.signer, self._key_ring = classifier_keys(
                key_folder(cfg.sealing.keys), cfg.sealing.window_s
            )
        t = cfg.track
        self.tracker = Tracker.from_config(t) if t.enabled else None
        #: (name, vector, model id) of a track confidently named (track.auto_enrol)
        self.on_auto_enrol: Callable[[str, np.ndarray, str], None] | None = None
        self.processed = 0
        # for /metrics (classifier.metrics): integer adds, the rest is read at scrape time
        self.received = 0  # messages delivered (the delivery thread's)
        self.named = 0  # of processed, those named (the worker's, under _rate_lock)
        self._queue_ms = CountedWindow(2000)
        self._search_ms = CountedWindow(2000)
        self._publish_ms = CountedWindow(2000)  # per batch: results built + sent
        self._inside_ms = CountedWindow(2000)  # per message: arrival → sent
        self._rate: deque[tuple[float, int]] = deque(maxlen=64)
        self._rate_lock = threading.Lock()
        self._encoder: tuple[GalleryIndex, ResultEncoder] | None = None
        self._result_topics: dict[str, str] = {}
        self._stop = threading.Event()
        self.bus = transport
        self.client_id = transport.client_id  # for logs only, never published (issue 12)
        self.ready = threading.Event()  # set once first connected and subscribed
        self._ready_lock = threading.Lock()
        offline = ClassifierStatus(state="offline").encode()
        transport.set_will(topics.CLASSIFIER_STATUS, offline, 1, True)
        # per-person topics, intruder alerts, Home Assistant (classifier.integrations)
        self.integrations = Integrations(cfg, transport)
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> ClassifierService:
        self.bus.subscribe(
            topics.shared(topics.EMBEDDINGS, self.cfg.group), self._on_embedding, qos=1
        )
        self.integrations.start(str(n) for n in self.index.matcher.names)
        # keep retrying in the background: an unattended service outlives a broker restart
        self.bus.connect(wait=False)
        subscribed = self.bus.wait_subscribed(timeout)
        self.start_workers()
        if subscribed:
            self._say_ready()
        else:
            # "ready" only once connected and subscribed (issue 12): until then nothing
            # can arrive
            if self.bus.connected:
                log.warning(
                    "broker %s has not answered the subscriptions yet; ready once it has",
                    self.bus.address,
                )
            else:
                log.warning(
                    "broker %s not reachable yet; retrying in the background, ready once connected",
                    self.bus.address,
                )
            self._ready_later()
        self.publish_status()
        self.publish_thresholds()
        return self

    def _ready_later(self) -> None:
        # a thread of its own: the answers come on the network thread, which must not
        # wait for them; wait_subscribed waits through reconnects
        def wait() -> None:
            while not self._stop.is_set() and not self.ready.is_set():
                if self.bus.wait_subscribed(1.0):
                    self._say_ready()
                    self.publish_status()
                else:  # a transport that answers at once must not make this spin
                    self._stop.wait(0.1)

        threading.Thread(target=wait, name="classifier-ready", daemon=True).start()

    def _say_ready(self) -> None:
        with self._ready_lock:
            if self.ready.is_set():
                return
            self.ready.set()
        log.info(
            "classifier ready on %s: %d identities, %d vectors (%s), model %s",
            self.bus.address,
            self.index.identities,
            self.index.vectors,
            describe(self.index.matcher.index),
            self.index.model_id,
        )

    def start_workers(self, stats: bool = True) -> None:
        """Start the worker thread (and the statistics one)."""
        targets = [(self._work, "classifier-worker")]
        if stats:
            targets.append((self._report, "classifier-stats"))
        for target, name in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker (and statistics) threads ``start_workers`` started."""
        return list(self._threads)

    def stop(self) -> None:
        self._stop.set()
        self.queues.close()
        for t in self._threads:
            t.join(5)
        try:
            offline = ClassifierStatus(state="offline", ts=time.time())
            self.bus.publish(topics.CLASSIFIER_STATUS, offline.encode(), 1, True)
        finally:
            self.bus.close()

    def swap(self, index: GalleryIndex) -> None:
        """Search ``index`` from the next batch on (the one in progress keeps its own),
        and say so in the retained status and statistics at once."""
        self.index = index
        self.publish_status()
        self.publish_thresholds()
        self.integrations.set_people(str(n) for n in index.matcher.names)

    def request_stop(self, *_: object) -> None:
        """Ask ``wait()`` to return (safe from a signal handler)."""
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    # -- delivery thread ----------------------------------------------------------------

    def handle(self, m: Message) -> None:
        """One message from ``faces/<node>/embedding``: queued, or refused (never raises)."""
        self._on_embedding(m)

    def _on_embedding(self, m: Message) -> None:
        received = time.perf_counter()
        self.received += 1
        try:
            node = topics.parse(m.topic, "embedding")
        except WireError as exc:
            self._refuse_topic(exc)
            return
        try:
            if self.opener is not None:
                msg = self._open(node, m.payload)
            else:
                msg = codec.decode(m.payload, self.index.matcher.dim)
            if msg.node != node:
                raise WireError(
                    "bad_metadata",
                    f"node {msg.node!r} in the payload, {node!r} in the topic",
                    seq=msg.seq,
                )
            if msg.model_id != self.index.model_id:
                raise WireError(
                    "wrong_model",
                    f"vector from model {msg.model_id!r}, gallery is {self.index.model_id!r}",
                    node=msg.node,
                    seq=msg.seq,
                )
        except WireError as exc:
            self._reject(node, exc.reason, exc.detail, exc.seq)
            return
        dropped = self.queues.put(node, Pending(msg, received))
        if dropped is not None:
            count = self.queues.drops().get(node, 0)
            detail = (
                f"queue of {self.cfg.queue_size} full: dropped the oldest (seq {dropped.msg.seq}); "
                f"{count} dropped so far"
            )
            self._reject(node, "queue_full", detail, dropped.msg.seq)

    def _open(self, node: str, payload: bytes) -> codec.EmbeddingMessage:
        """A sealed embedding opened and checked (``bus.sealing``), or ``WireError``."""
        assert self.opener is not None
        dim = self.index.matcher.dim
        try:
            msg, first_seen = self.opener.open(node, payload, expected_dim=dim)
        except WireError as exc:
            # a node added since the keys were read: read them again (not on every
            # message of an unknown sender)
            if exc.reason != "unknown_node" or not self.reload_node_keys(min_age_s=5.0):
                raise
            msg, first_seen = self.opener.open(node, payload, expected_dim=dim)
        if (
            first_seen is not None
            and time.time() - first_seen > REPEAT_GRACE_S
            and self.answers.get(node, msg.seq, msg.captured_at) is None
        ):
            raise WireError(
                "replayed",
                f"seq {msg.seq} captured at {msg.captured_at:.3f} came before and its answer "
                "is gone",
                node=node,
                seq=msg.seq,
            )
        return msg

    def reload_node_keys(self, min_age_s: float = 0.0) -> bool:
        """Read the nodes' keys again (``facewire nodes add|remove``); False if they were
        read less than ``min_age_s`` ago or sealing is off."""
        if self.opener is None or self._key_ring is None:
            return False
        now = time.monotonic()
        if now - self._keys_read < min_age_s:
            return False
        self._keys_read = now
        before = set(self.opener.nodes)
        try:
            self.opener.set_node_keys(self._key_ring.node_verify_keys())
        except ValueError as exc:  # a damaged key file: keep the keys we have
            log.error("could not read the nodes' keys: %s", exc)
            return False
        # a node removed (facewire nodes remove): its Home Assistant device goes too
        for node in sorted(before - set(self.opener.nodes)):
            self.integrations.remove_node(node)
        return True

    def _refuse_topic(self, exc: WireError) -> None:
        if self.refusals.topic(time.monotonic()):
            log.warning(
                "ignored an embedding: %s (%d so far)", exc.detail, self.refusals.bad_topics
            )

    def _reject(self, node: str, reason: str, detail: str, seq: int | None) -> None:
        now = time.monotonic()
        count, due = self.refusals.count(node, reason, now)
        if not due:  # a flood must not become a flood of replies and log lines
            return
        held = self.refusals.may_log(now)  # nor a thousand nodes' floods a log flood
        if held is not None:
            more = f"; {held} more refusals not logged" if held else ""
            log.warning(
                "refused a message from %s: %s (%s; %d so far%s)", node, reason, detail, count, more
            )
        report = ErrorReport(node, reason, detail, count, seq=seq, ts=time.time())
        self.bus.publish(topics.error(node), report.encode(), qos=1)

    # -- worker -------------------------------------------------------------------------

    def prepare_worker_thread(self) -> None:
        """Call first on the thread that will call ``classify``.

        FAISS's OpenMP threads are set per calling thread; one keeps a small batch's
        search fast when the other core is busy (docs/benchmarks.md).
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
        in one socket write. A message sent again (same node, seq and capture time as
        one answered recently, or as one earlier in the batch) gets the text its first
        copy got, and is not classified again."""
        answers = self.answers
        # (node, message, its answer if known now: a fresh one may replace it below)
        repeats: list[tuple[str, Pending, str | None]] = []
        if answers.per_node > 0:
            fresh = []
            seen = set()
            for item in batch:
                msg = item[1].msg
                key = (item[0], msg.seq, msg.captured_at)
                if key in seen:
                    repeats.append((item[0], item[1], None))
                    continue
                text = answers.get(item[0], msg.seq, msg.captured_at)
                if text is not None:
                    repeats.append((item[0], item[1], text))
                else:
                    seen.add(key)
                    fresh.append(item)
            if repeats:
                batch = fresh
                if not batch:
                    self._answer_repeats(repeats)
                    return
        started = time.perf_counter()
        index = self.index  # one consistent gallery for the whole batch
        found = index.matcher.match(np.stack([p.msg.vector for _, p in batch]))
        begun = time.perf_counter()
        search_ms = (begun - started) * 1000.0
        self._search_ms.add(search_ms)
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
        topic_of = self._result_topic
        now = time.time()
        out = []
        events = []
        decided: list[TrackEvent] = []
        queue_ms_all = []
        named = 0
        tracker, names = self.tracker, index.matcher.names
        for (node, p), winner, codes, sims, score, known in rows:
            msg = p.msg
            named += known
            queue_ms = (started - p.received) * 1000.0
            queue_ms_all.append(queue_ms)
            track = frames = track_name = None
            if tracker is not None:
                name = str(names[winner]) if known and winner >= 0 else UNKNOWN
                seen = tracker.observe(
                    node, msg.bbox, msg.vector, msg.quality, msg.captured_at, name, score,
                    p.received,
                )  # fmt: skip
                track, frames, track_name = seen.track, seen.frames, seen.decided
                if seen.event is not None:
                    events.append((topics.event(node), seen.event.encode()))
                    decided.append(seen.event)
                    self._maybe_auto_enrol(seen.event, index)
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
                track,
                frames,
                track_name,
            )
            out.append((topic_of(node), text))
        if self.signer is not None:  # one signature for the batch (bus.sealing)
            signed = self.signer.sign([text.encode() for _, text in out])
            out = list(zip([topic for topic, _ in out], signed, strict=True))
            if events:
                events = list(
                    zip(
                        [topic for topic, _ in events],
                        self.signer.sign(
                            [e.encode() if isinstance(e, str) else e for _, e in events]
                        ),
                        strict=True,
                    )
                )
        if answers.per_node > 0:
            for (node, p), (_, text) in zip(batch, out, strict=True):
                answers.add(node, p.msg.seq, p.msg.captured_at, text)
        # QoS 1 so a persistent-session subscriber (the monitor) gets what was answered
        # while it was away; either way the batch goes out in one write
        self.bus.publish_many(out, qos=self.cfg.result_qos)
        if repeats:
            self._answer_repeats(repeats)
        for topic, event in events:
            self.bus.publish(topic, event, qos=1)
        if decided:
            self.integrations.on_events(decided)
        done = time.perf_counter()
        self._queue_ms.extend(queue_ms_all)
        self._publish_ms.add((done - begun) * 1000.0)
        self._inside_ms.extend((done - p.received) * 1000.0 for _, p in batch)
        model = index.model_id
        self.recent.add_many(
            [
                (node, p.msg.seq, p.msg.vector, model, str(names[w]) if k and w >= 0 else UNKNOWN)
                for (node, p), w, k in zip(
                    batch, found.winner.tolist(), found.known.tolist(), strict=True
                )
            ]
        )
        with self._rate_lock:
            self.processed += len(batch)
            self.named += named
            self._rate.append((time.monotonic(), self.processed))

    def _answer_repeats(self, repeats: list[tuple[str, Pending, str | None]]) -> None:
        """Publish again the kept result of each message sent again."""
        qos = self.cfg.result_qos
        for node, p, text in repeats:
            if text is None:  # a copy of one earlier in its batch
                text = self.answers.get(node, p.msg.seq, p.msg.captured_at)
            if text is not None:
                self.bus.publish(self._result_topic(node), text, qos)
        self.repeats += len(repeats)

    def _encoder_for(self, index: GalleryIndex) -> ResultEncoder:
        # one encoder per gallery: names and model are encoded once, not per message
        if self._encoder is None or self._encoder[0] is not index:
            m = index.matcher
            encoder = ResultEncoder(m.names, index.model_id, m.threshold, index.version)
            self._encoder = (index, encoder)
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
        with self._rate_lock:
            if len(self._rate) < 2:
                return 0.0
            (t0, n0), (t1, n1) = self._rate[0], self._rate[-1]
        if time.monotonic() - t1 > 5.0:
            return 0.0
        return round((n1 - n0) / max(t1 - t0, 1e-6), 1)

    def status(self) -> ClassifierStatus:
        timings: dict[str, float | None] = {}
        for name, window in (
            ("queue", self._queue_ms),
            ("search", self._search_ms),
            ("publish", self._publish_ms),  # per batch: its results built and handed over
            ("total", self._inside_ms),  # per message: arrival → its result sent
        ):
            pct = window.percentiles()
            timings[f"{name}_ms_p50"], timings[f"{name}_ms_p99"] = pct.p50, pct.p99
        index = self.index
        by_node = self.refusals.by_node()
        return ClassifierStatus(
            state="online",
            model=index.model_id,
            gallery=GalleryInfo(
                identities=index.identities,
                vectors=index.vectors,
                version=index.version,
                index=describe(index.matcher.index),
                dim=index.matcher.dim,
            ),
            threshold=index.matcher.threshold,
            threshold_source=index.threshold_source,
            queues=self.queues.depths(),
            dropped=self.queues.drops(),
            rejected=sum(by_node.values()),
            rejected_by_node=by_node,
            bad_topics=self.refusals.bad_topics,
            repeats=self.repeats,
            processed=self.processed,
            messages_per_s=self.messages_per_s(),
            timings=timings,
            ts=time.time(),
        )

    def publish_status(self) -> None:
        self.bus.publish(topics.CLASSIFIER_STATUS, self.status().encode(), qos=1, retain=True)

    def publish_thresholds(self) -> None:
        index = self.index
        snap = self.live.snapshot(
            index.matcher.threshold, index.calibration, index.threshold_source, index.threshold_note
        )
        self.bus.publish(topics.THRESHOLDS, snap.encode(), qos=1, retain=True)

    def _maybe_auto_enrol(self, event: TrackEvent, index: GalleryIndex) -> None:
        """Offer a track named far above the threshold, from a full-weight frame (large
        and sharp), as a new sample of its person (``track.auto_enrol``; opt-in)."""
        cfg = self.cfg.track
        if not cfg.auto_enrol or self.on_auto_enrol is None or self.tracker is None:
            return
        if event.name == UNKNOWN or event.score < index.matcher.threshold + cfg.auto_margin:
            return
        best = self.tracker.best_frame(event.node, event.track)
        if best is not None and best[0] >= 1.0 and best[1] == event.name:
            self.on_auto_enrol(event.name, best[2], index.model_id)

    def expire_tracks(self) -> None:
        """End the tracks nobody was seen in for a while: their ``left`` events."""
        if self.tracker is None:
            return
        left = self.tracker.expire()
        texts: list[bytes] = [e.encode().encode() for e in left]
        if self.signer is not None and texts:
            texts = self.signer.sign(texts)
        for e, text in zip(left, texts, strict=True):
            self.bus.publish(topics.event(e.node), text, qos=1)
        self.integrations.on_events(left)

    def _report(self) -> None:
        # tracks end within a fraction of their gap; statistics every stats_interval_s
        tick = min(self.cfg.stats_interval_s, self.cfg.track.gap_s / 2.0)
        last = time.monotonic()
        while not self._stop.wait(tick):
            try:
                self.expire_tracks()
                self.integrations.tick()
                # not while the broker is away: they would wait in the client's memory
                # (unbounded) for a reconnect, after which the next one says it all
                due = time.monotonic() - last >= self.cfg.stats_interval_s
                if due and self.bus.connected:
                    last = time.monotonic()
                    self.publish_status()
                    self.publish_thresholds()
                    # nodes added or removed (facewire nodes) take effect without a restart
                    self.reload_node_keys(min_age_s=KEYS_EVERY_S)
            except Exception:
                log.exception("publishing statistics failed")
