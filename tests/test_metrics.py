"""``/metrics`` on the classifier and on the monitor (issue 13, item 3): a real broker, a
classifier on a small gallery, the monitor's subscriber and app, real embeddings from
real photos and bad messages; both endpoints scraped over HTTP and parsed as
Prometheus parses them. The Grafana dashboard's queries name only metrics a scrape has.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import BaseWSGIServer, make_server

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.messages import UNKNOWN, Result
from facewire.bus.transport import Message
from facewire.classifier.gallery import read_image
from facewire.classifier.metrics import (
    OTHER,
    Buckets,
    ClassifierCollector,
    CountedWindow,
    MetricsServer,
    top_nodes,
)
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.config.schema import BrokerConfig, ClassifierConfig, PipelineConfig
from facewire.models import FacePipeline
from facewire.models.files import list_photos
from facewire.monitor.app import create_app
from facewire.monitor.auth import Auth
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber
from tests.broker import Mosquitto
from tests.conftest import DATASET, ROOT
from tests.gallery_rig import KNOWN, NEWCOMER, classifier_cfg

TOKEN = "scrape-token-0123456789"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
EDGE_STAGES = {"capture": 3.0, "detect": 4.5, "align": 0.7, "embed": 12.0, "encode": 0.1}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) → value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str, token: str | None = None) -> str:
    req = urllib.request.Request(url, headers={"Accept": "text/plain"})
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def eventually(read: Callable[[], Samples], ok: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``ok`` (messages are still on their way), then the last scrape."""
    deadline = time.monotonic() + 20
    samples = read()
    while not ok(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = read()
    return samples


@pytest.fixture(scope="module")
def probes() -> tuple[dict[str, np.ndarray], str]:
    """One embedded probe photo per person, as an edge sends it, and the model id."""
    pipeline = FacePipeline(PipelineConfig())
    try:
        out = {}
        for person in [*KNOWN, NEWCOMER]:
            faces = pipeline.get(read_image(list_photos(DATASET / "probes" / person)[0]))
            out[person] = faces[0].embedding
        return out, pipeline.model_id
    finally:
        pipeline.close()


class Served:
    """A Flask app on a real HTTP port."""

    def __init__(self, app: object) -> None:
        self.httpd: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)  # type: ignore[arg-type]
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Deployment:
    service: ClassifierService
    metrics: MetricsServer
    edge: BusClient
    got: list[Message]
    store: Store
    monitor: Served

    @property
    def classifier_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics.port}/metrics"

    def classifier(self) -> Samples:
        return parse(scrape(self.classifier_url))

    def monitor_metrics(self) -> Samples:
        return parse(scrape(f"{self.monitor.url}/metrics", TOKEN))


@pytest.fixture
def deployment(mosquitto: Mosquitto, gallery_dir: Path, tmp_path: Path) -> Iterator[Deployment]:
    from facewire.classifier.keeper import GalleryKeeper

    broker = BrokerConfig(url=mosquitto.url)
    cfg = classifier_cfg(gallery_dir, broker=broker)
    cfg.metrics.port = 0  # any free port
    keeper = GalleryKeeper(cfg)
    service = ClassifierService(cfg, keeper.build().index, BusClient(broker, "cls"))
    metrics = MetricsServer.start(service, cfg.metrics)
    service.start(timeout=5)
    store, state = Store(tmp_path / "monitor.sqlite3"), State()
    subscriber = Subscriber(BusClient(broker, "monitor"), store, state)
    subscriber.start(timeout=5)
    monitor = Served(create_app(store, state, auth=Auth(token=TOKEN)))
    edge = BusClient(broker, "edge")
    got: list[Message] = []
    edge.subscribe("faces/#", got.append)
    edge.connect(timeout=5)
    yield Deployment(service, metrics, edge, got, store, monitor)
    edge.close()
    monitor.close()
    subscriber.close()
    store.close()
    metrics.stop()
    service.stop()
    keeper.close()


