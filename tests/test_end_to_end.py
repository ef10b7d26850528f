"""Edge → mosquitto → classifier → monitor, with real models and real faces."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facewire import config
from facewire.bus.client import BusClient, Message
from facewire.bus.messages import Result
from facewire.classifier.__main__ import load_index
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.config.schema import ClassifierConfig, EdgeConfig, SearchConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.sources import open_source
from tests.broker import Mosquitto, free_port
from tests.conftest import DATASET, ROOT
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def gallery_index(tmp_path_factory) -> GalleryIndex:
    cfg = ClassifierConfig(
        dataset=str(DATASET / "gallery"), cache_dir=str(tmp_path_factory.mktemp("cache"))
    )
    return load_index(cfg, progress=False)


def serve(
    cfg: ClassifierConfig, index: GalleryIndex, client_id: str = "classifier"
) -> ClassifierService:
    """A classifier on the real broker, as ``facewire classifier`` makes one."""
    return ClassifierService(cfg, index, BusClient(cfg.broker, client_id)).start()


def classifier_cfg(broker: Mosquitto, **kw: Any) -> ClassifierConfig:
    cfg = config.load(ClassifierConfig, overrides={"broker.url": broker.url}, env={})
    cfg.stats_interval_s = 0.5
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def classifier(mosquitto: Mosquitto, gallery_index: GalleryIndex) -> Iterator[ClassifierService]:
    service = serve(classifier_cfg(mosquitto), gallery_index)
    yield service
    service.stop()


def edge_node(broker: Mosquitto, node: str) -> EdgeNode:
    cfg = config.load(
        EdgeConfig,
        # a folder of different people's photos at one spot: every photo is embedded
        overrides={
            "node": node,
            "broker.url": broker.url,
            "dedup_distance": 0,
            "reembed_named_s": 0,
        },
        env={},
    )
    cfg.status_interval_s = 0.5
    return EdgeNode(cfg, BusClient(cfg.broker, f"edge-{node}")).start()


def replay(node: EdgeNode, folder: Path) -> tuple[dict[int, str], dict[int, dict]]:
    """Replay every image of ``folder``; returns seq → person and seq → result."""
    results: dict[int, dict] = {}
    lock = threading.Lock()

    def keep(r: Result, latency_ms: float | None) -> None:
        with lock:
            results[r.seq] = {**r.as_dict(), "edge_latency_ms": latency_ms}

    node.on_result = keep
    truth: dict[int, str] = {}
    for frame in open_source(str(folder), fps=0):
        before = node.seq
        node.process(frame)
        for seq in range(before + 1, node.seq + 1):
            truth[seq] = frame.label.split("/")[0]
    wait_for(lambda: len(results) >= len(truth), 20, "a result for every face sent")
    return truth, results


def test_probes_are_named_and_strangers_are_unknown(mosquitto, classifier):
    node = edge_node(mosquitto, "door")
    try:
        truth, results = replay(node, DATASET / "probes")
        images = len(list((DATASET / "probes").rglob("*.jpg")))
        named = sum(results[s]["name"] == person for s, person in truth.items())
        assert named >= 0.9 * images, f"{named} of {images} probes named right"
        r = next(iter(results.values()))
        for key in ("node", "seq", "name", "score", "threshold", "model", "neighbours", "timings"):
            assert key in r
        assert r["model"] == classifier.index.model_id and r["node"] == "door"
        for stage in ("detect_ms", "mesh_ms", "embed_ms", "queue_ms", "search_ms"):
            assert stage in r["timings"]
        assert r["edge_latency_ms"] is not None and r["edge_latency_ms"] > 0

        truth_u, results_u = replay(node, DATASET / "unknown")
        unknown = sum(results_u[s]["name"] == "unknown" for s in truth_u)
        assert unknown >= 0.8 * len(truth_u), f"{unknown} of {len(truth_u)} strangers unknown"
        st = node.status()
        assert st.latency_ms is not None and st.latency_ms.n == len(results) + len(results_u)
        assert st.latency_ms.p50 is not None and st.latency_ms.p50 > 0
    finally:
        node.close()


def test_status_and_threshold_topics(mosquitto, classifier):
    seen: dict[str, dict] = {}
    watcher = BusClient(config.schema.BrokerConfig(url=mosquitto.url), "watcher")
    watcher.subscribe(
        "faces/#",
        lambda m: seen.__setitem__(m.topic, json.loads(m.payload) if m.payload[:1] == b"{" else {}),
    )
    watcher.connect()
    node = edge_node(mosquitto, "hall")
    try:
        replay(node, DATASET / "probes" / "ORL_s03")
        wait_for(
            lambda: seen.get("faces/hall/status", {}).get("latency_ms", {}).get("n"),
            5,
            "edge status with latency",
        )
        wait_for(
            lambda: seen.get("faces/classifier/status", {}).get("processed"), 5, "classifier status"
        )
        cls = seen["faces/classifier/status"]
        assert cls["gallery"]["identities"] == 22 and cls["model"].startswith("sface-")
        assert cls["gallery"]["dim"] == 128  # what a third-party node must send
        th = wait_for(
            lambda: (
                seen.get("faces/stats/thresholds", {}).get("queries")
                and seen["faces/stats/thresholds"]
            ),
            5,
            "stats",
        )
        assert th["calibration"]["eer"] < 0.1
        assert sum(th["histogram"]["counts"]) == th["queries"]
        named_at = {g["threshold"]: g["named"] for g in th["grid"]}
        assert named_at[0.0] >= named_at[0.5] >= named_at[0.95]
    finally:
        node.close()
        watcher.close()
    # a clean stop says offline (retained)
    wait_for(
        lambda: seen.get("faces/hall/status", {}).get("state") == "offline", 5, "offline status"
    )


def test_malformed_payloads_get_errors_and_good_ones_still_answered(mosquitto, classifier):
    import numpy as np

    from facewire.bus import codec

    errors: list[dict] = []
    results: list[dict] = []
    client = BusClient(config.schema.BrokerConfig(url=mosquitto.url), "bad-node")
    client.subscribe("faces/cam1/error", lambda m: errors.append(json.loads(m.payload)))
    client.subscribe("faces/cam1/result", lambda m: results.append(json.loads(m.payload)))
    client.connect()
    dim = classifier.index.matcher.dim
    model = classifier.index.model_id

    def message(seq: int, **kw: Any) -> codec.EmbeddingMessage:
        vec = np.random.default_rng(seq).normal(size=dim).astype(np.float32)
        fields = dict(
            node="cam1",
            seq=seq,
            frame_id=seq,
            face_index=0,
            bbox=(1, 2, 3, 4),
            model_id=model,
            captured_at=time.time(),
            stages={"embed": 1.0},
            quality=(9.0, 1.0, 100.0),
            vector=vec / np.linalg.norm(vec),
        )
        fields.update(kw)
        return codec.EmbeddingMessage(**fields)

    good = codec.encode(message(1))
    nan = bytearray(codec.encode(message(2), dtype="float32"))
    nan[-4:] = np.array([np.nan], np.float32).tobytes()
    bad = {
        "garbage": b"\x00\x01 not an embedding",
        "json": json.dumps([0.1] * dim).encode(),
        "truncated": good[: len(good) // 2],
        "nan": bytes(nan),
        "wrong_dim": codec.encode(
            message(3, vector=np.ones(dim + 4, np.float32) / np.sqrt(dim + 4))
        ),
        "wrong_model": codec.encode(message(4, model_id="clip-vit-b32-deadbeef")),
        "other_node": codec.encode(message(5, node="cam2")),
        "empty": b"",
    }
    # topics whose node id is not valid: refused before decoding, costing nobody else
    bad_topics = [
        "faces/a b/embedding",
        "faces/classifier/embedding",
        f"faces/{'x' * 200}/embedding",
    ]
    for topic in bad_topics:
        client.publish(topic, good, qos=1)
    for payload in bad.values():
        client.publish("faces/cam1/embedding", payload, qos=1)
    client.publish("faces/cam1/embedding", good, qos=1)
    wait_for(lambda: results, 10, "the good payload's result")
    wait_for(lambda: classifier.status().rejected == len(bad), 5, "every bad payload counted")
    reasons = {e["reason"] for e in errors}
    assert {"wrong_model", "non_finite", "bad_dim", "bad_metadata"} <= reasons
    assert "truncated" in reasons or "bad_magic" in reasons
    assert all(e["detail"] for e in errors)
    # one reply per node and reason a second (two pairs repeat a reason back to back);
    # the status counts every refusal
    assert len(errors) == len(reasons) < len(bad)
    assert [r["seq"] for r in results] == [1]
    assert classifier.status().bad_topics == len(bad_topics)
    # and it keeps serving
    client.publish("faces/cam1/embedding", codec.encode(message(6)), qos=1)
    wait_for(lambda: len(results) == 2, 5, "a second good result")
    client.close()


def test_an_edge_that_crops_otherwise_is_told_so(mosquitto, classifier):
    """Same weights, crops made by MediaPipe's graph instead of the landmark model: the
    vectors are not comparable with the gallery's, and the classifier says so instead of
    answering worse; the edge's own settings put right, it is answered."""
    errors: list[dict] = []
    watcher = BusClient(config.schema.BrokerConfig(url=mosquitto.url), "watcher")
    watcher.subscribe("faces/porch/error", lambda m: errors.append(json.loads(m.payload)))
    watcher.connect()
    assert classifier.index.model_id.endswith("+lm-blur1.4")
    photo = DATASET / "probes" / "ORL_s04"
    cfg = config.load(
        EdgeConfig,
        overrides={
            "node": "porch",
            "broker.url": mosquitto.url,
            "dedup_distance": 0,
            "reembed_named_s": 0,
            "pipeline.mesh_runtime": "mediapipe",
        },
        env={},
    )
    node = EdgeNode(cfg, BusClient(cfg.broker, "edge-porch")).start()
    try:
        assert node.pipeline.model_id.endswith("+mp-blur1.4")
        assert node.classifier_model == classifier.index.model_id  # seen (and said) at start
        node.process(next(open_source(str(photo), fps=0)))
        (error,) = wait_for(lambda: errors, 10, "a wrong_model error")
        assert error["reason"] == "wrong_model"
        assert "+mp" in error["detail"] and classifier.index.model_id in error["detail"]
    finally:
        node.close(drain_s=0.5)
    right = edge_node(mosquitto, "porch")
    try:
        truth, results = replay(right, photo)
        assert {r["name"] for r in results.values()} == {"ORL_s04"} and len(errors) == 1
    finally:
        right.close(drain_s=0.5)
        watcher.close()


