"""Simulated edge nodes for the benches: real embedding messages at a steady rate, each
node on its own MQTT connection, timing publish → result on its own clock."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import (
    ROOT,
    broker_config,
)

log = logging.getLogger("facewire.bench")


# -- probe vectors ------------------------------------------------------------------------


def dataset_probes(model: str, limit: int = 96) -> tuple[np.ndarray, str]:
    """Real embeddings of dataset/probes and dataset/unknown photos, with the gallery's
    pipeline (so their model id is the gallery's)."""
    from facewire.classifier.gallery import read_image
    from facewire.models import FacePipeline, PipelineConfig
    from facewire.models.files import list_photos

    files: list[Path] = []
    for sub in ("probes", "unknown"):
        files += list_photos(ROOT / "dataset" / sub)
    random.Random(0).shuffle(files)
    pipeline = FacePipeline(PipelineConfig(model=model))
    vecs = []
    try:
        for f in files:
            faces = pipeline.get(read_image(f))
            if faces:
                face = max(faces, key=lambda x: x.box[2] * x.box[3])
                vecs.append(face.embedding)
            if len(vecs) >= limit:
                break
        model_id = pipeline.model_id
    finally:
        pipeline.close()
    if not vecs:
        raise SystemExit("no face found in dataset/probes: cannot make probe embeddings")
    return np.stack(vecs).astype(np.float32), model_id


# -- simulated edge nodes ----------------------------------------------------------------


@dataclass
class SimNode:
    """One simulated edge node: its own connection, its own clock, its own results."""

    name: str
    url: str
    model_id: str
    vectors: np.ndarray
    offset: int
    bus: Any = None
    seq: int = 0
    sent: dict[int, float] = field(default_factory=dict)  # seq → perf_counter at publish
    latency_ms: dict[int, float] = field(default_factory=dict)  # seq → publish → result
    timings: dict[int, dict[str, float]] = field(default_factory=dict)  # seq → result timings
    last_at: float = 0.0  # perf_counter of the latest result
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> None:
        from facewire.bus import topics
        from facewire.bus.client import BusClient

        self.bus = BusClient(broker_config(self.url), f"bench-{self.name}")
        self.bus.subscribe(topics.result(self.name), self._on_result, qos=0)
        self.bus.connect()
        self._topic = topics.embedding(self.name)

    def send(self) -> None:
        from facewire.bus import codec

        t0 = time.perf_counter()
        self.seq += 1
        vec = self.vectors[(self.offset + self.seq) % len(self.vectors)]
        msg = codec.EmbeddingMessage(
            node=self.name,
            seq=self.seq,
            frame_id=self.seq,
            face_index=0,
            bbox=(220, 140, 200, 200),
            model_id=self.model_id,
            captured_at=time.time(),
            stages={"encode": (time.perf_counter() - t0) * 1000.0},
            quality=(40000.0, 150.0, 120.0),
            vector=vec,
        )
        payload = codec.encode(msg)
        now = time.perf_counter()
        with self.lock:
            self.sent[self.seq] = now
        self.bus.publish(self._topic, payload, qos=1)

    def _on_result(self, m: Any) -> None:
        from facewire.bus.messages import Result

        now = time.perf_counter()
        result = Result.decode(m.payload)
        seq = result.seq
        with self.lock:
            t0 = self.sent.get(seq)
            if t0 is None or seq in self.latency_ms:
                return
            self.latency_ms[seq] = (now - t0) * 1000.0
            self.timings[seq] = dict(result.timings)
            self.last_at = now

    def outstanding(self) -> int:
        with self.lock:
            return len(self.sent) - len(self.latency_ms)

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()


def run_nodes(
    nodes: list[SimNode], fps: float, seconds: float, stop: threading.Event
) -> tuple[float, float]:
    """Each node publishes at ``fps`` for ``seconds``, phases spread over one period."""
    period = 1.0 / fps
    start = time.perf_counter() + 0.2
    end = start + seconds

    def loop(i: int, node: SimNode) -> None:
        next_at = start + period * i / len(nodes)
        while not stop.is_set():
            now = time.perf_counter()
            if next_at >= end:
                return
            if next_at > now:
                time.sleep(next_at - now)
            node.send()
            next_at += period

    threads = [
        threading.Thread(target=loop, args=(i, n), name=f"sim-{n.name}", daemon=True)
        for i, n in enumerate(nodes)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.perf_counter()
