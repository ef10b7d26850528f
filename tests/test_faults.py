"""Things broken on purpose (issue 12, items 4 and 5): the broker SIGKILLed and
restarted mid-stream, the classifier SIGKILLed and restarted, the monitor restarted.
Each time every embedding is answered afterwards, none classified twice, and the
monitor's log holds every row once.

Real parts: mosquitto processes (persistence on, in the test's folder), the classifier
and the monitor as ``facewire`` processes, an in-process edge (the real EdgeNode and
its outbox) publishing embeddings of real photos, made once by the face pipeline.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facewire import config
from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.messages import ClassifierStatus, Result
from facewire.bus.transport import Message
from facewire.config.schema import BrokerConfig, EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.sources import Frame, open_source
from facewire.models import Face, FacePipeline
from tests.broker import Mosquitto, free_port
from tests.conftest import DATASET, GALLERY_PEOPLE, ROOT
from tests.waiting import wait_for

#: embeddings per second the edge publishes
RATE = 20.0


def persistent_broker(folder: Path) -> Mosquitto:
    folder.mkdir(exist_ok=True)
    store = folder / "store"
    store.mkdir(exist_ok=True)
    extra = f"persistence true\npersistence_location {store}/\nautosave_interval 1\n"
    return Mosquitto(folder, extra=extra).start()


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def kill_broker(broker: Mosquitto) -> None:
    assert broker.proc is not None
    sigkill(broker.proc)
    broker.proc = None


class Classifier:
    """``facewire classifier`` as a process, restartable (same id: same session)."""

    def __init__(self, url: str, gallery: Path, log: Path) -> None:
        self.url, self.gallery, self.log = url, gallery, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}
        self.online = threading.Event()
        self.watcher = BusClient(BrokerConfig(url=url), "fault-watcher")
        self.watcher.subscribe(topics.CLASSIFIER_STATUS, self._on_status)
        self.watcher.connect(wait=False)

    def _on_status(self, m: Message) -> None:
        if not m.payload:
            return
        self.status = ClassifierStatus.decode(m.payload).as_dict()
        if self.status["state"] == "online" and self.proc is not None:
            self.online.set()

    def start(self) -> Classifier:
        self.online.clear()
        env = {**os.environ, "FACEWIRE_STATS_INTERVAL_S": "0.5"}
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "facewire", "classifier", "--dataset", str(self.gallery),
                 "--broker", self.url],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink,
            )  # fmt: skip
        return self

    def wait_online(self, timeout: float = 120.0) -> None:
        if not self.online.wait(timeout):
            raise AssertionError(f"the classifier did not come online: {self.log.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.online.clear()
        sigkill(self.proc)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.watcher.close()


@pytest.fixture(scope="module")
def faces() -> list[tuple[Frame, Face]]:
    """A face of each probe photo of the gallery's people, embedded once."""
    pipeline = FacePipeline(EdgeConfig().pipeline)
    out = []
    try:
        for person in GALLERY_PEOPLE:
            for frame in open_source(str(DATASET / "probes" / person), fps=0):
                found = pipeline.get(frame.image)
                if found:
                    out.append((frame, found[0]))
    finally:
        pipeline.close()
    assert len(out) >= 6
    return out


class Edge:
    """The real EdgeNode publishing the embeddings of ``faces`` at ``RATE`` on demand;
    every result it gets is counted per seq (with its classification time)."""

    def __init__(self, url: str, faces: list[tuple[Frame, Face]], node: str = "door") -> None:
        cfg = config.load(EdgeConfig, overrides={"node": node, "broker.url": url}, env={})
        cfg.status_interval_s = 0.5
        cfg.resend_after_s = 2.0
        self.faces = faces
        stub = _NoPipeline(faces[0][1].model_id)
        self.node = EdgeNode(cfg, BusClient(cfg.broker, f"edge-{node}"), pipeline=stub)  # type: ignore[arg-type]
        self.answers: dict[int, list[float | None]] = defaultdict(list)
        self.texts: dict[int, str] = {}
        self._lock = threading.Lock()
        self.node.on_result = self._keep
        self.node.start()

    def _keep(self, r: Result, latency_ms: float | None) -> None:
        with self._lock:
            self.answers[r.seq].append(r.classified_at)
            self.texts.setdefault(r.seq, r.encode())

    def produce(self, seconds: float) -> None:
        """Publish for ``seconds`` (whatever the broker's state)."""
        end = time.monotonic() + seconds
        i = self.node.seq
        while time.monotonic() < end:
            frame, face = self.faces[i % len(self.faces)]
            now = time.time()
            fresh = dataclasses.replace(
                frame, frame_id=i, captured_at=now, captured_perf=time.perf_counter()
            )
            self.node.publish(fresh, face)
            i += 1
            time.sleep(1.0 / RATE)

    def all_answered(self, timeout: float = 60.0) -> None:
        sent = self.node.seq

        def done() -> bool:
            with self._lock:
                return all(s in self.answers for s in range(1, sent + 1))

        try:
            wait_for(done, timeout, f"a result for each of {sent} embeddings")
        except AssertionError:
            with self._lock:
                missing = [s for s in range(1, sent + 1) if s not in self.answers]
            raise AssertionError(
                f"no result for {len(missing)} of {sent}: {missing[:20]}"
            ) from None

    def classified_twice(self) -> dict[int, list[float | None]]:
        """Seqs answered with more than one classification (a repeat answered from the
        classifier's recent answers carries the first one's time)."""
        with self._lock:
            return {s: v for s, v in self.answers.items() if len(set(v)) > 1}

    def close(self) -> None:
        self.node.close(drain_s=1.0)


