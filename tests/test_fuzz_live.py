"""The live fuzz run of issue 12, item 6: hostile input against a running classifier
and monitor, with good traffic in between.

Real parts only: a mosquitto on a free port, ``facewire classifier`` on the test
gallery and ``facewire monitor`` (SQLite in the test's folder) as processes, and real
embeddings of the repository's probe photos, made once by the face pipeline.

Two calm nodes (and two odd but valid ones: a 64-byte id, a unicode id) send real
embeddings while one hostile client sends more than 10,000 malformed payloads:
random bytes, damaged and truncated real messages, wrong dimensions, NaN and
infinity, metadata at and over its limits, JSON and forged sealed envelopes where
binary is expected, invalid and reserved node ids in topics, thousands of distinct
node ids, and hostile JSON (garbage, 1 MB names, HTML) on every topic the monitor
reads (a topic with control characters never gets that far: mosquitto drops the
client that publishes it). What each payload must be refused for is worked out here by the wire
contract's own decoders (``bus.topics``, ``bus.codec``, ``bus.messages``), so the
counts can be checked exactly.

Checked at the end: both processes still run; every good message got its result
with the expected name (by node and seq); the classifier's status counts every
refusal and every bad topic, and its error replies are at most one per second per
node and reason, each counting all refusals of its reason; the RSS of both processes
stayed bounded and stopped growing; the monitor still answers, its JSON is bounded,
its log holds every good result, and no HTML sent in ids or names comes back raw in
its pages.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.errors import WireError
from facewire.bus.messages import (
    ClassifierStatus,
    EdgeStatus,
    ErrorReport,
    GalleryReply,
    Result,
    ThresholdStats,
)
from facewire.bus.transport import Message
from facewire.config.schema import BrokerConfig, EdgeConfig
from facewire.models import FacePipeline
from facewire.models.files import list_photos, read_photo
from tests.broker import Mosquitto, free_port
from tests.conftest import DATASET, GALLERY_PEOPLE, ROOT
from tests.waiting import wait_for

HOSTILE = "evil"  # the node id the hostile client damages messages for
CALM = ("calm-a", "calm-b")
#: valid, if unusual, node ids that send good messages: at the 64-byte limit, unicode
ODD = ("n" * 64, "ñandú-門-✓")
GOOD_NODES = (*CALM, *ODD)
INTRUDERS = 5000  # distinct valid node ids, one bad embedding each
SPOOFERS = 2000  # distinct node ids of forged results for the monitor
XSS = "<img src=x onerror=alert(1)>"
HTML_IDS = ("<img>", "<script>alert(1)<", '"><img>', "<iframe>", "<svg>onload=alert(1)")

RSS_GROWTH_MB = 150.0
STILL_CLIMBING_MB = 10.0  # over the last samples, after the flood
#: the issue saw 351 KB of status (25,000 ids), 7.7 MB of /nodes and 709 MB of /log
STATUS_MAX_BYTES = 64 * 1024
NODES_MAX_BYTES = 4 * 1024 * 1024
LOG_MAX_BYTES = 8 * 1024 * 1024
ERRORS_MAX_BYTES = 4 * 1024 * 1024
FLOOD_PER_S = 1500.0
GOOD_EVERY_S = 0.05  # each calm node
ODD_EVERY_S = 0.5  # each odd node
BASELINE_BURST = 16


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


# --- the good messages ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def probes() -> tuple[list[tuple[str, np.ndarray]], str]:
    """(expected name, embedding) of every probe photo with a face, and the model id:
    the gallery's people by name, everyone else ``unknown``."""
    pipeline = FacePipeline(EdgeConfig().pipeline)
    out = []
    try:
        for folder in sorted(p for p in (DATASET / "probes").iterdir() if p.is_dir()):
            expected = folder.name if folder.name in GALLERY_PEOPLE else "unknown"
            for photo in list_photos(folder):
                faces = pipeline.get(read_photo(photo))
                if faces:
                    face = max(faces, key=lambda f: f.box[2] * f.box[3])
                    out.append((expected, face.embedding))
        model = pipeline.model_id
    finally:
        pipeline.close()
    assert len(out) >= 40 and {n for n, _ in out} >= set(GALLERY_PEOPLE)
    return out, model


def embedding(node: str, seq: int, vector: np.ndarray, model: str, **kw: Any) -> bytes:
    fields: dict[str, Any] = dict(
        node=node,
        seq=seq,
        frame_id=seq,
        face_index=0,
        bbox=(10, 20, 96, 96),
        model_id=model,
        captured_at=time.time(),
        stages={"detect": 4.5, "embed": 12.25},
        quality=(9216.0, 150.5, 128.0),
        vector=vector,
    )
    dtype = kw.pop("dtype", "float16")
    fields.update(kw)
    return codec.encode(codec.EmbeddingMessage(**fields), dtype)


