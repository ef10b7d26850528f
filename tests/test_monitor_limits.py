"""What any client publishes cannot grow the monitor without bound, old rows go, and
late results say so (issue 12, items 4, 6 and 8). Messages go through the real
decoders (Subscriber.handle), requests through the Flask test client."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from facewire.bus import topics
from facewire.bus.transport import Message
from facewire.monitor.app import MAX_LIMIT, MAX_RAW_LIMIT, create_app
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber
from tests.test_monitor import result_payload, status_payload, wait_for

DAY = 86400.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "log.sqlite3", window=50)
    yield s
    s.close()


def deliver(sub: Subscriber, topic: str, payload: object) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sub.handle(Message(topic, data, False, 1))


# --- retention -----------------------------------------------------------------------------


def test_retention_deletes_old_rows_and_keeps_new_ones(tmp_path: Path) -> None:
    db = tmp_path / "log.sqlite3"
    store = Store(db, window=50, retention_days=1)
    try:
        now = time.time()
        for i, age in enumerate((3 * DAY, 2 * DAY, 1.5 * DAY, 3600.0, 60.0)):
            name = "Old_Ann_Gone" if age > DAY else "Fresh_Bob"
            store.add({"name": name, "node": "door", "seq": i, "score": 0.9}, received_at=now - age)
        assert store.flush(5)
        # (the retention thread's first pass may have run already: count what is left)
        assert store.purge(now=now) in (0, 3)
        assert store.count() == 2
        assert [r["name"] for r in store.query()] == ["Fresh_Bob", "Fresh_Bob"]
        assert [r["name"] for r in store.window()] == ["Fresh_Bob", "Fresh_Bob"]
        http = create_app(store, State()).test_client()
        assert [r["seq"] for r in http.get("/log").get_json()["detections"]] == [4, 3]
        assert store.purge(now=now) == 0
    finally:
        store.close()
    # secure_delete: the deleted rows are overwritten, not left in free pages
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite3*"))
    assert b"Old_Ann_Gone" not in on_disk and b"Fresh_Bob" in on_disk


def test_the_retention_thread_runs_by_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "log.sqlite3", retention_days=1, retention_check_s=0.1)
    try:
        store.add({"name": "old", "node": "door", "seq": 1}, received_at=time.time() - 2 * DAY)
        store.add({"name": "new", "node": "door", "seq": 2})
        assert store.flush(5)
        wait_for(lambda: store.count() == 1, what="the old row deleted")
        assert [r["name"] for r in store.query()] == ["new"]
    finally:
        store.close()


def test_retention_zero_keeps_everything(store: Store) -> None:
    store.add({"name": "ancient", "node": "door", "seq": 1}, received_at=1000.0)
    assert store.flush(5)
    assert store.purge() == 0 and store.count() == 1
    with pytest.raises(ValueError, match="retention_days"):
        Store(":memory:", retention_days=-1)


def test_no_vectors_are_stored(store: Store) -> None:
    """The log keeps results (names and scores), never an embedding: its columns and a
    result's raw message have no vector in them."""
    sub = Subscriber(None, store, State())
    payload = result_payload("door", "unknown", 0.1, 1)
    payload["embedding"] = [0.1] * 512  # not a result field: the decoder drops it
    deliver(sub, topics.result("door"), payload)
    assert store.flush(5)
    (row,) = store.query(raw=True)
    assert "embedding" not in row["result"] and "vector" not in json.dumps(row)
    with sqlite3.connect(store.path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(detections)")}
    assert not columns & {"embedding", "vector"}


# --- caps ----------------------------------------------------------------------------------


def test_thirty_thousand_node_ids_keep_nodes_bounded(store: Store) -> None:
    state = State(max_nodes=500)
    sub = Subscriber(None, store, state)
    for i in range(30_000):
        deliver(sub, topics.status(f"n{i}"), status_payload(f"n{i}"))
    http = create_app(store, state).test_client()
    body = http.get("/nodes").get_data()
    nodes = json.loads(body)["nodes"]
    assert len(nodes) == 500 and len(body) < 500_000
    # the most recently seen are the ones kept
    assert {n["node"] for n in nodes} == {f"n{i}" for i in range(29_500, 30_000)}
    health = http.get("/healthz").get_json()
    assert health["nodes"] == 500 and health["nodes_forgotten"] == 29_500
    # a node seen again comes back as the newest, evicting the oldest kept
    deliver(sub, topics.status("n0"), status_payload("n0"))
    kept = {n["node"] for n in http.get("/nodes").get_json()["nodes"]}
    assert "n0" in kept and "n29500" not in kept and len(kept) == 500


def test_huge_fields_are_refused_or_cut(store: Store) -> None:
    state = State()
    sub = Subscriber(None, store, state)
    http = create_app(store, state).test_client()
    huge = result_payload("door", "x" * 1_000_000, 0.9, 1)  # a 1 MB name
    deliver(sub, topics.result("door"), huge)
    assert state.malformed_total == 1 and store.count() == 0
    malformed = http.get("/errors").get_json()["malformed"]["recent"][0]
    assert len(json.dumps(malformed)) < 2_000  # what is kept of it is small

    # keys over 64 bytes are refused by the decoder (bus.messages), the whole result
    long_keys = result_payload("door", "alice", 0.9, 2)
    long_keys["timings"] = {f"{'k' * 5000}{i}_ms": 1.0 for i in range(100)} | {"embed_ms": 9.0}
    deliver(sub, topics.result("door"), long_keys)
    assert state.malformed_total == 2 and store.count() == 0

    many = result_payload("door", "alice", 0.9, 2)
    many["neighbours"] = [{"name": "n" * 128, "score": 0.5} for _ in range(4000)]
    many["timings"] = {f"k{i}_ms": 1.0 for i in range(100)} | {"embed_ms": 9.0}
    deliver(sub, topics.result("door"), many)
    assert store.flush(5)
    (row,) = store.query(raw=True)
    assert row["name"] == "alice" and len(json.dumps(row)) < 8_000
    assert len(row["result"]["neighbours"]) == 16
    assert len(row["result"]["timings"]) == 32  # the first 32 of 101
    with sqlite3.connect(store.path) as db:
        (size,) = db.execute("SELECT MAX(LENGTH(raw)) FROM detections").fetchone()
    assert size < 8_000

    # the classifier's status and the errors are cut too
    deliver(
        sub,
        topics.CLASSIFIER_STATUS,
        {"state": "online", "queues": {"q" * 10_000: 1}, "model": "sface-0123abcd"},
    )
    body = http.get("/nodes").get_data()
    assert len(body) < 20_000, len(body)


def test_log_limit_is_capped(store: Store) -> None:
    for i in range(MAX_LIMIT + 50):
        store.add({"name": "a", "node": "door", "seq": i})
    assert store.flush(10)
    http = create_app(store, State()).test_client()
    page = http.get("/log?limit=100000000").get_json()
    assert page["limit"] == MAX_LIMIT and page["count"] == MAX_LIMIT
    raw = http.get("/log?limit=1000&raw=1").get_json()
    assert raw["limit"] == MAX_RAW_LIMIT and raw["count"] == MAX_RAW_LIMIT
    assert http.get("/log?limit=99999999999999999999").status_code == 400


# --- late results --------------------------------------------------------------------------


def test_late_results_are_marked_late(store: Store) -> None:
    state = State()
    sub = Subscriber(None, store, state)
    now = time.time()
    on_time = result_payload("door", "alice", 0.9, 1) | {"captured_at": now - 0.5}
    late = result_payload("door", "bob", 0.9, 2) | {"captured_at": now - 12.0}
    undated = result_payload("door", "carol", 0.9, 3)
    del undated["captured_at"]
    for payload in (on_time, late, undated):
        deliver(sub, topics.result("door"), payload)
    assert store.flush(5)
    http = create_app(store, state, late_after_s=5.0).test_client()
    rows = {r["name"]: r for r in http.get("/log").get_json()["detections"]}
    assert rows["alice"]["late"] is False and 0.4 < rows["alice"]["delay_s"] < 2
    assert rows["bob"]["late"] is True and 11.9 < rows["bob"]["delay_s"] < 14
    assert rows["carol"]["late"] is False and rows["carol"]["delay_s"] is None
    # the stream says the same
    stream = http.get("/log/stream?since=0", buffered=False)
    text = ""
    for chunk in stream.response:
        text += chunk.decode() if isinstance(chunk, bytes) else chunk
        if text.count("event: detection") == 3:
            break
    stream.close()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert {e["name"]: e["late"] for e in events} == {"alice": False, "bob": True, "carol": False}
    # the page knows the threshold
    assert "lateAfterS: 5.0" in http.get("/log/html").get_data(as_text=True)


def test_an_old_log_gains_the_capture_time_and_track_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as old:  # the table as earlier versions made it
        old.execute(
            "CREATE TABLE detections (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL"
            " NOT NULL, node TEXT NOT NULL, seq INTEGER, name TEXT NOT NULL, score REAL,"
            " threshold REAL, latency_ms REAL, model TEXT, raw TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO detections (received_at, node, name, raw) VALUES (1.0, 'door', 'a', '{}')"
        )
    store = Store(db)
    try:
        store.add(
            {"name": "b", "node": "door", "seq": 2, "captured_at": 99.0, "track_name": "unknown"},
            received_at=100.0,
        )
        assert store.flush(5)
        rows = store.query()
        assert [(r["name"], r["delay_s"], r["track_name"]) for r in rows] == [
            ("b", 1.0, "unknown"),
            ("a", None, None),
        ]
    finally:
        store.close()
