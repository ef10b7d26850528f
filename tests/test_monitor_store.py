"""The monitor's detection log: SQLite persistence, filters, the bounded window, the feed.

(Its threads — the writer, read connections, hand-over queue — are tested in
tests/test_monitor_threads.py.)"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from facewire.monitor.store import (
    NEAR_MARGIN,
    Feed,
    Store,
    band,
    pipeline_latency_ms,
    stages_ms,
)


def result(name: str, score: float = 0.8, seq: int = 1, **extra: object) -> dict[str, object]:
    return {
        "node": extra.pop("node", "door"),
        "seq": seq,
        "name": name,
        "score": score,
        "threshold": 0.4,
        "model": "sface-1234",
        "timings": {"detect_ms": 4.0, "embed_ms": 6.5, "search_ms": 0.25},
        **extra,
    }


def test_rows_survive_a_reopen(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "monitor.sqlite3"  # the parent folder is created
    store = Store(db, window=10)
    assert store.add(result("alice", seq=1), node="door", received_at=1000.0) is True
    store.add(result("unknown", score=0.2, seq=2), node="lobby", received_at=1001.0)
    store.close()  # close() writes what was handed in

    again = Store(db, window=10)
    try:
        assert again.count() == 2
        window = again.window()
        assert [r["name"] for r in window] == ["alice", "unknown"]  # oldest first
        assert window[0] == {
            "id": 1,
            "received_at": 1000.0,
            "node": "door",
            "seq": 1,
            "name": "alice",
            "score": 0.8,
            "threshold": 0.4,
            "stages_ms": pytest.approx(10.75),
            "latency_ms": pytest.approx(10.75),  # the old name of stages_ms
            "model": "sface-1234",
            "band": "strong",
            "captured_at": None,  # the result carried no capture time
            "delay_s": None,
            "track_name": None,  # nor a track decision
        }
        assert window[1]["node"] == "lobby" and window[1]["received_at"] == 1001.0
        # ids keep counting after the reopen and the raw payload is kept verbatim
        again.add(result("bob", seq=3), node="door")
        assert again.flush(5)
        assert again.last_id() == 3 and again.window()[-1]["id"] == 3
        assert again.query(limit=1, raw=True)[0]["result"] == result("bob", seq=3)
    finally:
        again.close()


def test_wal_mode_and_readers_see_committed_rows(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    store = Store(db)
    try:
        store.add(result("alice"), node="door")
        assert store.flush(5)
        other = sqlite3.connect(db)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("SELECT name FROM detections").fetchall() == [("alice",)]
        finally:
            other.close()
    finally:
        store.close()


def test_query_filters_newest_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite3")
    try:
        for i, (node, name) in enumerate(
            [("door", "alice"), ("lobby", "bob"), ("door", "unknown"), ("door", "alice")]
        ):
            store.add(result(name, seq=i), node=node)
        assert store.flush(5)
        ids = [r["id"] for r in store.query()]
        assert ids == [4, 3, 2, 1]
        assert [r["id"] for r in store.query(node="door")] == [4, 3, 1]
        assert [r["id"] for r in store.query(name="alice")] == [4, 1]
        assert [r["id"] for r in store.query(node="door", name="alice", limit=1)] == [4]
        assert [r["id"] for r in store.query(since=2)] == [4, 3]
        assert [r["id"] for r in store.query(before=3)] == [2, 1]
        assert [r["id"] for r in store.query(since=1, limit=2, oldest_first=True)] == [2, 3]
        assert store.query(node="nowhere") == []
        assert "result" not in store.query(limit=1)[0]
    finally:
        store.close()


def test_window_is_bounded_and_reloads_newest(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    store = Store(db, window=3)
    for i in range(5):
        store.add(result(f"p{i}", seq=i), node="door" if i % 2 else "lobby")
    assert store.flush(5)
    assert [r["name"] for r in store.window()] == ["p2", "p3", "p4"]
    assert [r["name"] for r in store.window(node="door")] == ["p3"]
    assert store.count() == 5  # SQLite keeps everything
    assert store.last_id() == 5
    store.close()

    smaller = Store(db, window=2)
    try:
        assert [r["name"] for r in smaller.window()] == ["p3", "p4"]
    finally:
        smaller.close()
    with pytest.raises(ValueError):
        Store(db, window=0)


def test_add_rejects_results_without_name_or_node(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite3")
    try:
        with pytest.raises(ValueError, match="name"):
            store.add({"score": 0.5}, node="door")
        with pytest.raises(ValueError, match="node"):
            store.add({"name": "alice", "score": 0.5})
        with pytest.raises(ValueError, match="name"):  # SQLite can't store lone surrogates
            store.add({"name": "\ud800", "score": 0.5}, node="door")
        # The topic's node wins over the payload's.
        store.add(result("alice", node="liar"), node="door")
        # Odd field types are stored as NULL rather than refused (also a seq SQLite
        # can't hold, which would otherwise fail the writer's whole batch).
        store.add({"name": "bob", "score": "high", "seq": "x", "timings": [1]}, node="d")
        store.add({"name": "eve", "seq": 2**64, "model": "\udfff", "x": "\ud800"}, node="d")
        assert store.flush(5)
        alice, bob, eve = store.window()
        assert alice["node"] == "door"
        assert (bob["score"], bob["seq"], bob["stages_ms"], bob["latency_ms"]) == (None,) * 4
        assert (eve["seq"], eve["model"]) == (None, None)
        assert store.query(limit=1, raw=True)[0]["result"]["x"] == "\ud800"  # kept verbatim
        assert store.stats()["failed"] == 0
    finally:
        store.close()


def test_pipeline_latency_sums_stages_but_not_totals() -> None:
    timings = {
        "detect_ms": 3.0,
        "mesh_ms": 2.0,
        "align_ms": 0.5,
        "embed_ms": 9.0,
        "encode_ms": 0.1,
        "queue_ms": 0.4,
        "search_ms": 0.3,
        "total_classifier_ms": 0.9,
    }
    assert stages_ms(timings) == pytest.approx(15.3)
    assert stages_ms({"detect_ms": True, "x": "1"}) is None
    assert stages_ms(None) is None
    assert stages_ms({}) is None
    assert pipeline_latency_ms is stages_ms  # the old name


def test_band() -> None:
    assert band("unknown", 0.9, 0.4) == "unknown"
    assert band("alice", 0.4 + NEAR_MARGIN + 0.01, 0.4) == "strong"
    assert band("alice", 0.41, 0.4) == "near"
    assert band("alice", 0.9, None) == "near"


def test_feed_fans_out_and_drops_for_slow_listeners(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.sqlite3")
    try:
        a, b = store.feed.listen(), store.feed.listen()
        store.add(result("alice"), node="door")
        assert store.flush(5)
        row = store.window()[-1]
        assert a.get(timeout=1) == row and b.get(timeout=1) == row and row["id"] == 1
        store.feed.unlisten(b)
        assert store.feed.listeners == 1
    finally:
        store.close()
    assert a.get(timeout=1) is None  # closing wakes listeners with the end marker

    feed = Feed(maxsize=2)
    q = feed.listen()
    for i in range(5):
        feed.publish({"id": i})
    assert [q.get_nowait()["id"] for _ in range(2)] == [0, 1]  # the rest was dropped
    feed.close()
    assert q.get(timeout=1) is None


def test_store_is_fast_enough_for_the_live_rate(tmp_path: Path) -> None:
    """8 nodes × 15 fps = 120 results/s; the writer must keep up with margin."""
    store = Store(tmp_path / "m.sqlite3")
    try:
        t0 = time.perf_counter()
        for i in range(600):
            store.add(result("alice", seq=i), node=f"n{i % 8}")
        assert store.flush(10)
        elapsed = time.perf_counter() - t0
        assert elapsed < 2.5, f"600 inserts took {elapsed:.2f}s"
        assert store.count() == 600
    finally:
        store.close()
