"""The monitor against a real mosquitto: bus → subscriber → store/state → HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import BaseWSGIServer, make_server

from facewire.bus import topics
from facewire.bus.client import BusClient, Message
from facewire.config.schema import BrokerConfig
from facewire.monitor.app import create_app
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber
from tests.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent


# --- helpers (also used by the browser test) ---------------------------------------------


def wait_for(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def result_payload(node: str, name: str, score: float, seq: int, threshold: float = 0.4) -> dict:
    return {
        "node": node,
        "seq": seq,
        "frame": seq,
        "face": 0,
        "name": name,
        "score": score,
        "threshold": threshold,
        "model": "sface-0123abcd",
        "neighbours": [{"name": name, "score": score}, {"name": "other", "score": score - 0.2}],
        "bbox": [10, 20, 64, 64],
        "captured_at": time.time() - 0.02,
        "timings": {
            "detect_ms": 5.0,
            "mesh_ms": 3.0,
            "align_ms": 0.5,
            "embed_ms": 10.0,
            "encode_ms": 0.1,
            "queue_ms": 0.2,
            "search_ms": 0.2,
            "total_classifier_ms": 0.5,
        },
        "classified_at": time.time(),
    }


def status_payload(node: str, p50: float = 12.0, p99: float = 30.0, fps: float = 5.0) -> dict:
    return {
        "node": node,
        "state": "online",
        "model": "sface-0123abcd",
        "fps": fps,
        "latency_ms": {"p50": p50, "p99": p99, "n": 120},
        "sent": 120,
        "dropped_dedup": 7,
        "buffered": 0,
        "ts": time.time(),
    }


def thresholds_payload() -> dict:
    grid = [{"threshold": t / 100, "named": 100 - t, "unknown": t} for t in range(20, 80, 5)]
    curve = [
        {"threshold": t / 100, "far": max(0.0, 1 - t / 50), "frr": min(1.0, t / 100)}
        for t in range(0, 100, 10)
    ]
    return {
        "threshold": 0.363,
        "queries": 250,
        "grid": grid,
        "histogram": {"edges": [0.0, 0.25, 0.5, 0.75, 1.0], "counts": [10, 40, 150, 50]},
        "calibration": {
            "eer": 0.031,
            "eer_threshold": 0.35,
            "recommended_threshold": 0.41,
            "target_far": 0.001,
            "curve": curve,
        },
        "ts": time.time(),
    }


class Publisher:
    """A plain BusClient that publishes JSON (QoS 1) and waits for the broker's ack."""

    def __init__(self, url: str, client_id: str = "test-publisher") -> None:
        self.client = BusClient(BrokerConfig(url=url), client_id)
        self.client.connect(timeout=5)

    def send(self, topic: str, payload: Any, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=1, retain=retain)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.close()


@dataclass
class Monitor:
    store: Store
    state: State
    subscriber: Subscriber
    app: Flask
    http: FlaskClient
    pub: Publisher

    def json(self, path: str) -> Any:
        resp = self.http.get(path)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.get_json()

    def log_names(self, path: str = "/log") -> list[str]:
        return [r["name"] for r in self.json(path)["detections"]]


def start_monitor(url: str, db: Path, window: int = 100, keepalive_s: float = 15.0) -> Monitor:
    store = Store(db, window=window)
    state = State()
    transport = BusClient(BrokerConfig(url=url), f"monitor-test-{db.stem}")
    sub = Subscriber(transport, store, state)
    sub.start(timeout=5)
    app = create_app(store, state, keepalive_s=keepalive_s)
    return Monitor(store, state, sub, app, app.test_client(), Publisher(url, f"pub-{db.stem}"))


def stop_monitor(m: Monitor) -> None:
    m.pub.close()
    m.subscriber.close()
    m.store.close()


@pytest.fixture
def monitor(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Monitor]:
    m = start_monitor(mosquitto.url, tmp_path / "monitor.sqlite3")
    yield m
    stop_monitor(m)


class Server:
    """The app on a real HTTP port (werkzeug, threaded), for streams and browsers."""

    def __init__(self, app: Flask) -> None:
        self.httpd: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- tests ---------------------------------------------------------------------------


