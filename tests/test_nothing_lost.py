"""Nothing lost, end to end (issue 12, item 4), in each part's own logic: the edge's
outbox (kept until answered, buffered in order while the broker is away, resent,
bounded), the classifier answering a repeat from its recent answers, the monitor
logging a result delivered twice once. The same against real processes and a real
broker that is killed: tests/test_faults.py."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, EdgeStatus, Result
from facewire.bus.transport import Message
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex, Pending
from facewire.config.schema import BrokerConfig, ClassifierConfig, EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.outbox import Outbox
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber
from tests.broker import free_port

# --- the edge's outbox --------------------------------------------------------------------


class Link:
    """What the outbox sends through: a switchable connection that records sends."""

    def __init__(self) -> None:
        self.up = True
        self.sent: list[bytes] = []

    def send(self, payload: bytes) -> None:
        assert self.up, "sent while disconnected"
        self.sent.append(payload)


def outbox(link: Link, **kw: float) -> Outbox:
    args = {"capacity": 100, "resend_after_s": 1.0, "tries": 3, **kw}
    return Outbox(link.send, lambda: link.up, **args)  # type: ignore[arg-type]


def test_kept_until_answered_and_buffered_in_order_while_the_broker_is_away() -> None:
    link = Link()
    box = outbox(link)
    assert box.put(1, b"1", 0.0)
    link.up = False
    assert not box.put(2, b"2", 0.0) and not box.put(3, b"3", 0.0)  # kept, not sent
    assert box.pump() == 0 and box.unsent == 2
    link.up = True
    assert not box.put(4, b"4", 0.0)  # older ones wait: it must not overtake them
    assert box.pump(reconnected_at=time.monotonic()) == 4  # 1 again: the broker may have lost it
    assert link.sent == [b"1", b"1", b"2", b"3", b"4"] and box.unsent == 0  # in seq order
    assert box.put(5, b"5", 0.0)  # nothing waits: straight out
    for seq in (1, 2, 3, 4, 5):
        assert box.answered(seq) == 0.0
    assert len(box) == 0 and box.answered(5) is None
    assert box.counts() == (0, 1, 0)


def test_sent_again_after_a_doubling_wait_then_given_up_and_counted() -> None:
    link = Link()
    box = outbox(link, resend_after_s=1.0, tries=3)
    box.put(7, b"7", 0.0)
    t0 = time.monotonic()
    assert box.pump(now=t0 + 0.9) == 0
    assert box.pump(now=t0 + 1.1) == 1  # try 2 after 1 s
    assert box.pump(now=t0 + 1.1 + 1.9) == 0  # the wait doubled
    assert box.pump(now=t0 + 1.1 + 2.1) == 1  # try 3
    assert box.pump(now=t0 + 3.2 + 4.1) == 0  # no try 4: forgotten
    assert len(box) == 0 and box.counts() == (0, 2, 1)
    assert link.sent == [b"7"] * 3


def test_no_resend_while_the_classifier_is_offline_and_a_fresh_wait_when_back() -> None:
    link = Link()
    box = outbox(link, resend_after_s=1.0)
    box.put(1, b"1", 0.0)
    box.classifier_online(False)  # its last will: the broker keeps what we sent for it
    t0 = time.monotonic()
    assert box.pump(now=t0 + 10) == 0
    box.classifier_online(True)
    assert box.pump(now=time.monotonic() + 0.5) == 0  # a fresh wait from now
    assert box.pump(now=time.monotonic() + 1.5) == 1


def test_full_buffer_drops_the_oldest_and_counts_it() -> None:
    link = Link()
    link.up = False
    box = outbox(link, capacity=3)
    for seq in range(1, 6):
        box.put(seq, str(seq).encode(), 0.0)
    assert len(box) == 3 and box.counts()[0] == 2
    link.up = True
    box.pump()
    assert link.sent == [b"3", b"4", b"5"]


def test_edge_status_carries_the_outbox_counters() -> None:
    status = EdgeStatus("door", "online", buffered=3, dropped_buffer=2, resent=5, unanswered=1)
    back = EdgeStatus.decode(status.encode())
    assert (back.buffered, back.dropped_buffer, back.resent, back.unanswered) == (3, 2, 5, 1)


# --- the classifier: a repeat answered from its recent answers ---------------------------------

DIM = 8
MODEL = "toy-00000000"


def toy_index() -> GalleryIndex:
    vecs = np.eye(DIM, dtype=np.float32)
    return GalleryIndex(Matcher(vecs, [f"p{i}" for i in range(DIM)], k=1), MODEL, DIM, DIM, "v1")


def embedding(node: str, seq: int, captured_at: float, person: int = 0) -> codec.EmbeddingMessage:
    return codec.EmbeddingMessage(
        node, seq, seq, 0, (0, 0, 9, 9), MODEL, captured_at, {}, (81.0, 1.0, 1.0),
        np.eye(DIM, dtype=np.float32)[person],
    )  # fmt: skip


class ClassifierRig:
    def __init__(self, **cfg: object) -> None:
        self.broker = MemoryBroker()
        self.cfg = ClassifierConfig(stats_interval_s=60.0, queue_size=1024, **cfg)  # type: ignore[arg-type]
        self.service = ClassifierService(self.cfg, toy_index(), self.broker.transport("clf"))
        self.got: list[Message] = []
        listener = self.broker.transport("listener")
        listener.subscribe(topics.RESULTS, self.got.append)
        listener.connect()
        self.sender = self.broker.transport("edge")
        self.sender.connect()
        self.service.start(timeout=1)

    def send(self, msg: codec.EmbeddingMessage) -> None:
        self.sender.publish(topics.embedding(msg.node), codec.encode(msg), qos=1)

    def texts(self, n: int) -> list[bytes]:
        deadline = time.monotonic() + 5
        while len(self.got) < n and time.monotonic() < deadline:
            self.broker.settle()
            time.sleep(0.01)
        assert self.broker.settle()
        return [m.payload for m in self.got]


def test_a_repeated_message_gets_the_same_answer_and_is_not_classified_again() -> None:
    rig = ClassifierRig()
    try:
        first = embedding("door", 1, 1000.0, person=2)
        rig.send(first)
        rig.texts(1)
        rig.send(first)  # its result was lost: the edge sends it again
        rig.send(embedding("door", 1, 2000.0, person=3))  # an edge restarted: seq 1 again, new
        texts = rig.texts(3)
        assert len(texts) == 3
        repeat, new = sorted(texts[1:], key=lambda t: Result.decode(t).captured_at or 0)
        assert repeat == texts[0]  # the very answer, not a second classification
        assert Result.decode(new).name == "p3"
        assert rig.service.processed == 2 and rig.service.repeats == 1
    finally:
        rig.service.stop()


def test_copies_in_one_batch_are_classified_once() -> None:
    rig = ClassifierRig()
    try:
        rig.service.prepare_worker_thread()
        msg = embedding("door", 5, 1000.0, person=1)
        other = embedding("hall", 5, 1000.0, person=4)  # same seq, other node: its own
        now = time.perf_counter()
        batch = [("door", Pending(msg, now)), ("hall", Pending(other, now))]
        rig.service.classify([*batch, ("door", Pending(msg, now))])
        texts = rig.texts(3)
        assert [Result.decode(t).node for t in texts] == ["door", "hall", "door"]
        assert texts[2] == texts[0] and rig.service.processed == 2 and rig.service.repeats == 1
    finally:
        rig.service.stop()


def test_without_recent_answers_a_repeat_is_classified_again() -> None:
    rig = ClassifierRig(recent_answers=0)
    try:
        first = embedding("door", 1, 1000.0)
        rig.send(first)
        rig.texts(1)
        rig.send(first)
        rig.texts(2)
        assert rig.service.processed == 2 and rig.service.repeats == 0
    finally:
        rig.service.stop()


@pytest.mark.parametrize("qos", [0, 1])
def test_results_go_out_at_the_configured_qos(qos: int) -> None:
    rig = ClassifierRig(result_qos=qos)
    try:
        rig.send(embedding("door", 1, 1000.0))
        rig.texts(1)
        assert [m.qos for m in rig.got] == [qos]
    finally:
        rig.service.stop()


def test_the_status_does_not_publish_the_client_id() -> None:
    rig = ClassifierRig()
    try:
        assert rig.broker.settle()
        status = rig.broker.retained(topics.CLASSIFIER_STATUS)
        assert status is not None and b"clf" not in status
        assert ClassifierStatus.decode(status).client_id is None
    finally:
        rig.service.stop()


def test_not_ready_while_the_broker_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    nobody = BrokerConfig(url=f"mqtt://127.0.0.1:{free_port()}")  # nobody listens there
    cfg = ClassifierConfig(stats_interval_s=60.0, broker=nobody)
    service = ClassifierService(cfg, toy_index(), BusClient(cfg.broker, "clf-unreachable"))
    with caplog.at_level(logging.INFO, logger="facewire.classifier"):
        service.start(timeout=0.3)
    try:
        assert not service.ready.is_set()
        assert "classifier ready on" not in caplog.text and "ready once connected" in caplog.text
    finally:
        service.stop()


def test_ready_only_once_the_broker_has_answered_the_subscriptions(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker()
    transport = broker.transport("clf-slow-suback")
    answered = threading.Event()
    # connected at once, its SUBACKs late: what start() sees from a loaded broker
    real_wait = transport.wait_subscribed
    transport.wait_subscribed = lambda timeout: answered.wait(timeout) and real_wait(timeout)  # type: ignore[method-assign]
    cfg = ClassifierConfig(stats_interval_s=60.0)
    service = ClassifierService(cfg, toy_index(), transport)
    with caplog.at_level(logging.INFO, logger="facewire.classifier"):
        service.start(timeout=0.3)
        try:
            assert transport.connected and not service.ready.is_set()
            assert "classifier ready on" not in caplog.text
            assert "not answered the subscriptions yet" in caplog.text
            answered.set()
            deadline = time.monotonic() + 5
            while not service.ready.is_set() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert service.ready.is_set()
            assert caplog.text.count("classifier ready on") == 1
        finally:
            service.stop()


# --- the monitor: a result delivered twice is one row ----------------------------------------


def test_the_monitor_logs_a_result_delivered_twice_once(tmp_path: Path) -> None:
    store, state = Store(tmp_path / "log.sqlite3"), State()
    subscriber = Subscriber(None, store, state)
    try:
        r = Result("door", 1, "ann", 0.7, MODEL, captured_at=1000.0)
        again = Result("door", 1, "bob", 0.6, MODEL, captured_at=2000.0)  # edge restarted
        for res in (r, r, again):
            subscriber.handle(Message(topics.result("door"), res.encode().encode(), False, 1))
        assert store.flush(5)
        assert [row["name"] for row in store.window()] == ["ann", "bob"]
        assert state.counts()["result_repeat"] == 1
    finally:
        store.close()


def test_no_statuses_pile_up_while_the_broker_is_unreachable() -> None:
    # a QoS 1 publish while disconnected waits in the client's memory, without limit
    nobody = BrokerConfig(url=f"mqtt://127.0.0.1:{free_port()}")
    cfg = ClassifierConfig(stats_interval_s=0.1, broker=nobody)
    service = ClassifierService(cfg, toy_index(), BusClient(cfg.broker, "clf-away"))
    service.start(timeout=0.2)
    edge_cfg = EdgeConfig(node="door", status_interval_s=0.1, broker=nobody)
    edge = EdgeNode(edge_cfg, BusClient(nobody, "edge-away"), pipeline=_Stub())  # type: ignore[arg-type]
    edge.start(timeout=0.2)
    try:
        at_start = service.bus.pending, edge.bus.pending  # what start() said once
        time.sleep(0.8)
        assert (service.bus.pending, edge.bus.pending) == at_start
    finally:
        service.stop()
        edge.close(drain_s=0.1)


class _Stub:
    model_id = MODEL

    def close(self) -> None:
        pass