def embedding(seq: int, vector: np.ndarray, model: str, node: str = "door") -> bytes:
    msg = codec.EmbeddingMessage(
        node, seq, seq, 0, (0, 0, 9, 9), model, time.time(), EDGE_STAGES, (81.0, 1.0, 1.0), vector
    )
    return codec.encode(msg)


def test_both_endpoints_count_what_was_sent(deployment: Deployment, probes: tuple) -> None:
    d = deployment
    vectors, model = probes
    sent = [*KNOWN, NEWCOMER, KNOWN[0], NEWCOMER]  # 4 named, 2 strangers
    for seq, person in enumerate(sent):
        d.edge.publish(topics.embedding("door"), embedding(seq, vectors[person], model), qos=1)
    good = embedding(99, vectors[KNOWN[0]], model)
    bad = {
        "bad_magic": b"XX" + good[2:],
        "truncated": good[:10],
        "bad_dim": embedding(100, vectors[KNOWN[0]][:64].copy(), model),
        "wrong_model": embedding(101, vectors[KNOWN[0]], "other-model-00000000"),
    }
    for payload in bad.values():
        d.edge.publish(topics.embedding("door"), payload, qos=1)
    d.edge.publish("faces/stats/embedding", good, qos=1)  # a reserved word: no node
    messages = len(sent) + len(bad) + 1

    # what the classifier answered is the truth the counters must match
    def results() -> list[Result]:
        return [Result.decode(m.payload) for m in list(d.got) if m.topic == topics.result("door")]

    deadline = time.monotonic() + 30
    while len(results()) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    answered = results()
    assert len(answered) == len(sent)
    known = sum(r.name != UNKNOWN for r in answered)
    assert known == 4, [r.name for r in answered]

    c = eventually(
        d.classifier,
        lambda s: (
            value(s, "facewire_classifier_messages_total") == messages
            and value(s, "facewire_classifier_rejections_total", reason="bad_topic") == 1
        ),
    )
    assert value(c, "facewire_classifier_messages_total") == messages
    assert value(c, "facewire_classifier_results_total", outcome="known") == known
    assert value(c, "facewire_classifier_results_total", outcome="unknown") == len(sent) - known
    for reason in [*bad, "bad_topic"]:
        assert value(c, "facewire_classifier_rejections_total", reason=reason) == 1, reason
    assert value(c, "facewire_classifier_rejections_total", reason="queue_full") == 0
    # per message: one queue and one total time each; per batch: at least one search
    for stage in ("queue", "total"):
        assert value(c, "facewire_classifier_stage_seconds_count", stage=stage) == len(sent)
        assert value(c, "facewire_classifier_stage_seconds_bucket", stage=stage, le="+Inf") == len(
            sent
        )
    assert value(c, "facewire_classifier_stage_seconds_count", stage="search") >= 1
    assert value(c, "facewire_classifier_stage_seconds_sum", stage="search") > 0
    index = d.service.index
    assert value(c, "facewire_gallery_identities") == index.identities == len(KNOWN)
    assert value(c, "facewire_gallery_vectors") == index.vectors
    assert value(c, "facewire_classifier_threshold") == pytest.approx(index.matcher.threshold)
    info = [dict(labels) for name, labels in c if name == "facewire_gallery_info"]
    assert info == [{"version": index.version, "model": index.model_id, "source": "auto"}]
    assert value(c, "facewire_classifier_broker_connected") == 1
    assert value(c, "facewire_classifier_queue_depth", node="door") == 0
    # scraped again with nothing new: the histograms do not count anything twice
    again = d.classifier()
    assert value(again, "facewire_classifier_stage_seconds_count", stage="queue") == len(sent)

    # the monitor: behind its login, the token lets a scraper in
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(f"{d.monitor.url}/metrics")
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        scrape(f"{d.monitor.url}/metrics", "not-the-token-0123456789")
    assert wrong.value.code == 401
    m = eventually(
        d.monitor_metrics,
        lambda s: (
            value(s, "facewire_monitor_capture_to_result_seconds_count") == len(sent)
            and value(s, "facewire_monitor_messages_total", kind="error") == len(bad)
        ),
    )
    assert value(m, "facewire_monitor_results_total", node="door", outcome="known") == known
    assert value(m, "facewire_monitor_results_total", node="door", outcome="unknown") == (
        len(sent) - known
    )
    assert value(m, "facewire_monitor_messages_total", kind="result") == len(sent)
    # one error report per reason (the topic without a node gets none)
    assert value(m, "facewire_monitor_messages_total", kind="error") == len(bad)
    assert value(m, "facewire_monitor_capture_to_result_seconds_count") == len(sent)
    delay = value(m, "facewire_monitor_capture_to_result_seconds_sum") / len(sent)
    assert 0 <= delay < 5
    for stage in [*EDGE_STAGES, "queue", "search", "total_classifier"]:
        assert value(m, "facewire_monitor_stage_seconds_count", stage=stage) == len(sent), stage
    embed = value(m, "facewire_monitor_stage_seconds_sum", stage="embed") / len(sent)
    assert embed == pytest.approx(EDGE_STAGES["embed"] / 1000.0)
    assert value(m, "facewire_monitor_stage_seconds_count", stage="mesh") == 0  # not sent
    assert value(m, "facewire_monitor_rows_total", fate="written") == len(sent)
    assert value(m, "facewire_monitor_broker_connected") == 1
    assert value(m, "facewire_monitor_metrics_backlog_rows") == 0

    # every query of the dashboard names metrics these two scrapes have
    names = {name for name, _ in c} | {name for name, _ in m}
    for expr in dashboard_exprs():
        used = set(re.findall(r"\b((?:facewire|process)_[a-z0-9_]+)", expr))
        assert used, f"no facewire metric in {expr!r}"
        assert used <= names, f"{expr!r}: {sorted(used - names)} not in a scrape"


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            exprs.append(target["expr"])
    return exprs


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"id", "type", "title", "gridPos"} <= panel.keys(), panel.get("title")
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip() and target["refId"]
    assert len(dashboard_exprs()) >= 10


