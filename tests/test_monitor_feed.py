"""The live feed gets each row before its commit, and loses none of the log's guarantees:
a row shown is a row stored (with the id it was shown with), in order, and a listener
that missed rows finds them in SQLite when it catches up."""

from __future__ import annotations

import queue
import re
import sqlite3
import threading
from pathlib import Path

from facewire.monitor.store import Feed, Store
from tests.test_monitor_threads import WRITER, Trace, result


def held_at_commit(db: Path, trace: Trace, **kw: object) -> Store:
    trace.hold = re.compile("^COMMIT")
    return Store(db, sql_trace=trace, **kw)  # type: ignore[arg-type]


def test_a_row_is_on_the_feed_before_its_commit_and_stored_with_that_id(tmp_path: Path) -> None:
    trace = Trace()
    store = held_at_commit(tmp_path / "m.sqlite3", trace)
    try:
        early = store.feed.listen()
        store.add(result("alice", seq=1), node="door")
        assert trace.held.wait(10)  # the writer waits before its COMMIT
        shown = early.get(timeout=5)
        assert shown["name"] == "alice" and shown["id"] == 1
        assert store.count() == 0 and store.last_id() == 0  # not committed yet
        # A stream starting now would not find it in SQLite: the feed hands it over.
        late = store.feed.listen()
        assert late.get(timeout=5) is shown
        trace.hold = None
        trace.release.set()
        assert store.flush(10)
        assert [(r["id"], r["name"]) for r in store.query()] == [(1, "alice")]
        assert store.window() == [shown] and store.last_id() == 1
        assert store.feed.listen().empty()  # committed: a new stream reads it from SQLite
    finally:
        trace.release.set()
        store.close()


class CommitGate:
    """A trace callback that stops the writer at each COMMIT until let through."""

    def __init__(self) -> None:
        self.arrived: queue.Queue[str] = queue.Queue()
        self.gate = threading.Semaphore(0)
        self.open = False

    def __call__(self, sql: str) -> None:
        if threading.current_thread().name == WRITER and sql == "COMMIT" and not self.open:
            self.arrived.put(sql)
            self.gate.acquire()

    def let_one_through(self) -> None:
        self.gate.release()

    def open_up(self) -> None:
        self.open = True
        self.gate.release()


def test_a_listener_that_missed_rows_finds_them_committed(tmp_path: Path) -> None:
    commits = CommitGate()
    store = Store(tmp_path / "m.sqlite3", sql_trace=commits)
    store.feed = Feed(maxsize=1)  # a listener with room for one row
    try:
        slow = store.feed.listen()
        store.add(result(seq=0), node="door")
        commits.arrived.get(timeout=10)  # row 0 published, its commit held
        for i in range(1, 4):
            store.add(result(seq=i), node="door")
        commits.let_one_through()
        commits.arrived.get(timeout=10)  # rows 1-3 published (lost: no room), held
        assert slow.get_nowait()["id"] == 1 and slow.empty()
        assert store.last_id() == 1
        caught: queue.Queue[int] = queue.Queue()
        waiter = threading.Thread(target=lambda: caught.put(slow.take_missed()))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive()  # it waits for the lost rows' commit ...
        commits.open_up()
        waiter.join(10)
        assert caught.get_nowait() == 3
        # ... so the catch-up from SQLite after the last id it sent finds all of them
        assert [r["id"] for r in store.query(since=1, oldest_first=True)] == [2, 3, 4]
    finally:
        commits.open_up()
        store.close()


def test_a_row_sqlite_refuses_is_never_shown(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite3"
    trace = Trace()
    trace.hold = re.compile("^BEGIN IMMEDIATE")
    store = Store(db, sql_trace=trace)
    try:
        conn = sqlite3.connect(db)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON detections WHEN NEW.name = 'evil'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.close()
        listener = store.feed.listen()
        store.add(result("first"), node="door")
        assert trace.held.wait(10)
        for name in ("a", "evil", "b"):  # one batch: its inserts fail, then one by one
            store.add(result(name), node="door")
        trace.hold = None
        trace.release.set()
        assert store.flush(10)
        shown = [listener.get(timeout=5) for _ in range(3)]
        assert listener.empty()
        stored = store.query(oldest_first=True)
        assert [(r["id"], r["name"]) for r in shown] == [(r["id"], r["name"]) for r in stored]
        assert [r["name"] for r in stored] == ["first", "a", "b"]
    finally:
        trace.release.set()
        store.close()
