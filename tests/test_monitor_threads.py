"""The monitor store's threads: add() hands rows to a writer and never waits for SQLite,
readers use their own connections, ids/window/feed agree, and no request scans.

No sleeps: the tests wait on flush(), on events set from SQLite's trace callback, or on
thread joins.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from facewire.monitor.app import MAX_LIMIT, create_app
from facewire.monitor.state import State
from facewire.monitor.store import Feed, Store

WRITER = "monitor-store-writer"


def result(name: str = "alice", seq: int = 1, node: str = "door") -> dict[str, Any]:
    return {
        "node": node,
        "seq": seq,
        "name": name,
        "score": 0.8,
        "threshold": 0.4,
        "model": "sface-1234",
        "timings": {"detect_ms": 4.0, "embed_ms": 6.0},
    }


class Trace:
    """SQLite's trace callback for a store: records (thread name, SQL) and can hold the
    writer thread when it is about to run a statement matching ``hold``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statements: list[tuple[str, str]] = []
        self.hold: re.Pattern[str] | None = None
        self.held = threading.Event()  # the writer is waiting at `hold`
        self.release = threading.Event()
        self.begins = 0
        self.retried = threading.Event()  # the writer began a second transaction

    def __call__(self, sql: str) -> None:
        thread = threading.current_thread().name
        with self.lock:
            self.statements.append((thread, sql))
        if thread != WRITER:
            return
        if sql.startswith("BEGIN IMMEDIATE"):
            self.begins += 1
            if self.begins >= 2:
                self.retried.set()
        if self.hold is not None and self.hold.search(sql):
            self.held.set()
            self.release.wait(30)

    def readers(self) -> list[str]:
        with self.lock:
            return [sql for thread, sql in self.statements if thread != WRITER]

    def clear(self) -> None:
        with self.lock:
            self.statements.clear()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "monitor.sqlite3"


@pytest.fixture
def blocker(db: Path) -> Iterator[Callable[[], sqlite3.Connection]]:
    """Another connection that takes the database's write lock (like a second process)."""
    conns: list[sqlite3.Connection] = []

    def take() -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conns.append(conn)
        return conn

    yield take
    for conn in conns:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_add_does_not_wait_for_a_locked_database_and_loses_nothing(
    db: Path, blocker: Callable[[], sqlite3.Connection]
) -> None:
    store = Store(db, window=50, busy_timeout=30.0)  # the writer waits in SQLite's busy loop
    try:
        lock = blocker()
        # On the old code each add() ran the INSERT itself and waited for the lock.
        assert all(store.add(result(seq=i), node="door") for i in range(200))
        assert store.flush(0.2) is False  # the writer is stuck behind the lock ...
        assert store.stats()["queued"] == 200 and store.stats()["dropped"] == 0
        assert store.window() == [] and store.last_id() == 0  # ... so nothing is shown yet
        # Reads go on meanwhile, on their own connections.
        assert store.query() == [] and store.count() == 0
        lock.execute("COMMIT")
        assert store.flush(10)
        rows = store.query(limit=500, oldest_first=True)
        assert [r["seq"] for r in rows] == list(range(200))
        assert [r["id"] for r in rows] == list(range(1, 201))
        assert store.count() == 200 and store.last_id() == 200
        assert [r["id"] for r in store.window()] == list(range(151, 201))
        assert store.stats()["written"] == 200
    finally:
        store.close()


def test_a_failing_write_is_retried_and_reported_meanwhile(
    db: Path, blocker: Callable[[], sqlite3.Connection]
) -> None:
    trace = Trace()
    store = Store(db, busy_timeout=0.01, sql_trace=trace)  # "database is locked" at once
    app = create_app(store, State())
    try:
        lock = blocker()
        store.add(result(seq=1), node="door")
        assert trace.retried.wait(10)  # the first transaction failed, the writer retries
        health = app.test_client().get("/healthz")
        assert health.status_code == 503
        body = health.get_json()
        assert body["db"]["ok"] is False and "locked" in body["db"]["error"]
        assert body["writer"]["queued"] == 1 and body["detections"] == 0
        lock.execute("ROLLBACK")
        assert store.flush(10)
        assert [r["seq"] for r in store.query()] == [1]
        assert store.stats()["writer_error"] is None
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        store.close()


