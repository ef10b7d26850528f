"""The classifier service's own logic on the in-memory transport: what it answers, what
it refuses, and that one bad message never costs another one."""

from __future__ import annotations

import time

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, ErrorReport, Result, ThresholdStats
from facewire.bus.transport import Message
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.config.schema import ClassifierConfig

DIM = 16
MODEL = "toy-00000000+lm"


@pytest.fixture
def index() -> GalleryIndex:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, DIM)).astype(np.float32)
    vecs = np.repeat(centres, 3, axis=0) + 0.05 * rng.normal(size=(12, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = [f"p{i // 3}" for i in range(12)]
    return GalleryIndex(Matcher(vecs, labels, k=3, threshold=0.5), MODEL, 4, 12, "v1")


class Rig:
    """A classifier and a listener on one in-memory broker."""

    def __init__(self, index: GalleryIndex, **cfg: object) -> None:
        self.broker = MemoryBroker()
        self.cfg = ClassifierConfig(stats_interval_s=60.0, queue_size=1024)  # nothing dropped
        for k, v in cfg.items():
            setattr(self.cfg, k, v)
        self.index = index
        self.service = ClassifierService(self.cfg, index, self.broker.transport("classifier"))
        self.got: list[Message] = []
        self.listener = self.broker.transport("listener")
        self.listener.subscribe("faces/#", self.got.append)
        self.listener.connect()
        self.sender = self.broker.transport("sender")
        self.sender.connect()
        self.service.start(timeout=1)

    def send(self, node: str, seq: int, person: int = 0, topic: str | None = None, **kw) -> None:
        vec = self.index.matcher.index.reconstruct(person * 3).copy()
        fields = dict(
            node=node, seq=seq, frame_id=seq, face_index=0, bbox=(0, 0, 9, 9), model_id=MODEL,
            captured_at=time.time(), stages={"detect": 1.0}, quality=(81.0, 1.0, 1.0), vector=vec,
        )  # fmt: skip
        fields.update(kw)
        payload = codec.encode(codec.EmbeddingMessage(**fields))
        self.sender.publish(topic or topics.embedding(node), payload, qos=1)

    def results(self, node: str) -> list[Result]:
        assert self.broker.settle()
        return [Result.decode(m.payload) for m in self.got if m.topic == topics.result(node)]

    def errors(self, node: str) -> list[tuple[ErrorReport, int]]:
        assert self.broker.settle()
        return [
            (ErrorReport.decode(m.payload), m.qos)
            for m in self.got
            if m.topic == topics.error(node)
        ]

    def close(self) -> None:
        self.service.stop()


def wait(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_names_what_it_knows_in_order(index: GalleryIndex) -> None:
    rig = Rig(index)
    try:
        for seq in range(1, 21):
            rig.send("door", seq, person=seq % 4)
        wait(lambda: rig.service.processed == 20)
        got = rig.results("door")
        assert [r.seq for r in got] == list(range(1, 21))
        assert [r.name for r in got] == [f"p{s % 4}" for s in range(1, 21)]
        assert all(r.model == MODEL and r.timings["detect"] == 1.0 for r in got)
        assert {"queue", "search", "total_classifier"} <= set(got[0].timings)
    finally:
        rig.close()


@pytest.mark.parametrize(
    "topic",
    [
        "faces/a b/embedding",
        "faces/classifier/embedding",
        "faces//embedding",
        f"faces/{'x' * 200}/embedding",
        f"faces/{'ü' * 33}/embedding",  # 33 characters, 66 bytes
    ],
)
def test_an_invalid_node_id_costs_no_other_message(index: GalleryIndex, topic: str) -> None:
    rig = Rig(index, batch_max=8)
    try:
        for seq in range(1, 101):
            rig.send("calm", seq)
            rig.send("intruder", seq, topic=topic)
        wait(lambda: rig.service.processed == 100)
        assert [r.seq for r in rig.results("calm")] == list(range(1, 101))
        assert rig.service.status().bad_topics == 100
        assert len(rig.service.queues) == 0
    finally:
        rig.close()


def test_refusals_are_rate_limited_but_counted(index: GalleryIndex) -> None:
    rig = Rig(index)
    try:
        for seq in range(1, 501):
            rig.send("noisy", seq, model_id="other-11111111+lm")
        rig.send("noisy", 501)
        wait(lambda: rig.service.processed == 1)
        errors = rig.errors("noisy")
        assert 1 <= len(errors) <= 2  # one a second, per node and reason
        report, qos = errors[0]
        assert report.reason == "wrong_model" and qos == 1
        assert "other-11111111+lm" in report.detail and MODEL in report.detail
        assert rig.service.status().rejected_by_node == {"noisy": 500}
        assert [r.seq for r in rig.results("noisy")] == [501]
    finally:
        rig.close()


def test_status_tells_a_third_party_node_what_to_send(index: GalleryIndex) -> None:
    rig = Rig(index)
    try:
        assert rig.broker.settle()
        status = ClassifierStatus.decode(rig.broker.retained(topics.CLASSIFIER_STATUS) or b"")
        assert status.state == "online" and status.model == MODEL
        assert status.gallery is not None and status.gallery.dim == DIM
        stats = ThresholdStats.decode(rig.broker.retained(topics.THRESHOLDS) or b"")
        assert stats.threshold == 0.5 and len(stats.edges) == len(stats.counts) + 1
    finally:
        rig.close()
    offline = ClassifierStatus.decode(rig.broker.retained(topics.CLASSIFIER_STATUS) or b"")
    assert offline.state == "offline"


def test_its_last_will_says_offline(index: GalleryIndex) -> None:
    rig = Rig(index)
    try:
        rig.broker.kill(rig.service.bus)  # type: ignore[arg-type]
        assert rig.broker.settle()
        will = ClassifierStatus.decode(rig.broker.retained(topics.CLASSIFIER_STATUS) or b"")
        assert will.state == "offline" and will.model is None
    finally:
        rig.close()