def raw_embedding(
    node: bytes = HOSTILE.encode(),
    model: bytes = b"m",
    stages: list[tuple[bytes, float]] | None = None,
    vector: bytes = b"",
    *,
    dim: int | None = None,
    code: int = 1,
    magic: bytes = b"FW",
    version: int = 1,
    meta_len: int | None = None,
    seq: int = 1,
) -> bytes:
    """The wire layout built without the encoder's checks (lengths up to 255)."""
    stages = [(b"embed", 1.0)] if stages is None else stages
    fixed = struct.pack("<IIBhhHHd3f", seq, seq, 0, 1, 2, 3, 4, time.time(), 9.0, 1.0, 100.0)
    meta = fixed + bytes([len(node)]) + node + bytes([len(model)]) + model
    meta += bytes([len(stages)]) + b"".join(
        bytes([len(n)]) + n + struct.pack("<f", ms) for n, ms in stages
    )
    if dim is None:
        dim = len(vector) // (2 if code == 1 else 4)
    length = len(meta) if meta_len is None else meta_len
    return struct.pack("<2sBBHH", magic, version, code, dim, length) + meta + vector


# --- the oracle: what the wire contract says each payload is ----------------------------


class Oracle:
    """Why the classifier must refuse an embedding (``None``: it must accept it), in the
    order docs/protocol.md gives: the topic, the codec's checks, the payload's node
    against the topic's, the model id."""

    def __init__(self, model: str, dim: int) -> None:
        self.model, self.dim = model, dim

    def topic(self, topic: str) -> str | None:
        """The topic's node id, or ``None`` for a topic the classifier must ignore."""
        try:
            return topics.parse(topic, "embedding")
        except WireError:
            return None

    def reason(self, node: str, payload: bytes) -> str | None:
        try:
            msg = codec.decode(payload, self.dim)
        except WireError as exc:
            return exc.reason
        if msg.node != node:
            return "bad_metadata"
        if msg.model_id != self.model:
            return "wrong_model"
        return None


def monitor_refuses(topic: str, payload: bytes) -> bool:
    """Whether the monitor's decoders must count ``payload`` on ``topic`` as malformed
    (the message types of the topics it subscribes to)."""
    try:
        if topic == topics.THRESHOLDS:
            ThresholdStats.decode(payload)
        elif topic == topics.GALLERY_REPLIES:
            GalleryReply.decode(payload)
        elif topic == topics.CLASSIFIER_STATUS:
            ClassifierStatus.decode(payload)
        else:
            kind = topic.rsplit("/", 1)[1]
            topics.parse(topic)
            decoder = {"status": EdgeStatus, "result": Result, "error": ErrorReport}[kind]
            decoder.decode(payload)
    except WireError:
        return True
    return False


# --- the hostile payloads ---------------------------------------------------------------