def test_results_show_up_in_the_log_newest_first_with_filters(monitor: Monitor) -> None:
    sent = [
        ("door", "alice", 0.81),
        ("lobby", "bob", 0.55),
        ("door", "unknown", 0.21),
        ("door", "alice", 0.47),
    ]
    for seq, (node, name, score) in enumerate(sent):
        monitor.pub.send(topics.result(node), result_payload(node, name, score, seq))
    wait_for(lambda: monitor.store.count() == 4, what="4 logged results")

    log = monitor.json("/log")
    assert log["count"] == 4
    rows = log["detections"]
    assert [(r["node"], r["name"], r["seq"]) for r in rows] == [
        ("door", "alice", 3),
        ("door", "unknown", 2),
        ("lobby", "bob", 1),
        ("door", "alice", 0),
    ]
    assert [r["band"] for r in rows] == ["near", "unknown", "strong", "strong"]
    assert rows[0]["stages_ms"] == pytest.approx(19.0)  # stages summed, total_* left out
    assert rows[0]["latency_ms"] == rows[0]["stages_ms"]  # its old name, kept
    assert rows[0]["threshold"] == 0.4 and rows[0]["model"] == "sface-0123abcd"
    assert rows[0]["received_at"] >= rows[-1]["received_at"]

    assert monitor.log_names("/log?node=lobby") == ["bob"]
    assert monitor.log_names("/log?name=alice") == ["alice", "alice"]
    assert [r["seq"] for r in monitor.json("/log?node=door&name=alice")["detections"]] == [3, 0]
    assert [r["seq"] for r in monitor.json("/log?limit=2")["detections"]] == [3, 2]
    since = rows[2]["id"]
    assert [r["seq"] for r in monitor.json(f"/log?since={since}")["detections"]] == [3, 2]
    raw = monitor.json("/log?limit=1&raw=1")["detections"][0]["result"]
    assert raw["neighbours"][0] == {"name": "alice", "score": 0.47}

    # limits are clamped, nonsense is a 400 that says what is wrong
    assert monitor.json("/log?limit=5000")["limit"] == 1000
    bad = monitor.http.get("/log?limit=abc")
    assert bad.status_code == 400 and "limit" in bad.get_json()["error"]
    assert monitor.http.get("/log?since=-1").status_code == 400


def test_node_status_online_then_offline_by_will_payload(monitor: Monitor) -> None:
    monitor.pub.send(topics.status("door"), status_payload("door", 11.0, 25.0), retain=True)
    monitor.pub.send(topics.status("door"), status_payload("door", 13.0, 40.0), retain=True)
    monitor.pub.send(topics.result("door"), result_payload("door", "alice", 0.9, 1))

    def door() -> dict | None:
        nodes = {n["node"]: n for n in monitor.json("/nodes")["nodes"]}
        n = nodes.get("door")
        # result_latency: the row is written (the store's writer runs on its own thread)
        ok = n and n["results"] == 1 and len(n["history"]) == 2 and n["result_latency"]
        return n if ok else None

    node = wait_for(door, what="door online with 2 statuses and 1 result")
    assert node["state"] == "online" and not node["stale"]
    assert node["model"] == "sface-0123abcd" and node["fps"] == 5.0
    assert node["latency_ms"] == {"p50": 13.0, "p99": 40.0, "n": 120}
    assert [h[1:] for h in node["history"]] == [[11.0, 25.0], [13.0, 40.0]]
    assert node["result_latency"][0][1] == pytest.approx(19.0)
    assert node["last_seen"] is not None and node["age_s"] < 5

    # the edge's last will, as the broker publishes it when the node dies
    monitor.pub.send(topics.status("door"), {"node": "door", "state": "offline"}, retain=True)
    wait_for(lambda: monitor.json("/nodes")["nodes"][0]["state"] == "offline", what="door offline")
    assert len(monitor.json("/nodes")["nodes"][0]["history"]) == 2  # history kept


