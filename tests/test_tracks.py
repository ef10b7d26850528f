"""Decisions over a track: one event per decision, the consistency rule, quality
weights, and a track that ends; through the classifier and over a real broker."""

from __future__ import annotations

import time

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import Result, TrackEvent
from facewire.bus.transport import Message, Transport
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.classifier.tracks import Tracker, weight
from facewire.config.schema import BrokerConfig, ClassifierConfig

V = np.array([1.0, 0.0, 0.0], np.float32)
W = np.array([0.0, 1.0, 0.0], np.float32)
GOOD = (9216.0, 300.0, 120.0)
BLURRED = (9216.0, 5.0, 120.0)


def test_one_event_per_decision_and_left_when_it_ends() -> None:
    t = Tracker(gap_s=1.0, min_frames=3)
    events = [t.observe("door", (0, 0, 90, 90), V, GOOD, i * 0.2, "ann", 0.7, i * 0.2).event
              for i in range(6)]  # fmt: skip
    decided = [e for e in events if e is not None]
    assert [(e.event, e.name, e.frames) for e in decided] == [("arrived", "ann", 3)]
    assert t.expire(now=1.5) == []  # seen 0.5 s ago
    (left,) = t.expire(now=2.5)
    assert (left.event, left.name, left.frames, left.track) == ("left", "ann", 6, 1)
    assert t.expire(now=9.0) == []


def test_a_name_must_win_most_of_the_weight() -> None:
    t = Tracker(min_frames=2)
    names = ["ann", "bob", "ann", "bob"]
    out = [
        t.observe("door", (0, 0, 90, 90), V, GOOD, i * 0.1, n, 0.6, i * 0.1)
        for i, n in enumerate(names)
    ]
    decided = [o.event for o in out if o.event is not None]
    assert decided[0].name == "unknown"  # a tie is unknown
    assert all(o.track == 1 for o in out)
    # a sharp frame outweighs two blurred ones
    t2 = Tracker(min_frames=3)
    for i, (n, q) in enumerate([("bob", BLURRED), ("bob", BLURRED), ("ann", GOOD)]):
        last = t2.observe("hall", (0, 0, 90, 90), V, q, i * 0.1, n, 0.6, i * 0.1)
    assert last.event is not None and last.event.name == "ann"
    assert weight(GOOD) > 10 * weight(BLURRED)


def test_each_frame_says_its_tracks_decision_which_one_named_frame_does_not_sway() -> None:
    t = Tracker(min_frames=3)
    names = ["unknown"] * 6 + ["ann"] + ["unknown"] * 2
    out = [
        t.observe("door", (0, 0, 90, 90), V, GOOD, i * 0.1, n, 0.4, i * 0.1)
        for i, n in enumerate(names)
    ]
    assert [o.decided for o in out] == [None, None] + ["unknown"] * 7
    assert out[6].event is None  # no change, no event
    # once most of the weight is one name, the frames say so, and an event goes out
    more = [t.observe("door", (0, 0, 90, 90), V, GOOD, 1.0 + i * 0.1, "ann", 0.7, 1.0 + i * 0.1)
            for i in range(9)]  # fmt: skip
    changed = [o for o in more if o.event is not None]
    assert [(o.event.event, o.event.name, o.decided) for o in changed] == [
        ("changed", "ann", "ann")
    ]
    assert more[-1].decided == "ann"


