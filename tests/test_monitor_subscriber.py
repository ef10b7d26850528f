"""The monitor's subscriber on the in-memory transport: typed messages in, log rows and
live state out; anything that does not decode is counted, and costs no other message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facewire.bus import topics
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import (
    ClassifierStatus,
    Correction,
    EdgeStatus,
    Enrolment,
    ErrorReport,
    GalleryReply,
    Neighbour,
    Result,
    Sighting,
)
from facewire.monitor.app import create_app
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber


def result(seq: int, name: str = "ann") -> Result:
    return Result(
        node="door",
        seq=seq,
        name=name,
        score=0.71,
        model="sface-1a2b3c4d+lm",
        threshold=0.42,
        neighbours=(Neighbour(name, 0.71),),
        timings={"detect": 4.0, "embed": 12.0, "queue": 0.2, "total_classifier": 0.5},
    )


@dataclass
class Monitor:
    broker: MemoryBroker
    store: Store
    state: State
    subscriber: Subscriber


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[Monitor]:
    """The monitor's subscriber, started on an in-memory broker, with its log and state."""
    broker = MemoryBroker()
    store, state = Store(tmp_path / "log.sqlite3"), State()
    subscriber = Subscriber(broker.transport("monitor"), store, state)
    subscriber.start(timeout=1)
    try:
        yield Monitor(broker, store, state, subscriber)
    finally:
        subscriber.close()
        store.close()


def test_results_statuses_and_errors_reach_the_pages(monitor: Monitor) -> None:
    broker, store, state = monitor.broker, monitor.store, monitor.state
    pub = broker.transport("classifier")
    pub.connect()
    pub.publish(topics.status("door"), EdgeStatus("door", "online", model="m").encode(), 1, True)
    pub.publish(topics.result("door"), b"\xff not json")  # costs nothing else
    pub.publish("faces/a b/result", result(1).encode())  # no valid node id
    for seq in (1, 2):
        pub.publish(topics.result("door"), result(seq, f"p{seq}").encode())
    report = ErrorReport("door", "wrong_model", "other model", 1, seq=3)
    pub.publish(topics.error("door"), report.encode(), qos=1)
    pub.publish(topics.CLASSIFIER_STATUS, ClassifierStatus(state="offline").encode(), 1, True)
    assert broker.settle()
    assert store.flush(5)
    client = create_app(store, state).test_client()
    rows = client.get("/log").get_json()["detections"]
    assert [r["name"] for r in rows] == ["p2", "p1"]
    assert rows[0]["stages_ms"] == 16.2  # the stage durations, totals left out
    raw = client.get("/log?raw=1&limit=1").get_json()["detections"][0]["result"]
    assert Result.from_dict(raw) == result(2, "p2")
    nodes = client.get("/nodes").get_json()
    (door,) = nodes["nodes"]
    assert door["state"] == "online" and door["errors"] == 1
    assert nodes["classifier"]["state"] == "offline"
    assert state.malformed_total == 2
    reasons = sorted(m["reason"].split("]")[0] for m in state.malformed_recent())
    assert reasons == ["[bad_json", "[bad_topic"]


def test_a_bad_track_decision_costs_its_own_result_only(monitor: Monitor) -> None:
    broker, store, state = monitor.broker, monitor.store, monitor.state
    pub = broker.transport("classifier")
    pub.connect()
    good = json.loads(result(1, "p1").encode())
    for bad in (123, "x" * 200, ""):  # not text, over the 128 bytes of a name, empty
        pub.publish(topics.result("door"), json.dumps(good | {"track_name": bad}))
    pub.publish(topics.result("door"), json.dumps(good | {"seq": 2, "track_name": "p1"}))
    assert broker.settle()
    assert store.flush(5)
    rows = store.query()
    assert [(r["seq"], r["track_name"]) for r in rows] == [(2, "p1")]
    assert state.malformed_total == 3
    reasons = {m["reason"].split("]")[0] for m in state.malformed_recent()}
    assert reasons == {"[bad_field"}
    assert all("track_name" in m["reason"] for m in state.malformed_recent())


def test_teaching_from_the_log_sends_an_enrolment_or_a_correction(monitor: Monitor) -> None:
    broker, store, state, subscriber = (
        monitor.broker,
        monitor.store,
        monitor.state,
        monitor.subscriber,
    )
    classifier = broker.transport("classifier")
    got: list[tuple[str, bytes]] = []
    classifier.subscribe("faces/gallery/#", lambda m: got.append((m.topic, m.payload)))
    classifier.connect()
    client = create_app(store, state, teach=subscriber.teach).test_client()
    named = client.post(
        "/api/teach", json={"node": "door", "seq": 7, "name": "Visitor", "wrong": False}
    )
    assert named.status_code == 202
    wrong = client.post("/api/teach", json={"node": "door", "seq": 8, "name": "ann", "wrong": True})
    assert wrong.status_code == 202
    assert broker.settle()
    (t1, p1), (t2, p2) = [g for g in got if g[0] != topics.GALLERY_REPLIES]
    enrol, correction = Enrolment.decode(p1), Correction.decode(p2)
    assert t1 == topics.ENROLL and enrol.name == "Visitor" and enrol.source == "sighting"
    assert enrol.sightings == (Sighting("door", 7),)
    assert enrol.request_id == named.get_json()["request_id"]
    assert t2 == topics.CORRECT and (correction.node, correction.seq) == ("door", 8)
    assert correction.wrong_name == "ann"
    # the classifier's answer reaches the page
    reply = GalleryReply("enroll", True, "kept 1 of 1 for Visitor", request_id=enrol.request_id)
    classifier.publish(topics.GALLERY_REPLIES, reply.encode(), qos=1)
    assert broker.settle()
    replies = client.get(f"/gallery/replies?request_id={enrol.request_id}").get_json()
    assert [r["detail"] for r in replies["replies"]] == ["kept 1 of 1 for Visitor"]
    # and what cannot be sent is refused with a reason
    for bad in (
        {"node": "a b", "seq": 1, "name": "x", "wrong": False},
        {"node": "door", "seq": -1, "name": "x", "wrong": False},
        {"node": "door", "seq": 1, "name": "../etc", "wrong": False},
        {"node": "door", "seq": 1, "name": "unknown", "wrong": False},
        {"node": "door", "seq": 1, "name": "x", "wrong": "yes"},
    ):
        resp = client.post("/api/teach", json=bad)
        assert resp.status_code == 400 and resp.get_json()["error"], bad
    without = create_app(store, state).test_client()
    assert (
        without.post(
            "/api/teach", json={"node": "door", "seq": 1, "name": "x", "wrong": False}
        ).status_code
        == 503
    )