# --- the pieces, without a broker ----------------------------------------------------


def test_a_window_tells_the_values_added_since_a_count() -> None:
    w = CountedWindow(size=3)
    w.extend(v for v in (1.0, 2.0))  # a generator, as the worker passes
    assert w.since(0) == (2, [1.0, 2.0])
    w.extend([3.0, 4.0, 5.0, 6.0])  # more than it holds
    assert w.since(2) == (6, [4.0, 5.0, 6.0])  # what it still holds of the 4 new ones
    assert w.since(6) == (6, [])
    w.add(7.0)
    assert w.since(6) == (7, [7.0])
    assert w.percentiles().n == 3  # still a LatencyWindow


def test_buckets_are_cumulative_and_scaled_to_the_count() -> None:
    b = Buckets([0.1, 1.0])
    b.fold([0.05, 0.1, 0.5, 2.0])  # a value on a bound is in that bound's bucket
    buckets, total = b.samples()
    assert buckets == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert total == pytest.approx(2.65)
    b.fold([0.05, 0.5], count=10)  # two values standing for ten
    buckets, total = b.samples()
    assert buckets == [("0.1", 7.0), ("1.0", 13.0), ("+Inf", 14.0)]
    assert total == pytest.approx(2.65 + 0.55 * 5)
    b.fold([float("nan")])
    assert b.count == 14


def test_node_labels_are_capped() -> None:
    depths = {f"n{i}": i for i in range(10)}
    top = top_nodes(depths, 3)
    assert top == {"n9": 9, "n8": 8, "n7": 7, OTHER: sum(range(7))}
    assert top_nodes({"a": 1}, 3) == {"a": 1}