def test_a_full_queue_drops_counts_and_logs_once(
    db: Path, blocker: Callable[[], sqlite3.Connection], caplog: pytest.LogCaptureFixture
) -> None:
    trace = Trace()
    trace.hold = re.compile("^BEGIN IMMEDIATE")
    store = Store(db, queue_size=5, sql_trace=trace)
    try:
        store.add(result(seq=0), node="door")
        assert trace.held.wait(10)  # the writer took row 0 and waits before its BEGIN
        with caplog.at_level(logging.ERROR, logger="facewire.monitor.store"):
            accepted = [store.add(result(seq=i), node="door") for i in range(1, 9)]
        assert accepted == [True] * 5 + [False] * 3
        assert store.stats()["dropped"] == 3
        drops = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(drops) == 1  # rate-limited: one line, not one per row
        assert "dropped a result from door" in drops[0].getMessage()
        trace.release.set()
        assert store.flush(10)
        assert [r["seq"] for r in store.query(oldest_first=True)] == [0, 1, 2, 3, 4, 5]
    finally:
        trace.release.set()
        store.close()


def test_a_row_sqlite_refuses_costs_only_that_row(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trace = Trace()
    trace.hold = re.compile("^BEGIN IMMEDIATE")
    store = Store(db, sql_trace=trace)
    try:
        conn = sqlite3.connect(db)  # e.g. a constraint added by hand
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON detections WHEN NEW.name = 'evil'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.close()
        store.add(result("first"), node="door")
        assert trace.held.wait(10)
        for name in ("a", "evil", "b"):  # one batch behind the held one
            store.add(result(name), node="door")
        trace.hold = None
        with caplog.at_level(logging.ERROR, logger="facewire.monitor.store"):
            trace.release.set()
            assert store.flush(10)
        assert [r["name"] for r in store.query(oldest_first=True)] == ["first", "a", "b"]
        assert [r["name"] for r in store.window()] == ["first", "a", "b"]
        assert store.stats()["failed"] == 1 and store.stats()["writer_alive"]
        assert any("refused a detection" in r.getMessage() for r in caplog.records)
    finally:
        trace.release.set()
        store.close()


def test_reads_proceed_while_the_writer_has_a_transaction_open(db: Path) -> None:
    trace = Trace()
    store = Store(db, sql_trace=trace)
    app = create_app(store, State())
    http = app.test_client()
    try:
        store.add(result(seq=1), node="door")
        assert store.flush(5)
        trace.hold = re.compile("^COMMIT")
        store.add(result(seq=2), node="door")
        assert trace.held.wait(10)  # row 2 is inserted, its transaction still open
        # On the old code the web threads shared the writer's connection and lock.
        assert [r["seq"] for r in store.query()] == [1]
        assert store.count() == 1
        assert http.get("/healthz").get_json()["detections"] == 1
        assert [r["seq"] for r in http.get("/log").get_json()["detections"]] == [1]
        assert [r["seq"] for r in store.window()] == [1]  # only committed rows are shown
        trace.release.set()
        assert store.flush(10)
        assert [r["seq"] for r in store.query()] == [2, 1]
        readers = {t for t, sql in trace.statements if "FROM detections" in sql}
        assert WRITER not in readers  # reads never ran on the writer's connection
    finally:
        trace.release.set()
        store.close()


def test_ids_window_and_feed_agree_under_concurrent_adds_and_reads(db: Path) -> None:
    store = Store(db, window=100, batch=37)
    producers, per_producer = 4, 250
    total = producers * per_producer
    listener = store.feed.listen()
    fed: list[dict[str, Any]] = []
    problems: list[str] = []
    done = threading.Event()

    def produce(k: int) -> None:
        for i in range(per_producer):
            store.add(result(seq=i, node=f"n{k}"), node=f"n{k}")

    def consume() -> None:  # every row arrives already committed, in id order
        while len(fed) < total:
            row = listener.get(timeout=30)
            assert row is not None
            if fed and row["id"] <= fed[-1]["id"]:
                problems.append(f"feed out of order: {fed[-1]['id']} then {row['id']}")
            in_db = store.query(since=row["id"] - 1, limit=1, oldest_first=True)
            if [r["id"] for r in in_db] != [row["id"]]:
                problems.append(f"feed row {row['id']} is not in SQLite yet")
            fed.append(row)

    def read() -> None:
        while not done.is_set():
            window = [r["id"] for r in store.window()]
            if window != sorted(set(window)):
                problems.append(f"window ids not increasing: {window}")
            newest = store.query(limit=20)
            ids = [r["id"] for r in newest]
            if ids != sorted(set(ids), reverse=True):
                problems.append(f"query ids not decreasing: {ids}")
            if window and window[-1] > store.last_id():
                problems.append("window ahead of last_id")
            if ids and window and window[-1] > ids[0]:
                problems.append("window shows a row SQLite doesn't have")

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    consumer = threading.Thread(target=consume)
    try:
        for t in [consumer, *readers, *threads]:
            t.start()
        for t in threads:
            t.join(30)
        assert store.flush(30)
        consumer.join(30)
        done.set()
        for t in readers:
            t.join(30)
        assert problems == []
        rows = store.query(limit=total, oldest_first=True)
        assert [r["id"] for r in rows] == list(range(1, total + 1))
        assert [r["id"] for r in fed] == [r["id"] for r in rows]
        for k in range(producers):  # each producer's rows kept its order
            assert [r["seq"] for r in rows if r["node"] == f"n{k}"] == list(range(per_producer))
        assert store.window() == fed[-100:]
        assert store.count() == total and store.last_id() == total
    finally:
        done.set()
        store.close()


def _plans(db: Path, statements: list[str]) -> list[str]:
    """EXPLAIN QUERY PLAN of traced statements (their ? bound to NULL/0 is enough)."""
    conn = sqlite3.connect(db)
    try:
        out = []
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            # The trace shows the SQL with its parameters expanded.
            for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
                out.append(f"{row[3]}  <-  {sql}")
        return out
    finally:
        conn.close()


def test_no_request_scans_the_table(db: Path) -> None:
    trace = Trace()
    store = Store(db, window=50, sql_trace=trace)
    try:
        names = ["alice", "bob", "carol", "unknown"]
        for i in range(3000):
            store.add(result(names[i % 4], seq=i, node=f"n{i % 3}"), node=f"n{i % 3}")
        assert store.flush(30)
        http = create_app(store, State()).test_client()

        trace.clear()
        health = http.get("/healthz").get_json()
        assert health["detections"] == 3000 and health["last_id"] == 3000
        assert health["window"] == 50
        healthz_sql = trace.readers()
        assert healthz_sql, "the probe reads the database"
        assert not any("COUNT(" in sql.upper() for sql in healthz_sql), healthz_sql
        assert not any(re.search(r"\bFROM detections\b", sql) for sql in healthz_sql)

        trace.clear()
        for path in (
            "/log",
            "/log?limit=5000",
            "/log?node=n1",
            "/log?name=bob&before=2000",
            "/log?node=n2&name=zed",  # no such row: must not walk n2's rows
            "/log?node=n0&name=alice&since=100&raw=1",
            "/nodes",
            "/errors",
            "/threshold_stats",
        ):
            assert http.get(path).status_code == 200, path
        stream = http.get("/log/stream?since=10&node=n1&name=bob", buffered=False)
        next(iter(stream.response))
        next(iter(stream.response))  # the backlog query has run
        stream.close()
        sql = trace.readers()
        assert sql and not any("COUNT(" in s.upper() for s in sql), sql
        plans = _plans(db, [s for s in sql if not re.search(r"\bFROM detections_count\b", s)])
        assert len(plans) == 7  # six /log queries and the stream's backlog
        for plan in plans:
            # The rowid order itself (ORDER BY id … LIMIT, no other filter) or an index
            # that covers every filtered column; never a sort of everything that matched.
            assert "TEMP B-TREE" not in plan, plan
            assert re.search(r"LIMIT \d+", plan), plan
            filtered = re.findall(r"\b(node|name) = ", plan)
            if filtered:
                constraint = plan.split("  <-  ")[0]
                assert constraint.startswith("SEARCH detections USING"), plan
                assert all(f"{col}=?" in constraint for col in filtered), plan
            else:
                assert plan.startswith(("SCAN detections ", "SEARCH detections")), plan
    finally:
        store.close()


def test_the_count_is_exact_without_a_scan_even_after_deletes_and_for_old_files(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old.sqlite3"  # a log written before the counter existed
    conn = sqlite3.connect(old)
    conn.executescript(
        "CREATE TABLE detections (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL"
        " NOT NULL, node TEXT NOT NULL, seq INTEGER, name TEXT NOT NULL, score REAL,"
        " threshold REAL, latency_ms REAL, model TEXT, raw TEXT NOT NULL);"
    )
    conn.executemany(
        "INSERT INTO detections (received_at, node, seq, name, latency_ms, raw)"
        " VALUES (?, 'door', ?, 'alice', 12.5, '{}')",
        [(1000.0 + i, i) for i in range(7)],
    )
    conn.commit()
    conn.close()

    store = Store(old)
    try:
        assert store.count() == 7 and store.last_id() == 7
        assert store.window()[-1]["stages_ms"] == 12.5
        for i in range(3):
            store.add(result(seq=100 + i), node="door")
        assert store.flush(5)
        assert store.count() == 10 and store.last_id() == 10
        other = sqlite3.connect(old)  # e.g. a retention job pruning by hand
        other.execute("DELETE FROM detections WHERE id <= 4")
        other.commit()
        other.close()
        assert store.count() == 6
        assert store.count() == len(store.query(limit=100))
    finally:
        store.close()


def test_memory_database_shares_one_connection(tmp_path: Path) -> None:
    store = Store(":memory:", window=3)
    try:
        for i in range(5):
            store.add(result(seq=i), node="door")
        assert store.flush(5)
        assert store.count() == 5 and store.last_id() == 5
        assert [r["seq"] for r in store.query(limit=2)] == [4, 3]
        assert [r["seq"] for r in store.window()] == [2, 3, 4]
    finally:
        store.close()
    assert not list(tmp_path.iterdir())  # nothing written to disk


def test_close_writes_everything_handed_in_then_refuses(db: Path) -> None:
    store = Store(db)
    for i in range(300):
        store.add(result(seq=i), node="door")
    store.close()  # no flush() first
    with pytest.raises(RuntimeError, match="closed"):
        store.add(result(seq=999), node="door")
    again = Store(db)
    try:
        assert again.count() == 300
        assert again.last_id() == 300
    finally:
        again.close()


def _events(resp: Any, n: int) -> list[tuple[str, dict[str, Any]]]:
    """The first ``n`` SSE events (not comments) of a streamed test-client response."""
    out: list[tuple[str, dict[str, Any]]] = []
    buf = ""
    chunks = iter(resp.response)
    while len(out) < n:
        buf += next(chunks).decode()
        while "\n\n" in buf and len(out) < n:
            block, buf = buf.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
            )
            if "data" in fields:
                out.append((fields.get("event", "message"), json.loads(fields["data"])))
    return out


def test_stream_backlog_is_bounded_newest_first_and_says_what_it_skipped(db: Path) -> None:
    store = Store(db)
    try:
        for i in range(MAX_LIMIT + 5):
            store.add(result(seq=i), node="door")
        assert store.flush(30)
        http = create_app(store, State(), keepalive_s=60).test_client()
        resp = http.get("/log/stream?since=0", buffered=False)
        events = _events(resp, MAX_LIMIT + 1)
        resp.close()
        assert events[0] == ("gap", {"since": 0, "first": 6})
        ids = [data["id"] for kind, data in events[1:]]
        assert ids == list(range(6, MAX_LIMIT + 6))  # the newest MAX_LIMIT, oldest first

        # A resume from close by replays only what was missed, with no gap.
        resp = http.get("/log/stream", headers={"Last-Event-ID": "1000"}, buffered=False)
        assert [d["id"] for _, d in _events(resp, 5)] == [1001, 1002, 1003, 1004, 1005]
        resp.close()
        # Odd ids are a 400 (or ignored, for the header), not a 500.
        assert http.get("/log?since=99999999999999999999").status_code == 400
        resp = http.get("/log/stream", headers={"Last-Event-ID": "²"}, buffered=False)
        assert resp.status_code == 200
        resp.close()
    finally:
        store.close()


def test_a_stream_too_slow_for_the_feed_catches_up_from_sqlite(db: Path) -> None:
    store = Store(db)
    store.feed = Feed(maxsize=2)  # a listener queue with room for two rows
    try:
        store.add(result(seq=1), node="door")
        assert store.flush(5)
        http = create_app(store, State(), keepalive_s=60).test_client()
        resp = http.get("/log/stream?since=0", buffered=False)
        assert [d["id"] for _, d in _events(resp, 1)] == [1]  # the backlog
        for i in range(2, 12):  # while the client is not reading
            store.add(result(seq=i), node="door")
        assert store.flush(5)
        # The feed kept 2 of the 10; the stream notices and replays from SQLite.
        assert [d["id"] for _, d in _events(resp, 10)] == list(range(2, 12))
        store.add(result(seq=12), node="door")
        assert store.flush(5)
        assert [d["id"] for _, d in _events(resp, 1)] == [12]  # nothing twice
        resp.close()
    finally:
        store.close()


def test_streams_are_capped(db: Path) -> None:
    store = Store(db)
    try:
        http = create_app(store, State(), max_streams=1).test_client()
        first = http.get("/log/stream", buffered=False)
        assert first.status_code == 200 and store.feed.listeners == 1
        second = http.get("/log/stream")
        assert second.status_code == 503 and second.headers["Retry-After"]
        first.close()
        assert store.feed.listeners == 0
        again = http.get("/log/stream", buffered=False)
        assert again.status_code == 200
        again.close()
    finally:
        store.close()


def test_nodes_show_stages_under_both_names(db: Path) -> None:
    store = Store(db)
    try:
        store.add(result(seq=1), node="porch")
        assert store.flush(5)
        body = create_app(store, State()).test_client().get("/nodes").get_json()
        porch = body["nodes"][0]
        assert porch["node"] == "porch" and porch["last_seen"] is not None
        assert porch["result_stages_ms"] == porch["result_latency"]
        assert [ms for _, ms in porch["result_stages_ms"]] == [10.0]
        row = store.query(limit=1)[0]
        assert row["stages_ms"] == row["latency_ms"] == 10.0
    finally:
        store.close()
