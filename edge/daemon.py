"""The edge daemon: frames → faces → embeddings on ``faces/<node>/embedding``.

It also listens to its own ``faces/<node>/result`` and times capture → result on its
own clock (no clock sync needed), and keeps a retained ``faces/<node>/status`` with
that latency, its fps and what it has sent; the broker publishes ``offline`` for it
if it dies (last will). At start it reads the classifier's retained status and says
so if the gallery's model id is not its own (every message would be refused).

Nothing is lost on the way (issue 12): the result is the acknowledgement. Each
embedding stays in a bounded outbox (:mod:`facewire.edge.outbox`) until its result
arrives, is kept unsent while the broker is away and sent in order when it is back,
and is sent again when no result came in time.

Threads and what each owns: the frame loop (:meth:`EdgeNode.run`) owns the pipeline,
the dedup state, ``seq`` and ``sent``; the transport's delivery thread handles results
and errors; the status thread publishes :meth:`EdgeNode.status`, reading windows and
counters under their locks, and sends again what the outbox says is due.
:meth:`EdgeNode.close` joins the status thread before it publishes ``offline``, so no
late ``online`` can follow it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from facewire.bus import codec, topics
from facewire.bus.errors import WireError
from facewire.bus.latency import LatencyWindow
from facewire.bus.messages import ClassifierStatus, EdgeStatus, ErrorReport, Result, TrackEvent
from facewire.bus.sealing import ResultVerifier, Sealer, edge_sealer, key_folder
from facewire.bus.transport import Message, Transport
from facewire.config.schema import EdgeConfig
from facewire.edge.dedup import Dedup
from facewire.edge.named import NamedFaces
from facewire.edge.outbox import Outbox
from facewire.edge.quality import passes
from facewire.edge.sources import Frame
from facewire.models import Face, FacePipeline
from facewire.models.follow import FaceFollower

log = logging.getLogger("facewire.edge")

#: Results and errors that did not parse are logged at most this often.
WARN_EVERY_S = 5.0
#: How long start() waits for the classifier's retained status to compare model ids.
MODEL_CHECK_S = 2.0
#: How often the outbox is looked at for what is due to be sent (again).
PUMP_EVERY_S = 0.1

ResultHandler = Callable[[Result, "float | None"], None]


class EdgeNode:
    """Runs the pipeline on frames and publishes what it finds. ``run(frames)`` blocks.

    ``on_result(result, latency_ms)`` is called (on the transport's thread) for each
    result of this node, with capture → result on this edge's clock when the result
    answers a message it sent.
    """

    def __init__(
        self, cfg: EdgeConfig, transport: Transport, pipeline: FacePipeline | None = None
    ) -> None:
        self.cfg = cfg
        self.node = topics.check_node_id(cfg.node)
        self.pipeline = pipeline or FacePipeline(cfg.pipeline)
        self.follower = FaceFollower(self.pipeline, cfg.detect_every)
        self.dedup = Dedup(cfg.dedup_distance, cfg.dedup_seconds, first=cfg.dedup_first)
        self.named = NamedFaces(cfg.reembed_named_s, cfg.reembed_margin)
        self.dropped_quality = 0  # faces the quality gate kept off the wire
        self.seq = 0
        self.sent = 0
        self.results = 0
        self.errors: deque[ErrorReport] = deque(maxlen=50)
        self.latency_ms = LatencyWindow(1000)  # capture → result
        self.publish_ms = LatencyWindow(1000)  # capture → published
        self.classifier_model: str | None = None  # from the classifier's retained status
        # sealed to the classifier, results checked (keys: facewire nodes add)
        self.sealer: Sealer | None = None
        self.verifier: ResultVerifier | None = None
        if cfg.sealing.enabled:
            self.sealer, self.verifier = edge_sealer(key_folder(cfg.sealing.keys), self.node)
        self.forged = 0  # results refused: unsigned or not the classifier's signature
        topic = topics.embedding(self.node)
        self.outbox = Outbox(
            lambda payload: transport.publish(topic, payload, qos=cfg.qos),
            lambda: transport.connected,
            capacity=cfg.buffer_max,
            resend_after_s=cfg.resend_after_s,
            tries=cfg.resend_tries,
        )
        self._connected_at: float | None = None  # written by the delivery thread
        self._lock = threading.Lock()  # _frames, results, errors
        self._frames: deque[float] = deque(maxlen=50)
        self._stop = threading.Event()
        self._classifier_seen = threading.Event()
        self._status_thread: threading.Thread | None = None
        self._last_warning = 0.0
        self.on_result: ResultHandler | None = None
        self.bus = transport
        transport.set_will(
            topics.status(self.node), EdgeStatus(self.node, "offline").encode(), 1, True
        )
        # QoS 1: a result is the acknowledgement; one the broker drops costs a resend
        transport.subscribe(topics.result(self.node), self._on_result, qos=1)
        transport.on_connection_change(self._on_connection)
        transport.subscribe(topics.error(self.node), self._on_error, qos=0)
        transport.subscribe(topics.event(self.node), self._on_event, qos=0)
        transport.subscribe(topics.CLASSIFIER_STATUS, self._on_classifier_status, qos=0)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> EdgeNode:
        self.bus.connect(wait=False)  # keeps retrying; QoS 1 embeddings wait in memory
        deadline = time.monotonic() + timeout
        if not self.bus.wait_subscribed(timeout):
            if self.bus.connected:  # its results would be missed: the outbox resends
                log.warning("broker %s has not answered the subscriptions yet", self.bus.address)
            else:
                log.warning("broker %s not reachable yet; buffering and retrying", self.bus.address)
        else:
            # the retained status arrives right after the subscription, if there is one
            self._classifier_seen.wait(min(MODEL_CHECK_S, max(0.0, deadline - time.monotonic())))
        self.publish_status()
        self._status_thread = threading.Thread(target=self._report, name="edge-status", daemon=True)
        self._status_thread.start()
        return self

    def _on_connection(self, up: bool) -> None:
        if up:  # the outbox sends what waited, and what a dead broker may have taken
            self._connected_at = time.monotonic()

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def close(self, drain_s: float = 5.0) -> None:
        """Wait up to ``drain_s`` for outstanding results, say offline, disconnect."""
        self.outbox.wait_empty(drain_s)
        self._stop.set()
        if self._status_thread is not None:
            self._status_thread.join(drain_s)
        self.bus.publish(topics.status(self.node), self.status(state="offline").encode(), 1, True)
        self.bus.close(timeout=drain_s)
        self.pipeline.close()

    # -- the frame loop ------------------------------------------------------------------

    def run(self, frames: Iterable[Frame], max_frames: int = 0) -> None:
        for frame in frames:
            if self._stop.is_set():
                break
            self.process(frame)
            if max_frames and frame.frame_id + 1 >= max_frames:
                break

    def process(self, frame: Frame) -> list[Face]:
        """Detect, embed and publish the faces of one frame; returns the faces sent."""
        with self._lock:
            self._frames.append(time.monotonic())
        gated = self.cfg.gate_live or self.cfg.reembed_named_s > 0
        if frame.cut:
            self.follower.reset()
        faces = self.follower.get(frame.image, keep=self._worth_embedding if gated else None)
        now = time.monotonic()
        out = []
        for face in faces:
            assert face.embedding is not None
            if self.cfg.dedup_distance > 0 and not self.dedup.should_send(
                face.embedding, face.box, now
            ):
                continue
            self.publish(frame, face)
            out.append(face)
        return out

    def _worth_embedding(self, face: Face) -> bool:
        """A detected face passes the quality gate and is not one the classifier has
        just named with confidence (the frame loop's thread)."""
        if self.cfg.gate_live and passes(face, self.cfg.quality) is not None:
            self.dropped_quality += 1
            return False
        if self.cfg.reembed_named_s <= 0:
            return True
        now = time.monotonic()
        # a named face is still sent every dedup_seconds, or its track would end
        due = self.cfg.dedup_distance > 0 and self.dedup.due(face.box, now)
        return self.named.embed(face.box, now, face.continued, due)

    def publish(self, frame: Frame, face: Face) -> None:
        assert face.embedding is not None
        t0 = time.perf_counter()
        seq = self.seq = (self.seq + 1) & 0xFFFFFFFF
        stages = {"capture": frame.capture_ms, **face.stages}
        # building the record; serialising it adds a few µs that can't be inside itself
        stages["encode"] = (time.perf_counter() - t0) * 1000.0
        msg = codec.EmbeddingMessage(
            node=self.node,
            seq=seq,
            frame_id=frame.frame_id & 0xFFFFFFFF,
            face_index=face.index & 0xFF,
            bbox=face.box,
            model_id=face.model_id,
            captured_at=frame.captured_at,
            stages=stages,
            quality=(face.quality.area, face.quality.blur, face.quality.brightness),
            vector=face.embedding,
        )
        payload = codec.encode(msg)
        if self.sealer is not None:  # resent as it is: the classifier knows the repeat
            payload = self.sealer.seal(payload)
        if self.outbox.put(seq, payload, frame.captured_perf):  # else buffered: the broker is away
            self.publish_ms.add((time.perf_counter() - frame.captured_perf) * 1000.0)
        self.sent += 1

    # -- results and errors (delivery thread) ------------------------------------------------

    def _warn(self, text: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning(text, *args)

    def _on_result(self, m: Message) -> None:
        now = time.perf_counter()
        try:
            payload = m.payload if self.verifier is None else self.verifier.verify(m.payload)
            result = Result.decode(payload)
        except WireError as exc:
            if exc.reason in ("unsigned", "bad_signature"):
                self.forged += 1
            self._warn("ignoring a result on %s: %s", m.topic, exc)
            return
        self.named.result(result)
        captured = self.outbox.answered(result.seq)
        with self._lock:
            self.results += 1
        latency = None
        if captured is not None:
            latency = (now - captured) * 1000.0
            self.latency_ms.add(latency)
        if self.on_result is not None:
            self.on_result(result, latency)

    def _on_event(self, m: Message) -> None:
        try:
            payload = m.payload if self.verifier is None else self.verifier.verify(m.payload)
            self.named.event(TrackEvent.decode(payload))
        except WireError as exc:
            self._warn("ignoring a track event on %s: %s", m.topic, exc)

    def _on_error(self, m: Message) -> None:
        try:
            err = ErrorReport.decode(m.payload)
        except WireError as exc:
            self._warn("ignoring an error report on %s: %s", m.topic, exc)
            return
        with self._lock:
            self.errors.append(err)
        log.warning("classifier refused our message: %s (%s)", err.reason, err.detail)

    def _on_classifier_status(self, m: Message) -> None:
        if not m.payload:
            return
        try:
            status = ClassifierStatus.decode(m.payload)
        except WireError as exc:
            self._warn("ignoring the classifier status: %s", exc)
            return
        self.outbox.classifier_online(status.state == "online")
        if status.model is None:  # its last will: nothing to compare
            return
        mine = self.pipeline.model_id
        if status.model != mine and status.model != self.classifier_model:
            log.error(
                "edge %s embeds with model %s, but the classifier's gallery is %s: every "
                "message will be refused (wrong_model). Run both with the same pipeline "
                "settings (model, detector, mesh, align, mesh_runtime).",
                self.node,
                mine,
                status.model,
            )
        self.classifier_model = status.model
        self._classifier_seen.set()

    # -- status ---------------------------------------------------------------------------

    def fps(self) -> float:
        with self._lock:
            frames = list(self._frames)
        if len(frames) < 2 or time.monotonic() - frames[-1] > 5.0:
            return 0.0
        return round((len(frames) - 1) / max(frames[-1] - frames[0], 1e-6), 2)

    def status(self, state: str = "online") -> EdgeStatus:
        with self._lock:
            results, errors = self.results, len(self.errors)
        dropped, resent, unanswered = self.outbox.counts()
        return EdgeStatus(
            node=self.node,
            state="offline" if state == "offline" else "online",
            model=self.pipeline.model_id,
            fps=self.fps(),
            latency_ms=self.latency_ms.percentiles(2),
            publish_ms=self.publish_ms.percentiles(2),
            sent=self.sent,
            results=results,
            dropped_dedup=self.dedup.skipped,
            dropped_quality=self.dropped_quality,
            skipped_named=self.named.skipped,
            buffered=len(self.outbox),
            dropped_buffer=dropped,
            resent=resent,
            unanswered=unanswered,
            errors=errors,
            ts=time.time(),
        )

    def publish_status(self) -> None:
        self.bus.publish(topics.status(self.node), self.status().encode(), qos=1, retain=True)

    def _report(self) -> None:
        next_status = time.monotonic() + self.cfg.status_interval_s
        handled: float | None = None  # the connect whose resends went out
        while not self._stop.wait(PUMP_EVERY_S):
            try:
                at = self._connected_at
                self.outbox.pump(reconnected_at=at if at != handled else None)
                handled = at
                # while the broker is away a status would wait in the client's memory
                # (unbounded); the first one after the reconnect says it all
                if time.monotonic() >= next_status and self.bus.connected:
                    next_status = time.monotonic() + self.cfg.status_interval_s
                    self.publish_status()
            except Exception:
                log.exception("publishing status failed")
