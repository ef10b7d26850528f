"""The edge daemon: frames → faces → embeddings on ``faces/<node>/embedding``.

It also listens to its own ``faces/<node>/result`` and times capture → result on its
own clock (no clock sync needed), and keeps a retained ``faces/<node>/status`` with
that latency, its fps and what it has sent; the broker publishes ``offline`` for it
if it dies (last will).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from facewire.bus import codec, topics
from facewire.bus.client import BusClient, Message
from facewire.config.schema import EdgeConfig
from facewire.edge.dedup import Dedup
from facewire.edge.sources import Frame
from facewire.models import Face, FacePipeline

log = logging.getLogger("facewire.edge")


class EdgeNode:
    """Runs the pipeline on frames and publishes what it finds. ``run(frames)`` blocks."""

    def __init__(self, cfg: EdgeConfig, pipeline: FacePipeline | None = None) -> None:
        self.cfg = cfg
        self.node = topics.check_node_id(cfg.node)
        self.pipeline = pipeline or FacePipeline(cfg.pipeline)
        self.dedup = Dedup(cfg.dedup_distance, cfg.dedup_seconds)
        self.seq = 0
        self.sent = 0
        self.results = 0
        self.errors: deque[dict[str, Any]] = deque(maxlen=50)
        self.latency_ms: deque[float] = deque(maxlen=1000)  # capture → result
        self.publish_ms: deque[float] = deque(maxlen=1000)  # capture → published
        self._inflight: dict[int, float] = {}  # seq → capture time (perf_counter)
        self._lock = threading.Lock()
        self._frames: deque[float] = deque(maxlen=50)
        self._stop = threading.Event()
        self.on_result: Callable[[dict[str, Any]], None] | None = None
        offline = json.dumps({"node": self.node, "state": "offline"})
        self.bus = BusClient(
            cfg.broker, f"edge-{self.node}", will=(topics.status(self.node), offline, 1, True)
        )
        self.bus.subscribe(topics.result(self.node), self._on_result, qos=0)
        self.bus.subscribe(topics.error(self.node), self._on_error, qos=0)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> EdgeNode:
        self.bus.connect(wait=False)  # keeps retrying; QoS 1 embeddings wait in memory
        deadline = time.monotonic() + timeout
        while not self.bus.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.bus.connected:
            log.warning("broker %s not reachable yet; buffering and retrying", self.bus.address)
        self.publish_status()
        threading.Thread(target=self._report, name="edge-status", daemon=True).start()
        return self

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def close(self, drain_s: float = 5.0) -> None:
        """Wait up to ``drain_s`` for outstanding results, say offline, disconnect."""
        deadline = time.monotonic() + drain_s
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self.bus.publish(
            topics.status(self.node), json.dumps(self.status(state="offline")), 1, True
        )
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
        self._frames.append(time.monotonic())
        faces = self.pipeline.get(frame.image)
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

    def publish(self, frame: Frame, face: Face) -> None:
        assert face.embedding is not None
        t0 = time.perf_counter()
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        stages = {"capture": frame.capture_ms}
        stages.update({k.removesuffix("_ms"): v for k, v in face.stages.items()})
        msg = codec.EmbeddingMessage(
            node=self.node,
            seq=self.seq,
            frame_id=frame.frame_id & 0xFFFFFFFF,
            face_index=face.index & 0xFF,
            bbox=face.box,
            model_id=face.model_id,
            captured_at=frame.captured_at,
            stages=stages,
            quality=(face.quality.area, face.quality.blur, face.quality.brightness),
            vector=face.embedding,
        )
        # building the record; serialising it adds ~10 µs that can't be inside itself
        stages["encode"] = (time.perf_counter() - t0) * 1000.0
        payload = codec.encode(msg)
        with self._lock:
            self._inflight[self.seq] = frame.captured_perf
            if len(self._inflight) > 10_000:  # results that never came: forget the oldest
                for k in list(self._inflight)[:1000]:
                    del self._inflight[k]
        self.bus.publish(topics.embedding(self.node), payload, qos=self.cfg.qos)
        published = time.perf_counter()
        self.publish_ms.append((published - frame.captured_perf) * 1000.0)
        self.sent += 1

    # -- results and errors (network thread) -------------------------------------------------

    def _on_result(self, m: Message) -> None:
        now = time.perf_counter()
        try:
            result = json.loads(m.payload)
            seq = int(result["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed result on %s", m.topic)
            return
        with self._lock:
            captured = self._inflight.pop(seq, None)
        self.results += 1
        if captured is not None:
            latency = (now - captured) * 1000.0
            self.latency_ms.append(latency)
            result["edge_latency_ms"] = round(latency, 3)
        if self.on_result is not None:
            self.on_result(result)

    def _on_error(self, m: Message) -> None:
        try:
            err = json.loads(m.payload)
        except ValueError:
            return
        self.errors.append(err)
        log.warning(
            "classifier rejected our message: %s (%s)", err.get("reason"), err.get("detail")
        )

    # -- status ---------------------------------------------------------------------------

    def fps(self) -> float:
        if len(self._frames) < 2 or time.monotonic() - self._frames[-1] > 5.0:
            return 0.0
        return round((len(self._frames) - 1) / max(self._frames[-1] - self._frames[0], 1e-6), 2)

    def status(self, state: str = "online") -> dict[str, Any]:
        lat = np.fromiter(self.latency_ms, float, len(self.latency_ms))
        pub = np.fromiter(self.publish_ms, float, len(self.publish_ms))

        def pct(a: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(a, q)), 2) if len(a) else None

        return {
            "node": self.node,
            "state": state,
            "model": self.pipeline.model_id,
            "fps": self.fps(),
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "n": int(len(lat))},
            "publish_ms": {"p50": pct(pub, 50), "p99": pct(pub, 99), "n": int(len(pub))},
            "sent": self.sent,
            "results": self.results,
            "dropped_dedup": self.dedup.skipped,
            "buffered": self.bus.pending,
            "errors": len(self.errors),
            "ts": time.time(),
        }

    def publish_status(self) -> None:
        self.bus.publish(topics.status(self.node), json.dumps(self.status()), qos=1, retain=True)

    def _report(self) -> None:
        while not self._stop.wait(self.cfg.status_interval_s):
            try:
                self.publish_status()
            except Exception:
                log.exception("publishing status failed")