def test_a_killed_edge_goes_offline_through_its_real_last_will(
    monitor: Monitor, mosquitto: Mosquitto
) -> None:
    script = (
        "import json, sys, time\n"
        "from facewire.bus.client import BusClient\n"
        "from facewire.config.schema import BrokerConfig\n"
        "will = json.dumps({'node': 'cam9', 'state': 'offline'}).encode()\n"
        "c = BusClient(BrokerConfig(url=sys.argv[1]), 'cam9',"
        " will=('faces/cam9/status', will, 1, True))\n"
        "c.connect(timeout=5)\n"
        "online = {'node': 'cam9', 'state': 'online', 'model': 'm', 'fps': 2.0,"
        " 'latency_ms': {'p50': 1, 'p99': 2, 'n': 3}}\n"
        "c.publish('faces/cam9/status', json.dumps(online), qos=1, retain=True)"
        ".wait_for_publish(5)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, mosquitto.url],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"

        def cam9_state() -> str | None:
            nodes = {n["node"]: n for n in monitor.json("/nodes")["nodes"]}
            return nodes["cam9"]["state"] if "cam9" in nodes else None

        wait_for(lambda: cam9_state() == "online", what="cam9 online")
        os.kill(proc.pid, signal.SIGKILL)  # no clean disconnect: the broker sends the will
        wait_for(lambda: cam9_state() == "offline", what="cam9 offline via its last will")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_classifier_status_is_not_a_node(monitor: Monitor) -> None:
    clf = {
        "state": "online",
        "model": "sface-0123abcd",
        "gallery": {
            "identities": 52,
            "vectors": 480,
            "version": "abc",
            "index": "flat",
            "dim": 128,
        },
        "queues": {"door": 2, "lobby": 0},
        "dropped": {"door": 5},
        "rejected": 1,
        "processed": 900,
        "messages_per_s": 42.5,
        "timings": {"search_p50_ms": 0.2},
        "ts": time.time(),
    }
    assert monitor.json("/nodes")["classifier"] is None
    monitor.pub.send(topics.CLASSIFIER_STATUS, clf, retain=True)
    got = wait_for(lambda: monitor.json("/nodes")["classifier"], what="classifier status")
    assert got["queues"] == {"door": 2, "lobby": 0} and got["dropped"] == {"door": 5}
    assert got["messages_per_s"] == 42.5 and got["gallery"]["identities"] == 52
    assert got["received_at"] is not None
    assert monitor.json("/nodes")["nodes"] == []  # "classifier" is no edge node
    assert monitor.state.malformed_total == 0


def test_threshold_stats(monitor: Monitor) -> None:
    empty = monitor.json("/threshold_stats")
    assert empty["available"] is False and "faces/stats/thresholds" in empty["reason"]

    stats = thresholds_payload()
    monitor.pub.send(topics.THRESHOLDS, stats, retain=True)
    got = wait_for(
        lambda: (s := monitor.json("/threshold_stats"))["available"] and s, what="threshold stats"
    )
    assert got["threshold"] == 0.363 and got["queries"] == 250
    assert got["grid"] == stats["grid"] and got["histogram"] == stats["histogram"]
    assert got["calibration"]["eer"] == 0.031
    assert got["received_at"] > 0

    # A later message without calibration replaces the earlier one.
    monitor.pub.send(topics.THRESHOLDS, {**stats, "queries": 251, "calibration": None})
    wait_for(lambda: monitor.json("/threshold_stats")["queries"] == 251, what="update")
    assert monitor.json("/threshold_stats")["calibration"] is None


def test_errors_endpoint(monitor: Monitor) -> None:
    for i, reason in enumerate(["wrong_model", "bad_dim"]):
        err = {"node": "door", "reason": reason, "detail": "x", "seq": i, "count": i + 1}
        monitor.pub.send(topics.error("door"), err)
    nan = {"node": "lobby", "reason": "non_finite", "detail": "NaN", "seq": 9, "count": 1}
    monitor.pub.send(topics.error("lobby"), nan)
    wait_for(lambda: monitor.json("/errors")["total"] == 3, what="3 errors")
    errors = monitor.json("/errors")["errors"]
    assert [e["reason"] for e in errors] == ["non_finite", "bad_dim", "wrong_model"]  # newest first
    assert [e["reason"] for e in monitor.json("/errors?node=door&limit=1")["errors"]] == ["bad_dim"]
    nodes = {n["node"]: n for n in monitor.json("/nodes")["nodes"]}
    assert nodes["door"]["errors"] == 2 and nodes["door"]["state"] == "unknown"


def test_malformed_payloads_are_counted_and_do_not_stop_good_ones(monitor: Monitor) -> None:
    bad = [
        (topics.result("door"), b"\x00\xffnot json"),
        (topics.result("door"), b"{truncated"),
        (topics.result("door"), b"[1, 2, 3]"),
        (topics.result("door"), json.dumps({"node": "door", "score": 0.5}).encode()),
        (topics.result("door"), json.dumps({"name": "x", "score": "high"}).encode()),
        (topics.status("door"), json.dumps({"node": "door", "state": 3}).encode()),
        (topics.THRESHOLDS, json.dumps({"grid": []}).encode()),
        (topics.CLASSIFIER_STATUS, json.dumps({"queues": [1]}).encode()),
        (topics.error("door"), b"null"),
    ]
    for topic, payload in bad:
        monitor.pub.send(topic, payload)
    monitor.pub.send(topics.result("door"), result_payload("door", "after_the_junk", 0.9, 7))

    wait_for(lambda: monitor.log_names() == ["after_the_junk"], what="the good result")
    wait_for(lambda: monitor.state.malformed_total == len(bad), what="all bad ones counted")
    health = monitor.json("/healthz")
    assert health["malformed"] == len(bad) and health["detections"] == 1
    assert health["broker"]["connected"] is True
    recent = monitor.json("/errors")["malformed"]
    assert recent["total"] == len(bad)
    assert recent["recent"][-1]["reason"].startswith("[bad_json] result: not UTF-8")
    assert "expected a JSON object" in recent["recent"][-3]["reason"]
    # NaN is not valid JSON for browsers: it is stored as null, not refused.
    nan = result_payload("door", "nan_score_threshold", 0.9, 8)
    text = json.dumps(nan).replace('"threshold": 0.4', '"threshold": NaN')
    monitor.pub.send(topics.result("door"), text.encode())
    wait_for(lambda: monitor.log_names()[0] == "nan_score_threshold", what="NaN result")
    assert monitor.json("/log?limit=1")["detections"][0]["threshold"] is None


def test_retained_messages_are_picked_up_at_start(mosquitto: Mosquitto, tmp_path: Path) -> None:
    pub = Publisher(mosquitto.url, "early-publisher")
    pub.send(topics.status("garage"), status_payload("garage"), retain=True)
    pub.send(topics.THRESHOLDS, thresholds_payload(), retain=True)
    pub.close()
    m = start_monitor(mosquitto.url, tmp_path / "late.sqlite3")
    try:
        wait_for(lambda: m.json("/threshold_stats")["available"], what="retained thresholds")
        nodes = wait_for(lambda: m.json("/nodes")["nodes"], what="retained status")
        assert nodes[0]["node"] == "garage" and nodes[0]["state"] == "online"
        # An empty retained payload clears the status: the node is forgotten.
        m.pub.send(topics.status("garage"), b"", retain=True)
        wait_for(lambda: m.json("/nodes")["nodes"] == [], what="garage forgotten")
        assert m.state.malformed_total == 0
    finally:
        stop_monitor(m)


def test_latency_points_are_the_recent_ones(monitor: Monitor) -> None:
    """The log outlives a restart, but the latency plot shows the last 15 minutes:
    results from an earlier run must not stretch its "seconds ago" axis over hours."""
    now = time.time()
    for seq, age_s in ((1, 7200.0), (2, 3000.0), (3, 5.0)):
        monitor.store.add(result_payload("porch", "alice", 0.9, seq), received_at=now - age_s)
    assert monitor.store.flush(5)
    node = {n["node"]: n for n in monitor.json("/nodes")["nodes"]}["porch"]
    assert [round(now - t) for t, _ in node["result_latency"]] == [5]
    wider = monitor.json("/nodes?window_s=3600")
    assert wider["window_s"] == 3600
    porch = {n["node"]: n for n in wider["nodes"]}["porch"]
    assert [round(now - t) for t, _ in porch["result_latency"]] == [3000, 5]
    bad = monitor.http.get("/nodes?window_s=soon")
    assert bad.status_code == 400 and "window_s" in bad.get_json()["error"]


def test_a_restart_keeps_the_log(mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "keep.sqlite3"
    m = start_monitor(mosquitto.url, db, window=3)
    try:
        for i in range(5):
            m.pub.send(topics.result("door"), result_payload("door", f"p{i}", 0.9, i))
        wait_for(lambda: m.store.count() == 5, what="5 results")
    finally:
        stop_monitor(m)

    m = start_monitor(mosquitto.url, db, window=3)
    try:
        assert m.log_names() == ["p4", "p3", "p2", "p1", "p0"]
        assert [r["name"] for r in m.store.window()] == ["p2", "p3", "p4"]
        # the node is listed from the reloaded log even before it says anything
        node = m.json("/nodes")["nodes"][0]
        assert node["node"] == "door" and node["state"] == "unknown"
        assert len(node["result_latency"]) == 3
        m.pub.send(topics.result("door"), result_payload("door", "p5", 0.9, 5))
        wait_for(lambda: m.log_names()[0] == "p5", what="new result after restart")
        assert m.json("/log?limit=1")["detections"][0]["id"] == 6
    finally:
        stop_monitor(m)


def _read_event(resp: http.client.HTTPResponse) -> dict[str, str]:
    """One SSE event (comments skipped) as {field: value}."""
    fields: dict[str, str] = {}
    while True:
        line = resp.readline().decode()
        assert line, "stream closed"
        line = line.rstrip("\n")
        if not line:
            if "data" in fields:
                return fields
            fields = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        fields[key] = value


def test_event_stream_pushes_new_rows_and_notices_disconnects(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    m = start_monitor(mosquitto.url, tmp_path / "sse.sqlite3", keepalive_s=0.2)
    server = Server(m.app)
    try:
        m.pub.send(topics.result("door"), result_payload("door", "before", 0.9, 1))
        wait_for(lambda: m.store.count() == 1, what="first result")

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/log/stream?since=0&node=door")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        first = _read_event(resp)  # replayed: newer than since=0
        assert first["event"] == "detection" and json.loads(first["data"])["name"] == "before"
        assert first["id"] == "1"

        m.pub.send(topics.result("lobby"), result_payload("lobby", "filtered_out", 0.9, 2))
        m.pub.send(topics.result("door"), result_payload("door", "live_one", 0.9, 3))
        live = json.loads(_read_event(resp)["data"])
        assert (live["name"], live["node"], live["id"]) == ("live_one", "door", 3)
        assert m.store.feed.listeners == 1

        # keep-alive comments flow while idle
        assert resp.readline().startswith(b": keep-alive")

        # a reconnecting EventSource sends Last-Event-ID and gets what it missed
        conn2 = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn2.request("GET", "/log/stream", headers={"Last-Event-ID": "1"})
        resp2 = conn2.getresponse()
        missed = [json.loads(_read_event(resp2)["data"])["name"] for _ in (0, 1)]
        assert missed == ["filtered_out", "live_one"]

        for r, c in ((resp, conn), (resp2, conn2)):
            r.close()
            c.close()
        wait_for(lambda: m.store.feed.listeners == 0, timeout=5, what="streams closed")
    finally:
        m.store.feed.close()
        server.close()
        stop_monitor(m)


def test_pages_render(monitor: Monitor) -> None:
    for path, marker in [
        ("/", "Detections"),
        ("/log/html", 'id="rows"'),
        ("/nodes/html", 'id="node-rows"'),
        ("/threshold_stats/html", 'id="chart-cal"'),
    ]:
        resp = monitor.http.get(path)
        assert resp.status_code == 200, path
        html = resp.get_data(as_text=True)
        assert marker in html and 'href="/nodes/html"' in html, path  # the nav bar
    for asset in ("style.css", "common.js", "log.js", "nodes.js", "thresholds.js"):
        assert monitor.http.get(f"/static/{asset}").status_code == 200, asset


def test_cli_serves_and_stops_cleanly(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "cli.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-m", "facewire", "monitor", "--broker", mosquitto.url,
         "--port", str(port), "--db", str(db), "--connect-timeout", "5"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def get(path: str) -> Any:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return json.load(r)
            except OSError:
                return None

        health = wait_for(
            lambda: (h := get("/healthz")) and h["broker"]["connected"] and h,
            timeout=10,
            what="the CLI monitor to be up",
        )
        assert health["db"]["path"] == str(db)
        pub = Publisher(mosquitto.url, "cli-publisher")
        pub.send(topics.result("door"), result_payload("door", "via_cli", 0.9, 1))
        pub.close()
        wait_for(lambda: get("/log")["count"] == 1, what="result via the CLI monitor")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert db.exists()


def test_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facewire", "monitor", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0
    for flag in ("--config", "--broker", "--host", "--port", "--db"):
        assert flag in out.stdout


def test_handle_never_raises_on_odd_topics(tmp_path: Path) -> None:
    """Defensive paths that a broker can't easily produce (e.g. a wider subscription)."""
    store, state = Store(tmp_path / "x.sqlite3"), State()
    sub = Subscriber(None, store, state)
    try:
        sub.handle(Message("faces/door/embedding", b"{}", False, 1))
        sub.handle(Message("faces/stats/result", b"{}", False, 1))
        sub.handle(Message("other/topic", b"{}", False, 0))
        assert state.malformed_total == 3
        reasons = [m["reason"] for m in state.malformed_recent()]
        assert all(r.startswith("[bad_topic]") for r in reasons), reasons
        assert "unexpected topic" in reasons[-1]
    finally:
        store.close()