def hostile_embeddings(
    rng: random.Random, oracle: Oracle, vec: np.ndarray, model: str
) -> list[tuple[str, bytes]]:
    """Malformed embeddings for ``faces/evil/embedding`` (every one refused)."""
    dim = oracle.dim
    good = embedding(HOSTILE, 1, vec, model)
    good32 = embedding(HOSTILE, 2, vec, model, dtype="float32")
    f16 = vec.astype("<f2").tobytes()
    out: list[bytes] = []

    def rand(n: int) -> bytes:
        return rng.randbytes(n)

    out += [rand(rng.randint(0, 300)) for _ in range(600)]
    out += [b"FW" + rand(rng.randint(0, 300)) for _ in range(400)]
    out += [b"FW\x01" + rand(rng.randint(0, 400)) for _ in range(400)]
    out += [
        b"FW\x01" + bytes([rng.choice((1, 2))]) + struct.pack("<H", dim) + rand(rng.randint(2, 600))
        for _ in range(300)
    ]
    out += [good[: rng.randint(0, len(good) - 1)] for _ in range(300)]
    out += [good32[: rng.randint(0, len(good32) - 1)] for _ in range(100)]
    for _ in range(600):  # damaged in one to three bytes: kept if that makes it invalid
        damaged = bytearray(rng.choice((good, good32)))
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        out.append(bytes(damaged))
    for d in (1, 64, 127, 129, 512, 4096):  # well formed, but not the gallery's dimension
        v = np.ones(d, np.float32) / np.sqrt(d)
        out += [embedding(HOSTILE, 3, v, model) for _ in range(30)]
    out += [raw_embedding(model=model.encode(), dim=d, vector=f16) for d in (0, 4097, 65535)] * 30
    out += [good + rand(rng.randint(1, 8)) for _ in range(50)]  # trailing bytes
    for _ in range(300):  # NaN and infinity, float16 and float32
        if rng.random() < 0.5:
            v32 = vec.astype(np.float32).copy()
            v32[rng.randrange(dim)] = rng.choice((np.nan, np.inf, -np.inf))
            body = v32.astype("<f4").tobytes()
            out.append(raw_embedding(model=model.encode(), vector=body, code=2))
        else:
            v16 = bytearray(f16)
            i = 2 * rng.randrange(dim)
            v16[i : i + 2] = rng.choice((b"\x00\x7c", b"\x00\xfc", b"\x00\x7e", b"\xff\x7f"))
            out.append(raw_embedding(model=model.encode(), vector=bytes(v16)))
    m = model.encode()
    for _ in range(20):  # metadata at and over its limits
        out += [
            raw_embedding(node=b"n" * rng.randint(65, 255), model=m, vector=f16),
            raw_embedding(model=b"m" * rng.randint(65, 255), vector=f16),
            raw_embedding(model=b"m" * 64, vector=f16),  # at the limit: another model
            raw_embedding(model=m, stages=[(b"s%d" % i, 1.0) for i in range(17)], vector=f16),
            raw_embedding(model=m, stages=[(b"", 1.0)], vector=f16),
            raw_embedding(model=m, stages=[(b"s" * rng.randint(33, 255), 1.0)], vector=f16),
            raw_embedding(model=m, stages=[("é".encode(), 1.0)], vector=f16),
            raw_embedding(node=b"\xff\xfe", model=m, vector=f16),
            raw_embedding(node=HOSTILE.encode(), model=b"\xc3(", vector=f16),
            raw_embedding(model=m, vector=f16, meta_len=rng.randint(0, 44)),
            raw_embedding(model=m, vector=f16, meta_len=65535),
            raw_embedding(model=m, vector=f16, meta_len=rng.randint(200, 2000)),
            raw_embedding(model=m, vector=f16, magic=b"WF"),
            raw_embedding(model=m, vector=f16, version=rng.choice((0, 2, 255))),
            raw_embedding(model=m, vector=f16, code=rng.choice((0, 3, 255))),
        ]
    for node in ("calm-a", "n" * 64, "EVIL", "evil "):  # another node's id in the payload
        out += [embedding(node, 5, vec, model) for _ in range(25)]
    for other in ("clip-vit-b32-deadbeef", "sface-00000000+mp", XSS):
        out += [embedding(HOSTILE, 6, vec, other) for _ in range(50)]
    as_json = {"node": HOSTILE, "seq": 1, "model_id": model, "vector": vec.tolist()}
    out += [json.dumps(as_json).encode(), json.dumps(vec.tolist()).encode(), b"{}", b"null"] * 50
    out += [b"FS\x01" + rand(rng.randint(0, 1200)) for _ in range(300)]  # forged sealed
    out += [b"FS\x01" + good for _ in range(50)]  # a real message in a forged envelope
    out += [b"", b"F", b"FW", b"FW\x01\x01\x80\x00"] * 20
    out += [rand(1024 * 1024) for _ in range(4)]  # 1 MB
    out += [b"FW\x01\x01\x00\x10\xff\xff" + rand(1024 * 1024) for _ in range(2)]
    return [(topics.embedding(HOSTILE), p) for p in out if oracle.reason(HOSTILE, p) is not None]


BAD_TOPICS = (
    "faces/a b/embedding",
    "faces/classifier/embedding",
    "faces/stats/embedding",
    "faces/gallery/embedding",
    f"faces/{'x' * 200}/embedding",
    f"faces/{'y' * 65}/embedding",
    f"faces/{'é' * 33}/embedding",
    "faces//embedding",
    "faces/$SYS/embedding",
    "faces/$x/embedding",
    "faces/nb\u00a0sp/embedding",
    "faces/\ufeffbom/embedding",
    "faces/zero\u200bwidth/embedding",
    "faces/ /embedding",
    f"faces/{XSS}/embedding",
)
#: no subscription of the classifier matches these: never delivered, never counted
UNMATCHED_TOPICS = (
    "faces/a/b/embedding",
    "$faces/evil/embedding",
    "faces/evil/embedding/x",
    "Faces/evil/embedding",
    "faces/evil/embeddings",
)


def hostile_topics(rng: random.Random, vec: np.ndarray, model: str) -> list[tuple[str, bytes]]:
    out = []
    for topic in BAD_TOPICS:
        for i in range(30):  # a good message, a damaged one, garbage
            node = "a b" if i % 3 == 0 else HOSTILE
            out.append((topic, embedding(node, i, vec, model) if i % 2 else rng.randbytes(40)))
    for topic in UNMATCHED_TOPICS:
        out += [(topic, embedding(HOSTILE, i, vec, model)) for i in range(10)]
    return out