def test_many_nodes_make_few_series_and_a_flood_costs_no_series() -> None:
    from facewire.bus.memory import MemoryBroker

    m = Matcher(np.eye(2, dtype=np.float32), ["ann", "bob"], k=1)
    cfg = ClassifierConfig(queue_size=2)
    service = ClassifierService(
        cfg, GalleryIndex(m, "toy-00000000", 2, 2, "v1"), MemoryBroker().transport("c")
    )
    vector = np.array([1.0, 0.0], np.float32)
    for i in range(50):  # not started: everything stays queued
        node = f"cam{i}"
        for seq in range(3):
            payload = embedding(seq, vector, "toy-00000000", node=node)
            service.handle(Message(topics.embedding(node), payload, False, 1))
    samples = parse(_render(ClassifierCollector(service, max_nodes=5)))
    depth = {
        dict(k[1])["node"]: v
        for k, v in samples.items()
        if k[0] == "facewire_classifier_queue_depth"
    }
    assert len(depth) == 6 and depth[OTHER] == 45 * 2
    assert value(samples, "facewire_classifier_messages_total") == 150
    assert value(samples, "facewire_classifier_rejections_total", reason="queue_full") == 50
    service.queues.close()


def _render(collector: ClassifierCollector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_the_port_taken_is_an_error_at_start() -> None:
    import socket

    from facewire.bus.memory import MemoryBroker
    from facewire.config.schema import MetricsConfig

    m = Matcher(np.eye(2, dtype=np.float32), ["ann", "bob"], k=1)
    service = ClassifierService(
        ClassifierConfig(),
        GalleryIndex(m, "toy-00000000", 2, 2, "v1"),
        MemoryBroker().transport("c"),
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            MetricsServer.start(service, MetricsConfig(port=taken.getsockname()[1]))


def monitor_result(node: str, seq: int, name: str, captured_at: float) -> bytes:
    r = {
        "node": node, "seq": seq, "name": name, "score": 0.6, "model": "sface-0123abcd",
        "captured_at": captured_at, "timings": {"embed_ms": 10.0},
    }  # fmt: skip
    return json.dumps(r).encode()


def test_monitor_counts_each_logged_result_once_and_caps_its_node_labels(tmp_path: Path) -> None:
    store, state = Store(tmp_path / "log.sqlite3"), State()
    try:
        subscriber = Subscriber(None, store, state)
        app = create_app(store, state)  # no login: loopback only
        client = app.test_client()
        captured = time.time() - 0.3  # the same capture: seq 1 again is a repeat
        for i in range(60):
            node = f"cam{i}"
            subscriber.handle(
                Message(topics.result(node), monitor_result(node, 1, "ann", captured), False, 1)
            )
        for seq in (1, 2):  # seq 1 again: a repeat, not logged twice
            subscriber.handle(
                Message(
                    topics.result("cam0"), monitor_result("cam0", seq, UNKNOWN, captured), False, 1
                )
            )
        assert store.flush(5)
        resp = client.get("/metrics", base_url="http://127.0.0.1:6010")
        assert resp.status_code == 200
        assert resp.content_type.startswith("text/plain; version=")
        samples = parse(resp.get_data(as_text=True))
        results = {
            (dict(k[1])["node"], dict(k[1])["outcome"]): v
            for k, v in samples.items()
            if k[0] == "facewire_monitor_results_total"
        }
        assert results[("cam0", "known")] == 1 and results[("cam0", "unknown")] == 1
        assert len({node for node, _ in results}) == 50 + 1  # the first 50, then other
        assert results[(OTHER, "known")] == 10
        assert value(samples, "facewire_monitor_messages_total", kind="result_repeat") == 1
        assert value(samples, "facewire_monitor_capture_to_result_seconds_count") == 61
        assert value(samples, "facewire_monitor_capture_to_result_seconds_bucket", le="0.25") == 0
        assert value(samples, "facewire_monitor_capture_to_result_seconds_bucket", le="0.5") == 61
        assert value(samples, "facewire_monitor_stage_seconds_count", stage="embed") == 61
        # a stage the results do not carry has no samples
        assert value(samples, "facewire_monitor_stage_seconds_count", stage="queue") == 0
        again = parse(
            client.get("/metrics", base_url="http://127.0.0.1:6010").get_data(as_text=True)
        )
        assert value(again, "facewire_monitor_results_total", node="cam0", outcome="known") == 1
        # no login means loopback only, for /metrics as for every page
        assert client.get("/metrics", base_url="http://monitor.example:6010").status_code == 403
    finally:
        store.close()