class _NoPipeline:
    """The edge publishes faces embedded beforehand: its pipeline is never run."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def close(self) -> None:
        pass


@pytest.fixture
def rig(tmp_path: Path, gallery_dir: Path) -> Iterator[tuple[Mosquitto, Classifier]]:
    broker = persistent_broker(tmp_path / "broker")
    classifier = Classifier(broker.url, gallery_dir, tmp_path / "classifier.log").start()
    try:
        classifier.wait_online()
        yield broker, classifier
    finally:
        classifier.close()
        broker.stop()


def test_broker_sigkilled_mid_stream(rig, faces) -> None:
    broker, classifier = rig
    edge = Edge(broker.url, faces)
    try:
        edge.produce(2.0)
        kill_broker(broker)
        edge.produce(3.0)  # into the edge's buffer: the broker is gone
        assert edge.node.outbox.unsent > 0
        broker.start()
        edge.produce(2.0)
        edge.all_answered()
        assert edge.classified_twice() == {}
        wait_for(lambda: not len(edge.node.outbox), 10, "an empty outbox")
        dropped, resent, unanswered = edge.node.outbox.counts()
        assert dropped == 0 and unanswered == 0
        sent = edge.node.seq
        # the classifier lived through it: it classified each embedding exactly once
        wait_for(lambda: classifier.status.get("processed") == sent, 10, "processed == sent")
        time.sleep(1.0)
        assert classifier.status["processed"] == sent
    finally:
        edge.close()


def test_classifier_sigkilled_mid_stream(rig, faces, tmp_path) -> None:
    broker, classifier = rig
    edge = Edge(broker.url, faces)
    # a plain publisher, no outbox: only the classifier's persistent session keeps what
    # it sends while the classifier is down
    plain = BusClient(BrokerConfig(url=broker.url), "plain-sender")
    got: dict[int, int] = defaultdict(int)
    plain.subscribe(topics.result("porch"), lambda m: got.__setitem__(
        Result.decode(m.payload).seq, got[Result.decode(m.payload).seq] + 1))  # fmt: skip
    plain.connect()
    try:
        edge.produce(2.0)
        classifier.kill()
        edge.produce(1.0)
        frame, face = faces[0]
        for seq in range(1, 21):
            assert face.embedding is not None
            msg = codec.EmbeddingMessage(
                "porch", seq, seq, 0, face.box, face.model_id, time.time(), {},
                (face.quality.area, face.quality.blur, face.quality.brightness), face.embedding,
            )  # fmt: skip
            plain.publish(topics.embedding("porch"), codec.encode(msg), qos=1)
        edge.produce(2.0)
        classifier.start()
        edge.produce(1.0)
        classifier.wait_online()
        edge.produce(1.0)
        edge.all_answered()
        assert edge.classified_twice() == {}
        wait_for(lambda: len(got) == 20, 30, "answers to what was sent while it was down")
        assert sorted(got) == list(range(1, 21))
        dropped, resent, unanswered = edge.node.outbox.counts()
        assert dropped == 0 and unanswered == 0
    finally:
        plain.close()
        edge.close()


def test_monitor_restarted(rig, faces, tmp_path) -> None:
    broker, classifier = rig
    db = tmp_path / "log.sqlite3"
    port = free_port()

    def start_monitor() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facewire", "monitor", "--broker", broker.url,
             "--port", str(port), "--db", str(db)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def connected() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    data = json.loads(r.read())
            except urllib.error.HTTPError as exc:  # unhealthy is a 503 with the same body
                data = json.loads(exc.read() or b"{}")
            except OSError:
                return False
            return bool(data.get("broker", {}).get("connected"))

        wait_for(connected, 30, "the monitor connected")
        return proc

    def rows() -> list[tuple[str, int]]:
        if not db.exists():
            return []
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return [(n, s) for n, s in con.execute("SELECT node, seq FROM detections")]

    monitor = start_monitor()
    edge = Edge(broker.url, faces)
    try:
        edge.produce(1.5)
        edge.all_answered()
        before = edge.node.seq
        wait_for(lambda: len(rows()) >= before, 15, "the first rows logged")
        monitor.terminate()
        assert monitor.wait(15) == 0
        edge.produce(1.5)  # answered while the monitor is away
        edge.all_answered()
        monitor = start_monitor()
        sent = edge.node.seq
        assert sent > before
        wait_for(lambda: len(rows()) >= sent, 20, "every row in the log")
        # the same result delivered again (an answer repeated to an edge) is no new row
        resend = BusClient(BrokerConfig(url=broker.url), "repeater")
        resend.connect()
        resend.publish(topics.result("door"), edge.texts[1], qos=1).wait_for_publish(5)
        resend.close()
        time.sleep(1.0)
        logged = rows()
        assert sorted(logged) == [("door", s) for s in range(1, sent + 1)]
    finally:
        edge.close()
        if monitor.poll() is None:
            monitor.terminate()
            monitor.wait(15)