def intruder(i: int) -> str:
    return f"intruder-{i:05d}-" + "z" * 30


def intruders(rng: random.Random) -> list[tuple[str, bytes]]:
    return [(topics.embedding(intruder(i)), rng.randbytes(48)) for i in range(INTRUDERS)]


def hostile_json(rng: random.Random) -> list[tuple[str, bytes]]:
    """Hostile JSON (and non-JSON) for the topics the monitor reads."""
    huge = "A" * (1024 * 1024)
    out: list[tuple[str, bytes]] = []

    def js(value: Any) -> bytes:
        return json.dumps(value).encode()

    def result(who: str, seq: int, **kw: Any) -> bytes:
        body = {
            "node": who,
            "seq": seq,
            "name": XSS,
            "score": 0.9,
            "model": "<script>alert(1)</script>",
            "neighbours": [{"name": XSS, "score": 0.9}],
            "timings": {f"<b>{k}</b>_ms": 1.0 for k in range(5)},
            "gallery": XSS,
            "captured_at": time.time(),
        }
        body.update(kw)
        return js(body)

    for i in range(SPOOFERS):  # forged results, every one from a new node id
        node = f"spoof-{i:04d}" if i % 10 else HTML_IDS[(i // 10) % len(HTML_IDS)] + str(i)
        out.append((topics.result(node), result(node, i)))
    for node in HTML_IDS:
        out += [(topics.result(node), result(node, 100_000 + i)) for i in range(5)]
        status = {"node": node, "state": "online", "model": XSS, "latency_ms": {"p50": 1}}
        out += [(topics.status(node), js(status))] * 5
        report = {"node": node, "reason": "bad_magic", "detail": XSS * 20, "count": 1}
        out += [(topics.error(node), js(report))] * 5
    for i in range(1000):  # edge statuses, many ids
        node = f"ghost-{i:04d}"
        body = {"node": node, "state": "online", "model": XSS[:60], "latency_ms": {"p50": i}}
        out.append((topics.status(node), js(body)))
    garbage: list[bytes] = [
        b"",
        b"null",
        b"[]",
        b"\xff\xfe\x00",
        b"{" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"node": "x", "seq": NaN}',
        huge.encode(),
        js({"name": huge}),
        rng.randbytes(2048),
    ]
    for n in range(40):
        node = f"junk-{n:02d}"
        bad_results = [
            result(node, 1, name=""),
            result(node, -1),
            result(node, "1"),
            result(node, 1, score="high"),
            result(node, 1, neighbours=[{"name": "x", "score": 1}] * 5000),
            result(node, 1, bbox=[1, 2, 3]),
        ]
        if n < 5:  # 1 MB names, models, node ids
            bad_results += [result(node, 1, **{k: huge}) for k in ("name", "model", "node")]
        for payload in bad_results + garbage[: 7 if n >= 5 else len(garbage)]:
            out.append((topics.result(node), payload))
        for payload in (
            js({"node": node, "state": "maybe"}),
            js({"node": huge, "state": "online"}),
        ):
            out.append((topics.status(node), payload))
        bad_reports = [
            js({"node": node, "reason": XSS, "detail": "x", "count": 1}),
            js({"node": node, "reason": "bad_dim", "detail": "x", "count": -5}),
        ]
        if n < 5:
            bad_reports.append(js({"node": node, "reason": "bad_dim", "detail": huge, "count": 1}))
        out += [(topics.error(node), p) for p in bad_reports + garbage[:4]]
        out += [(topics.event(node), p) for p in garbage[:4]]
    for topic in (topics.CLASSIFIER_STATUS, topics.THRESHOLDS, topics.GALLERY_REPLIES):
        out += [(topic, p) for p in garbage[1:] + [js({"state": XSS}), js({"ok": "yes"})]]
    return out


# --- the processes ------------------------------------------------------------------------


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FACEWIRE_STATS_INTERVAL_S": "0.5"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "facewire", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Watcher:
    """What comes back: results of the good nodes, error replies, the classifier status."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.results: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.errors: list[dict[str, Any]] = []
        self.status: dict[str, Any] = {}
        self.status_bytes = 0
        self.status_max_bytes = 0
        self.undecodable_statuses: list[str] = []
        self.undecodable_errors: list[str] = []
        self.client = BusClient(BrokerConfig(url=url), "fuzz-watcher")
        self.client.subscribe(topics.CLASSIFIER_STATUS, self._on_status)
        self.client.subscribe(topics.ERRORS, self._on_error)
        for node in GOOD_NODES:
            self.client.subscribe(topics.result(node), self._on_result)
        self.client.connect()

    def _on_status(self, m: Message) -> None:
        if not m.payload:
            return
        try:
            data = json.loads(m.payload)
        except (ValueError, RecursionError):
            return  # the hostile client's garbage on this topic
        if not isinstance(data, dict) or "processed" not in data:
            return  # the same (the classifier's online status always has it)
        try:
            ClassifierStatus.decode(m.payload)
        except WireError as exc:
            with self.lock:
                self.undecodable_statuses.append(exc.detail)
        with self.lock:
            self.status = data
            self.status_bytes = len(m.payload)
            self.status_max_bytes = max(self.status_max_bytes, len(m.payload))

    def _on_error(self, m: Message) -> None:
        node = topics.node_of(m.topic)
        if node != HOSTILE and not node.startswith("intruder-") and node not in GOOD_NODES:
            return  # forged reports of the hostile client's own
        try:
            report = ErrorReport.decode(m.payload).as_dict()
        except WireError as exc:
            with self.lock:
                self.undecodable_errors.append(exc.detail)
            return
        with self.lock:
            self.errors.append({**report, "topic_node": node, "received": time.time()})

    def _on_result(self, m: Message) -> None:
        r = Result.decode(m.payload)
        with self.lock:
            self.results[(topics.node_of(m.topic), r.seq)].append(r.name)

    def close(self) -> None:
        self.client.close()


class Sampler(threading.Thread):
    """RSS of each process every ``every_s``: (seconds since start, MB) lists."""

    def __init__(self, pids: dict[str, int], every_s: float = 0.5) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pids, self.every_s = pids, every_s
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in pids}
        self.t0 = time.monotonic()
        self.halt = threading.Event()

    def sample(self) -> None:
        for who, pid in self.pids.items():
            mb = rss_mb(pid)
            if mb is not None:
                self.samples[who].append((time.monotonic() - self.t0, mb))

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            self.sample()


class GoodTraffic(threading.Thread):
    """The calm nodes (every ``GOOD_EVERY_S``) and the odd ones (every ``ODD_EVERY_S``),
    each cycling through the probes with its own seq, recording what it expects."""

    def __init__(self, client: BusClient, probes: list[tuple[str, np.ndarray]], model: str):
        super().__init__(daemon=True, name="good-traffic")
        self.client, self.probes, self.model = client, probes, model
        self.expected: dict[tuple[str, int], str] = {}
        self.seq: dict[str, int] = {}
        self.halt = threading.Event()

    def send(self, node: str) -> None:
        seq = self.seq[node] = self.seq.get(node, 0) + 1
        name, vec = self.probes[(seq + GOOD_NODES.index(node) * 7) % len(self.probes)]
        self.expected[(node, seq)] = name
        self.client.publish(topics.embedding(node), embedding(node, seq, vec, self.model), 1)

    def run(self) -> None:
        turn = 0
        every = round(ODD_EVERY_S / GOOD_EVERY_S)
        while not self.halt.wait(GOOD_EVERY_S):
            for node in CALM:
                self.send(node)
            if turn % every == 0:
                for node in ODD:
                    self.send(node)
            turn += 1


@pytest.fixture
def rig(mosquitto: Mosquitto, gallery_dir: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    classifier = start(
        ["classifier", "--broker", mosquitto.url, "--dataset", str(gallery_dir)],
        tmp_path / "classifier.log",
    )
    port = free_port()
    monitor = start(
        ["monitor", "--broker", mosquitto.url, "--port", str(port),
         "--db", str(tmp_path / "monitor.sqlite3")],
        tmp_path / "monitor.log",
    )  # fmt: skip
    watcher = Watcher(mosquitto.url)
    try:
        yield {
            "classifier": classifier,
            "monitor": monitor,
            "http": f"http://127.0.0.1:{port}",
            "port": port,
            "watcher": watcher,
            "logs": tmp_path,
        }
    finally:
        for proc in (classifier, monitor):
            stop(proc)
        watcher.close()


def test_a_fuzz_run_leaves_both_services_up_and_every_good_message_answered(
    mosquitto: Mosquitto, rig: dict[str, Any], probes: tuple[list, str]
) -> None:
    probe_list, model = probes
    classifier, monitor, watcher = rig["classifier"], rig["monitor"], rig["watcher"]
    base = rig["http"]
    logs: Path = rig["logs"]
    problems: list[str] = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    # --- both up --------------------------------------------------------------------
    def online() -> bool:
        if classifier.poll() is not None:
            raise AssertionError(f"classifier exited: {(logs / 'classifier.log').read_text()}")
        return watcher.status.get("state") == "online" and bool(watcher.status.get("model"))

    wait_for(online, 90, "the classifier's online status")
    assert watcher.status["model"] == model, "the edge pipeline and the gallery differ"
    dim = int(watcher.status["gallery"]["dim"])

    def monitor_up() -> bool:
        if monitor.poll() is not None:
            raise AssertionError(f"monitor exited: {(logs / 'monitor.log').read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", rig["port"])) != 0:
                return False
        return bool(json.loads(http_get(f"{base}/healthz")[2])["broker"]["connected"])

    wait_for(monitor_up, 30, "the monitor, connected to the broker")

    good = BusClient(BrokerConfig(url=mosquitto.url), "fuzz-good").connect()
    hostile = BusClient(BrokerConfig(url=mosquitto.url), "fuzz-hostile").connect()
    try:
        # --- a calm baseline: which probes this gallery names as expected ----------------
        traffic = GoodTraffic(good, probe_list, model)
        # in bursts well below the classifier's queue (64 per node): a burst of all 88
        # probes at once lets a starved classifier drop the oldest, as it is meant to
        for start in range(0, len(probe_list), BASELINE_BURST):
            for _ in probe_list[start : start + BASELINE_BURST]:
                traffic.send(CALM[0])
            sent = dict(traffic.expected)
            try:
                wait_for(lambda sent=sent: all(k in watcher.results for k in sent), 30, "them")
            except AssertionError:
                missing = sorted(s for (_, s) in sent if (CALM[0], s) not in watcher.results)
                tail = (logs / "classifier.log").read_text()[-3000:]
                raise AssertionError(
                    f"no result for seqs {missing} of {len(sent)}; classifier log:\n{tail}"
                ) from None
        baseline = dict(traffic.expected)
        right = [
            probe_list[seq % len(probe_list)]  # the probe GoodTraffic.send sent as seq
            for (_, seq), name in baseline.items()
            if watcher.results[(CALM[0], seq)] == [name]
        ]
        assert len(right) >= 0.9 * len(probe_list), f"{len(right)} of {len(probe_list)} right"
        traffic.probes = right  # the fuzz run expects the right name for every one
        # the few the recognizer gets wrong even in calm are not the fuzz run's to judge
        misses = {k for k, name in baseline.items() if watcher.results[k] != [name]}

        # --- the payloads ---------------------------------------------------------------
        rng = random.Random(12)
        oracle = Oracle(model, dim)
        vec = right[0][1]
        evil = hostile_embeddings(rng, oracle, vec, model)
        bad_topic = hostile_topics(rng, vec, model)
        crowd = intruders(rng)
        for_monitor = hostile_json(rng)
        flood = evil + bad_topic + crowd + for_monitor
        rng.shuffle(flood)
        assert len(flood) >= 10_000
        want_reasons = Counter(oracle.reason(HOSTILE, p) for _, p in evil)
        want_bad_topics = sum(
            1 for t, _ in bad_topic if oracle.topic(t) is None and t not in UNMATCHED_TOPICS
        )
        want_malformed = sum(monitor_refuses(t, p) for t, p in for_monitor if "/event" not in t)

        # --- the run --------------------------------------------------------------------
        sampler = Sampler({"classifier": classifier.pid, "monitor": monitor.pid})
        sampler.sample()
        sampler.start()
        traffic.start()
        time.sleep(1.0)
        rss_before = {k: v[-1][1] for k, v in sampler.samples.items()}
        flood_started = time.time()
        chunk = 100
        during: list[tuple[str, int, int]] = []
        next_at = time.monotonic()
        for i in range(0, len(flood), chunk):
            for topic, payload in flood[i : i + chunk]:
                hostile.publish(topic, payload, qos=1)
            next_at += chunk / FLOOD_PER_S
            time.sleep(max(0.0, next_at - time.monotonic()))
            if i % 4000 == 0:  # the monitor answers during the flood
                for path in ("/healthz", "/nodes", "/log?limit=1000"):
                    code, _, body = http_get(base + path)
                    during.append((path, code, len(body)))
        assert hostile.flush(60), "the broker did not take every hostile message"
        flood_s = time.time() - flood_started

        # one more of each reason after a quiet second: its reply is due and must count
        # every refusal of that reason so far
        time.sleep(1.2)
        tally_from = time.time()
        last_of: dict[str, bytes] = {}
        for _, p in evil:
            last_of[oracle.reason(HOSTILE, p)] = p  # type: ignore[index]
        for reason, payload in last_of.items():
            hostile.publish(topics.embedding(HOSTILE), payload, qos=1)
            want_reasons[reason] += 1
        hostile.flush(10)
        time.sleep(2.0)  # good traffic after the flood
        traffic.halt.set()
        traffic.join(5)
        good.flush(10)
        expected = {**baseline, **traffic.expected}

        # --- what came back ---------------------------------------------------------------
        with contextlib.suppress(AssertionError):  # what is missing is counted below
            wait_for(lambda: all(k in watcher.results for k in expected), 30, "every result")
        want_rejected = sum(want_reasons.values()) + INTRUDERS

        def settled() -> bool:
            s = watcher.status
            return s.get("processed") == len(expected) and s.get("rejected") == want_rejected

        with contextlib.suppress(AssertionError):  # compared below
            wait_for(settled, 10, "the status to count everything")
        time.sleep(3.0)  # the tail: RSS after the flood, and the monitor catching up
        sampler.halt.set()
        sampler.join(2)
        sampler.sample()
    finally:
        good.close()
        hostile.close()

    # --- both still up --------------------------------------------------------------------
    check(classifier.poll() is None, f"the classifier exited ({classifier.returncode})")
    check(monitor.poll() is None, f"the monitor exited ({monitor.returncode})")

    # --- every good message answered, with the right name, once ---------------------------
    with watcher.lock:
        results = {k: list(v) for k, v in watcher.results.items()}
        errors = list(watcher.errors)
        status = dict(watcher.status)
    lost = sorted(k for k in expected if k not in results)
    wrong = {k: (expected[k], results[k]) for k in expected if k in results and k not in misses}
    wrong = {k: v for k, v in wrong.items() if v[1] != [v[0]] * len(v[1])}
    twice = {k: v for k, v in results.items() if len(v) > 1}
    per_node = Counter(n for n, _ in expected)
    check(not lost, f"{len(lost)} of {len(expected)} good messages lost: {lost[:10]}")
    check(not wrong, f"{len(wrong)} good messages misnamed: {list(wrong.items())[:10]}")
    check(not twice, f"{len(twice)} good messages answered more than once: {list(twice)[:10]}")
    good_errors = [e for e in errors if e["topic_node"] in GOOD_NODES]
    check(not good_errors, f"the good nodes were refused: {good_errors[:5]}")
    check(
        not watcher.undecodable_errors,
        f"error replies that do not decode: {watcher.undecodable_errors[:3]}",
    )

    # --- the status counts every refusal ----------------------------------------------
    by_node = status.get("rejected_by_node") or {}
    check(
        status.get("processed") == len(expected),
        f"status processed {status.get('processed')}, {len(expected)} good messages sent",
    )
    check(
        status.get("rejected") == want_rejected,
        f"status rejected {status.get('rejected')}, {want_rejected} refused "
        f"({sum(want_reasons.values())} from {HOSTILE}, {INTRUDERS} intruders)",
    )
    check(
        by_node.get(HOSTILE) == sum(want_reasons.values()),
        f"status rejected_by_node[{HOSTILE}] {by_node.get(HOSTILE)}, "
        f"{sum(want_reasons.values())} refused",
    )
    check(
        status.get("bad_topics") == want_bad_topics,
        f"status bad_topics {status.get('bad_topics')}, {want_bad_topics} sent",
    )
    check(
        not (status.get("dropped") or {}).get(HOSTILE),
        f"{HOSTILE} had messages queued: {status.get('dropped')}",
    )
    check(
        watcher.status_max_bytes <= STATUS_MAX_BYTES,
        f"the classifier's retained status grew to {watcher.status_max_bytes} bytes "
        f"({len(by_node)} nodes in rejected_by_node), limit {STATUS_MAX_BYTES}",
    )
    check(
        not watcher.undecodable_statuses,
        f"{len(watcher.undecodable_statuses)} classifier statuses do not decode as a "
        f"ClassifierStatus: {watcher.undecodable_statuses[:1]}",
    )

    # --- error replies: rate-limited per node and reason, each counting them all --------
    replies: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in errors:
        if e["topic_node"] not in GOOD_NODES:
            replies[(e["topic_node"], e["reason"])].append(e)
    run_s = time.time() - flood_started
    too_many = {}
    too_close = {}
    for key, got in replies.items():
        ts = sorted(e["ts"] for e in got)
        if len(got) > int(run_s) + 2:
            too_many[key] = len(got)
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        if gaps and min(gaps) < 0.95:
            too_close[key] = round(min(gaps), 3)
    check(not too_many, f"more than one reply a second: {dict(list(too_many.items())[:10])}")
    check(not too_close, f"replies closer than 1 s apart: {dict(list(too_close.items())[:10])}")
    evil_reasons = {r for (n, r) in replies if n == HOSTILE}
    check(
        evil_reasons == set(want_reasons),
        f"{HOSTILE} was told {sorted(evil_reasons)}, refused for {sorted(want_reasons)}",
    )
    for reason, n in want_reasons.items():
        final = [e for e in replies.get((HOSTILE, reason), []) if e["received"] >= tally_from]
        check(
            bool(final) and max(e["count"] for e in final) == n,
            f"the last {reason!r} reply counts {[e['count'] for e in final]}, {n} refused",
        )
    told = {n for (n, _) in replies if n.startswith("intruder-")}
    check(len(told) == INTRUDERS, f"{len(told)} of {INTRUDERS} intruders told why")

    # --- memory ----------------------------------------------------------------------
    rss_summary = {}
    for who, samples in sampler.samples.items():
        values = [mb for _, mb in samples]
        peak, last = max(values), values[-1]
        tail = values[-5:]
        rss_summary[who] = (round(rss_before[who]), round(peak), round(last))
        check(
            peak - rss_before[who] < RSS_GROWTH_MB,
            f"{who} RSS {rss_before[who]:.0f} → peak {peak:.0f} MB",
        )
        check(
            tail[-1] - tail[0] < STILL_CLIMBING_MB,
            f"{who} RSS still climbing after the flood: {[round(v) for v in tail]} MB",
        )

    # --- the monitor: answers, bounded, every good result logged, HTML as text --------
    for path, code, _size in during:
        check(code == 200, f"GET {path} during the flood: {code}")
    sizes = {}
    for path, limit in (
        ("/healthz", 64 * 1024),
        ("/nodes", NODES_MAX_BYTES),
        ("/log?limit=1000", LOG_MAX_BYTES),
        ("/log?limit=200&raw=1", LOG_MAX_BYTES),
        ("/errors?limit=1000", ERRORS_MAX_BYTES),
        ("/threshold_stats", 1024 * 1024),
    ):
        code, ctype, body = http_get(base + path)
        sizes[path] = len(body)
        check(code == 200, f"GET {path}: {code}")
        check(ctype.startswith("application/json"), f"GET {path}: {ctype}")
        check(len(body) <= limit, f"GET {path}: {len(body)} bytes, limit {limit}")
    health = json.loads(http_get(f"{base}/healthz")[2])
    check(
        health["malformed"] >= want_malformed,
        f"the monitor counted {health['malformed']} malformed, {want_malformed} sent",
    )
    check(health["writer"]["dropped"] == 0, f"the monitor's log dropped {health['writer']}")
    nodes = json.loads(http_get(f"{base}/nodes")[2])
    shown = nodes.get("classifier") or {}
    check(
        shown.get("processed") == status.get("processed"),
        f"the monitor shows the classifier at {shown.get('processed')} processed, "
        f"its status says {status.get('processed')}",
    )
    for node in GOOD_NODES:
        url = f"{base}/log?limit=1000&node={urllib.request.quote(node)}"
        rows = json.loads(http_get(url)[2])["detections"]
        logged = {r["seq"]: r["name"] for r in rows}
        mine = {seq: name for (n, seq), name in expected.items() if n == node}
        missing = sorted(set(mine) - set(logged))
        misnamed = [
            s for s in mine if s in logged and logged[s] != results.get((node, s), [None])[0]
        ]
        check(not missing, f"the monitor's log lacks {len(missing)} results of {node!r}")
        check(
            not misnamed,
            f"the monitor's log names {len(misnamed)} results of {node!r} "
            "otherwise than the classifier did",
        )
    for path in ("/", "/log/html", "/nodes/html", "/threshold_stats/html"):
        code, ctype, body = http_get(base + path)
        text = body.decode("utf-8", "replace")
        check(code == 200 and ctype.startswith("text/html"), f"GET {path}: {code} {ctype}")
        for raw in ("<img", "<iframe", "<svg", "onerror=", "alert(1)"):
            check(raw not in text, f"GET {path}: {raw!r} in the page")

    classifier_log = (logs / "classifier.log").read_bytes()
    monitor_log = (logs / "monitor.log").read_bytes()
    rates = {k: len(v) for k, v in replies.items() if k[0] == HOSTILE}
    report = (
        f"flood: {len(flood)} hostile messages in {flood_s:.1f} s ({len(evil)} damaged "
        f"embeddings of {HOSTILE}, {len(bad_topic)} on odd topics, {INTRUDERS} intruders, "
        f"{len(for_monitor)} for the monitor); {len(expected)} good messages of "
        f"{dict(per_node)}; refused by reason {dict(want_reasons)}; replies to {HOSTILE} "
        f"{rates} over {run_s:.1f} s; status {watcher.status_max_bytes} bytes at most; "
        f"RSS MB (before, peak, last) {rss_summary}; response bytes {sizes}; "
        f"logs: classifier {len(classifier_log)} bytes "
        f"({classifier_log.count(b'WARNING')} warnings), monitor {len(monitor_log)} bytes"
    )
    print(report)
    assert not problems, "\n".join([*problems, report])