def test_someone_stepping_into_the_place_another_left_starts_a_track_of_their_own() -> None:
    t = Tracker(min_frames=2)
    box = (0, 0, 90, 90)
    ann = [t.observe("door", box, V, GOOD, i * 0.1, "ann", 0.7, i * 0.1) for i in range(3)]
    # bob, right after, in the same place: the boxes overlap, the vectors do not
    bob = [t.observe("door", box, W, GOOD, 0.3 + i * 0.1, "bob", 0.7, 0.3 + i * 0.1)
           for i in range(3)]  # fmt: skip
    assert {o.track for o in ann} == {1} and {o.track for o in bob} == {2}
    assert [o.event.name for o in ann + bob if o.event is not None] == ["ann", "bob"]
    assert bob[-1].decided == "bob"
    # in the same place, a vector between track.min_overlap_similarity (0.4) and
    # track.min_similarity (0.5) from ann's still continues hers (a turn, some blur) …
    turned = np.array([0.45, 0.0, np.sqrt(1 - 0.45**2)], np.float32)  # 0 with bob's
    assert t.observe("door", box, turned, GOOD, 1.0, "ann", 0.6, 1.0).track == 1
    # … one below it starts a track of its own
    other = np.array([0.35, 0.0, np.sqrt(1 - 0.35**2)], np.float32)
    t.observe("door", box, V, GOOD, 1.1, "ann", 0.7, 1.1)  # ann's last vector: V again
    assert t.observe("door", box, other, GOOD, 1.2, "cy", 0.6, 1.2).track == 3
    # with the bound off, overlap alone continues a track, as it did before
    loose = Tracker(min_frames=2, min_overlap_similarity=-1.0)
    loose.observe("door", box, V, GOOD, 0.0, "ann", 0.7, 0.0)
    assert loose.observe("door", box, W, GOOD, 0.1, "bob", 0.7, 0.1).track == 1


def test_two_faces_in_a_frame_are_two_tracks() -> None:
    t = Tracker(min_frames=1)
    a = t.observe("door", (0, 0, 90, 90), V, GOOD, 0.0, "ann", 0.7, 0.0)
    b = t.observe("door", (300, 0, 90, 90), W, GOOD, 0.0, "bob", 0.7, 0.0)
    c = t.observe("door", (5, 3, 90, 90), V, GOOD, 0.2, "ann", 0.7, 0.2)
    assert (a.track, b.track, c.track) == (1, 2, 1)
    # another node has tracks of its own
    assert t.observe("hall", (0, 0, 90, 90), V, GOOD, 0.0, "ann", 0.7, 0.0).track == 1


def run(transport: Transport, listener: Transport, settle) -> tuple[list[Result], list[TrackEvent]]:  # type: ignore[no-untyped-def]
    vecs = np.eye(3, dtype=np.float32)
    index = GalleryIndex(
        Matcher(vecs, ["ann", "bob", "cy"], k=1, threshold=0.5), "toy-0+lm", 3, 3, "v1"
    )
    cfg = ClassifierConfig(stats_interval_s=60.0)
    cfg.track.gap_s = 0.5
    service = ClassifierService(cfg, index, transport)
    got: list[Message] = []
    listener.subscribe("faces/door/#", got.append)
    listener.connect()
    service.start(timeout=5)
    try:
        for seq in range(1, 6):
            msg = codec.EmbeddingMessage(
                "door", seq, seq, 0, (100, 80, 96, 96), "toy-0+lm", 1000.0 + seq * 0.2, {},
                GOOD, V,
            )  # fmt: skip
            listener.publish(topics.embedding("door"), codec.encode(msg), qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            settle()
            events = [TrackEvent.decode(m.payload) for m in got if m.topic == topics.event("door")]
            if any(e.event == "left" for e in events):
                break
            time.sleep(0.05)
    finally:
        service.stop()
    results = [Result.decode(m.payload) for m in got if m.topic == topics.result("door")]
    return results, events


def check(results: list[Result], events: list[TrackEvent]) -> None:
    assert [r.track for r in results] == [1] * 5
    assert [r.track_frames for r in results] == [1, 2, 3, 4, 5]
    assert [r.track_name for r in results] == [None, None, "ann", "ann", "ann"]
    assert [(e.event, e.name) for e in events] == [("arrived", "ann"), ("left", "ann")]
    assert events[0].frames == 3 and events[1].frames == 5
    assert events[1].first_seen == 1000.2 and events[1].last_seen == 1001.0


def test_the_classifier_publishes_track_events() -> None:
    broker = MemoryBroker()
    check(*run(broker.transport("cls"), broker.transport("edge"), broker.settle))


@pytest.mark.slow
def test_track_events_over_a_real_broker(mosquitto) -> None:
    cfg = BrokerConfig(url=mosquitto.url)
    check(*run(BusClient(cfg, "cls"), BusClient(cfg, "edge"), lambda: None))
