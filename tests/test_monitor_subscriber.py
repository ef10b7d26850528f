"""The monitor's subscriber on the in-memory transport: typed messages in, log rows and
live state out; anything that does not decode is counted, and costs no other message."""

from __future__ import annotations

from pathlib import Path

from facewire.bus import topics
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, EdgeStatus, ErrorReport, Neighbour, Result
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


def test_results_statuses_and_errors_reach_the_pages(tmp_path: Path) -> None:
    broker = MemoryBroker()
    store, state = Store(tmp_path / "log.sqlite3"), State()
    subscriber = Subscriber(broker.transport("monitor"), store, state)
    subscriber.start(timeout=1)
    pub = broker.transport("classifier")
    pub.connect()
    try:
        pub.publish(
            topics.status("door"), EdgeStatus("door", "online", model="m").encode(), 1, True
        )
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
    finally:
        subscriber.close()
        store.close()