def test_a_flooding_node_does_not_delay_another(mosquitto):
    """Node 'flood' sends 10× the rate of node 'calm' at a deliberately slow classifier."""
    import numpy as np

    from facewire.bus import codec
    from facewire.classifier.search import Matcher

    rng = np.random.default_rng(0)
    dim, n = 128, 150_000  # a flat search over 150k vectors makes every batch cost ms
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = GalleryIndex(
        Matcher(vecs, [f"p{i % 1000}" for i in range(n)], search=SearchConfig(index="flat")),
        "synthetic-0",
        1000,
        n,
        "v",
    )
    # long queues, small batches: a node behind a full queue of 128 waits ~30 batches,
    # a node served round-robin waits ~1
    service = serve(classifier_cfg(mosquitto, queue_size=128, batch_max=4), index)
    sent_at: dict[tuple[str, int], float] = {}
    got_at: dict[tuple[str, int], float] = {}
    errors: list[dict] = []
    client = BusClient(config.schema.BrokerConfig(url=mosquitto.url), "two-nodes")

    def on_result(m: Message) -> None:
        r = json.loads(m.payload)
        got_at[(r["node"], r["seq"])] = time.perf_counter()

    client.subscribe("faces/+/result", on_result, qos=0)
    client.subscribe("faces/flood/error", lambda m: errors.append(json.loads(m.payload)))
    client.connect()

    def payload(node: str, seq: int) -> bytes:
        v = rng.normal(size=dim).astype(np.float32)
        return codec.encode(
            codec.EmbeddingMessage(
                node,
                seq,
                seq,
                0,
                (0, 0, 1, 1),
                "synthetic-0",
                time.time(),
                {},
                (1.0, 1.0, 1.0),
                v / np.linalg.norm(v),
            )
        )

    try:
        calm_every = 10  # flood sends 10 messages for each of calm's
        for i in range(1, 1501):
            client.publish("faces/flood/embedding", payload("flood", i), qos=1)
            sent_at[("flood", i)] = time.perf_counter()
            if i % calm_every == 0:
                seq = i // calm_every
                client.publish("faces/calm/embedding", payload("calm", seq), qos=1)
                sent_at[("calm", seq)] = time.perf_counter()
                time.sleep(0.02)  # flood ~500/s, calm ~50/s
        calm = [k for k in sent_at if k[0] == "calm"]
        wait_for(lambda: all(k in got_at for k in calm), 20, "every calm result")
        time.sleep(0.5)
    finally:
        service.stop()
        client.close()
    flood_lat = sorted(got_at[k] - sent_at[k] for k in sent_at if k[0] == "flood" and k in got_at)
    calm_lat = sorted(got_at[k] - sent_at[k] for k in calm)
    dropped = service.queues.drops().get("flood", 0)
    # the flood overran its own queue (and was told so); the calm node lost nothing
    assert dropped > 0 and any(e["reason"] == "queue_full" for e in errors)
    assert service.queues.drops().get("calm", 0) == 0 and len(calm_lat) == len(calm)
    # the calm node waits about one batch; the flooding node waits for its own full queue
    # (served in arrival order, the calm node would wait as long as the flood). The
    # median, not the tail: with both cores taken by other work the tail comes near the
    # flood's median, while the median stays far below it
    calm_p50, flood_p50 = calm_lat[len(calm_lat) // 2], flood_lat[len(flood_lat) // 2]
    ms = f"calm p50 {calm_p50 * 1000:.0f} ms, flood p50 {flood_p50 * 1000:.0f} ms"
    assert calm_p50 < flood_p50 / 3, ms


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_results_reach_the_monitor_log(mosquitto, classifier, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facewire",
            "monitor",
            "--broker",
            mosquitto.url,
            "--port",
            str(port),
            "--db",
            str(tmp_path / "log.sqlite3"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, 20, "the monitor's port")
        node = edge_node(mosquitto, "lobby")
        try:
            truth, results = replay(node, DATASET / "probes" / "ORL_s05")
        finally:
            node.close()

        def logged() -> list[dict]:
            return http_json(f"http://127.0.0.1:{port}/log?node=lobby")["detections"]

        rows = wait_for(lambda: len(logged()) >= len(truth) and logged(), 10, "rows in /log")
        assert {r["name"] for r in rows} == {"ORL_s05"}
        assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)
        nodes = http_json(f"http://127.0.0.1:{port}/nodes")
        assert "lobby" in json.dumps(nodes)
    finally:
        proc.terminate()
        proc.wait(10)


def test_replicas_in_a_group_share_the_load_without_duplicates(mosquitto, gallery_index):
    import numpy as np

    from facewire.bus import codec

    a = serve(classifier_cfg(mosquitto, group="g"), gallery_index, "cls-a")
    b = serve(classifier_cfg(mosquitto, group="g"), gallery_index, "cls-b")
    results: list[dict] = []
    client = BusClient(config.schema.BrokerConfig(url=mosquitto.url), "sender")
    client.subscribe("faces/cam/result", lambda m: results.append(json.loads(m.payload)))
    client.connect()
    rng = np.random.default_rng(3)
    try:
        for seq in range(1, 61):
            v = rng.normal(size=gallery_index.matcher.dim).astype(np.float32)
            msg = codec.EmbeddingMessage(
                "cam",
                seq,
                seq,
                0,
                (0, 0, 9, 9),
                gallery_index.model_id,
                time.time(),
                {},
                (81.0, 1.0, 1.0),
                v / np.linalg.norm(v),
            )
            client.publish("faces/cam/embedding", codec.encode(msg), qos=1)
        wait_for(lambda: len(results) >= 60, 10, "60 results")
        time.sleep(0.3)
    finally:
        a.stop()
        b.stop()
        client.close()
    assert sorted(r["seq"] for r in results) == list(range(1, 61))  # each once
    assert a.processed > 0 and b.processed > 0 and a.processed + b.processed == 60
