"""``facewire bench pipeline``: publish → result latency through a real broker and classifier.

What it runs: its own mosquitto on a free loopback port; the classifier as a separate
process (``python -m facewire classifier`` on the dataset gallery, or a synthetic
gallery of N vectors of made-up people, 10 each), so it does not share a GIL with the simulated
nodes; and N simulated edge nodes in this process, each with its own MQTT connection,
publishing real embedding messages (``bus.codec``) at QoS 1 at ``--fps`` each, with
their phases spread over the frame period like independent cameras.

Each node subscribes to its own ``faces/<node>/result`` and times publish → result on
its own clock (``perf_counter`` taken just before ``publish``, and when the result
arrives in its handler). Vectors are real probe embeddings of the dataset (computed
once at start-up with the same pipeline as the gallery) or, with ``--synthetic``,
new "photos" of gallery people and strangers (``bench.common.synthetic_probes``).

Reported: latency p50/p95/p99/max, throughput, lost (sent − results received), the
classifier's own queue wait and search time (from each result's ``timings``) and its
retained status. ``--inprocess`` runs the classifier in this process instead (shares
the GIL with the nodes: compare the two).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import (
    ROOT,
    Broker,
    broker_config,
    child_env,
    emit,
    limit_faiss_threads,
    note,
    stop_process,
    summary,
    synthetic_gallery,
    synthetic_probes,
)

log = logging.getLogger("facewire.bench")

COLUMNS = [
    ("nodes", "nodes"),
    ("fps", "fps"),
    ("classifier", "classifier"),
    ("gallery", "gallery"),
    ("batch_max", "batch"),
    ("messages", "sent"),
    ("lost", "lost"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("throughput_per_s", "results/s"),
    ("queue_ms_p50", "queue p50"),
    ("queue_ms_p99", "queue p99"),
    ("search_ms_p50", "search p50"),
    ("search_ms_p99", "search p99"),
    ("classifier_ms_p50", "in-classifier p50"),
    ("transport_ms_p50", "transport p50"),
]

# -- the synthetic classifier (a child process) -------------------------------------------


def synthetic_index(n: int, dim: int, cfg: Any) -> Any:
    """A ``GalleryIndex`` on ``synthetic_gallery(n, dim)`` (10 vectors per identity)."""
    from facewire.classifier.search import Matcher
    from facewire.classifier.service import GalleryIndex

    vectors, labels = synthetic_gallery(n, dim)
    matcher = Matcher.from_config(vectors, labels, cfg.search)
    return GalleryIndex(
        matcher,
        synthetic_model_id(dim),
        len(set(labels)),
        n,
        f"synthetic-{n}x{dim}",
        None,
    )


def synthetic_model_id(dim: int) -> str:
    return f"synthetic-{dim}d"


def serve(argv: list[str]) -> int:
    """``python -m facewire.bench.pipeline _classifier``: ClassifierService on a synthetic gallery.

    The same service object and start/stop sequence as ``facewire classifier``; only
    the gallery is made up instead of read from a folder.
    """
    from facewire import config
    from facewire.classifier.service import ClassifierService
    from facewire.config.schema import ClassifierConfig

    p = argparse.ArgumentParser(prog="bench.pipeline _classifier")
    p.add_argument("--broker", required=True)
    p.add_argument("--synthetic", type=int, required=True)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch-max", type=int, default=64)
    p.add_argument("--client-id", default="bench-classifier")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load(
        ClassifierConfig,
        overrides={"broker.url": args.broker, "batch_max": args.batch_max},
        env={},
    )
    index = synthetic_index(args.synthetic, args.dim, cfg)
    service = ClassifierService(cfg, index, client_id=args.client_id).start()
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    service.wait()
    service.stop()
    return 0


# -- probe vectors ------------------------------------------------------------------------


def dataset_probes(model: str, limit: int = 96) -> tuple[np.ndarray, str]:
    """Real embeddings of dataset/probes and dataset/unknown photos, with the gallery's
    pipeline (so their model id is the gallery's)."""
    from facewire.classifier.gallery import read_image
    from facewire.models import FacePipeline, PipelineConfig

    files: list[Path] = []
    for sub in ("probes", "unknown"):
        files += sorted((ROOT / "dataset" / sub).rglob("*.jpg"))
    random.Random(0).shuffle(files)
    pipeline = FacePipeline(PipelineConfig(model=model))
    vecs = []
    try:
        for f in files:
            faces = pipeline.get(read_image(f))
            if faces:
                face = max(faces, key=lambda x: x.box[2] * x.box[3])
                vecs.append(face.embedding)
            if len(vecs) >= limit:
                break
        model_id = pipeline.model_id
    finally:
        pipeline.close()
    if not vecs:
        raise SystemExit("no face found in dataset/probes: cannot make probe embeddings")
    return np.stack(vecs).astype(np.float32), model_id


# -- simulated edge nodes ----------------------------------------------------------------


@dataclass
class SimNode:
    """One simulated edge node: its own connection, its own clock, its own results."""

    name: str
    url: str
    model_id: str
    vectors: np.ndarray
    offset: int
    bus: Any = None
    seq: int = 0
    sent: dict[int, float] = field(default_factory=dict)  # seq → perf_counter at publish
    latency_ms: dict[int, float] = field(default_factory=dict)  # seq → publish → result
    timings: dict[int, dict[str, float]] = field(default_factory=dict)  # seq → result timings
    last_at: float = 0.0  # perf_counter of the latest result
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> None:
        from facewire.bus import topics
        from facewire.bus.client import BusClient

        self.bus = BusClient(broker_config(self.url), f"bench-{self.name}")
        self.bus.subscribe(topics.result(self.name), self._on_result, qos=0)
        self.bus.connect()
        self._topic = topics.embedding(self.name)

    def send(self) -> None:
        from facewire.bus import codec

        t0 = time.perf_counter()
        self.seq += 1
        vec = self.vectors[(self.offset + self.seq) % len(self.vectors)]
        msg = codec.EmbeddingMessage(
            node=self.name,
            seq=self.seq,
            frame_id=self.seq,
            face_index=0,
            bbox=(220, 140, 200, 200),
            model_id=self.model_id,
            captured_at=time.time(),
            stages={"encode": 0.0},
            quality=(40000.0, 150.0, 120.0),
            vector=vec,
        )
        msg.stages["encode"] = (time.perf_counter() - t0) * 1000.0
        payload = codec.encode(msg)
        now = time.perf_counter()
        with self.lock:
            self.sent[self.seq] = now
        self.bus.publish(self._topic, payload, qos=1)

    def _on_result(self, m: Any) -> None:
        now = time.perf_counter()
        result = json.loads(m.payload)
        seq = int(result["seq"])
        with self.lock:
            t0 = self.sent.get(seq)
            if t0 is None or seq in self.latency_ms:
                return
            self.latency_ms[seq] = (now - t0) * 1000.0
            self.timings[seq] = result.get("timings", {})
            self.last_at = now

    def outstanding(self) -> int:
        with self.lock:
            return len(self.sent) - len(self.latency_ms)

    def close(self) -> None:
        if self.bus is not None:
            self.bus.close()


def run_nodes(
    nodes: list[SimNode], fps: float, seconds: float, stop: threading.Event
) -> tuple[float, float]:
    """Each node publishes at ``fps`` for ``seconds``, phases spread over one period."""
    period = 1.0 / fps
    start = time.perf_counter() + 0.2
    end = start + seconds

    def loop(i: int, node: SimNode) -> None:
        next_at = start + period * i / len(nodes)
        while not stop.is_set():
            now = time.perf_counter()
            if next_at >= end:
                return
            if next_at > now:
                time.sleep(next_at - now)
            node.send()
            next_at += period

    threads = [
        threading.Thread(target=loop, args=(i, n), name=f"sim-{n.name}", daemon=True)
        for i, n in enumerate(nodes)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return start, time.perf_counter()


# -- the classifier: child process or in-process -----------------------------------------------


class Watcher:
    """Follows the classifier's retained status and every ``…/error`` notice."""

    def __init__(self, url: str) -> None:
        from facewire.bus import topics
        from facewire.bus.client import BusClient

        self.status: dict[str, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.bus = BusClient(broker_config(url), "bench-watch")
        self.bus.subscribe(topics.CLASSIFIER_STATUS, self._on_status, qos=1)
        self.bus.subscribe(topics.ERRORS, self._on_error, qos=0)
        self.bus.connect()

    def _on_status(self, m: Any) -> None:
        try:
            status = json.loads(m.payload)
        except ValueError:
            return
        with self.changed:
            self.status = status
            self.changed.notify_all()

    def _on_error(self, m: Any) -> None:
        with contextlib.suppress(ValueError):
            self.errors.append(json.loads(m.payload))

    def wait_status(self, cond: Any, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (self.status and cond(self.status)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(min(remaining, 0.5))
            return dict(self.status)

    def close(self) -> None:
        self.bus.close()


@dataclass
class Classifier:
    proc: subprocess.Popen[bytes] | None = None
    service: Any = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.service is not None:
            self.service.stop()


def start_classifier(args: argparse.Namespace, url: str) -> Classifier:
    if args.inprocess:
        from facewire import config
        from facewire.classifier.service import ClassifierService
        from facewire.config.schema import ClassifierConfig

        cfg = config.load(
            ClassifierConfig,
            overrides={
                "broker.url": url,
                "batch_max": args.batch_max,
                "dataset": args.gallery,
                "pipeline.model": args.model,
            },
            env={},
        )
        if args.synthetic:
            index = synthetic_index(args.synthetic, args.dim, cfg)
        else:
            from facewire.classifier.__main__ import load_index

            index = load_index(cfg, progress=False)
        return Classifier(service=ClassifierService(cfg, index, "bench-classifier").start())
    if args.synthetic:
        cmd = [
            sys.executable,
            "-m",
            "facewire.bench.pipeline",
            "_classifier",
            "--broker",
            url,
            "--synthetic",
            str(args.synthetic),
            "--dim",
            str(args.dim),
            "--batch-max",
            str(args.batch_max),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "facewire",
            "classifier",
            "--broker",
            url,
            "--dataset",
            str(args.gallery),
            "--model",
            args.model,
            "--client-id",
            "bench-classifier",
        ]
    env = child_env(FACEWIRE_BATCH_MAX=str(args.batch_max), FACEWIRE_LOG="WARNING")
    if args.faiss_threads > 0:
        env["OMP_NUM_THREADS"] = str(args.faiss_threads)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return Classifier(proc=proc)


def start_profiler(args: argparse.Namespace, classifier: Classifier) -> Any:
    """``--profile FILE``: py-spy samples the classifier for the measured seconds."""
    if not args.profile:
        return None
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    pid = classifier.proc.pid if classifier.proc is not None else os.getpid()
    fmt = "speedscope" if args.profile.endswith(".json") else "raw"
    if args.profile.endswith(".svg"):
        fmt = "flamegraph"
    cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--duration"]
    cmd += [str(max(1, round(args.seconds))), "--format", fmt, "-o", args.profile]
    note(f"profiling pid {pid} → {args.profile}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- the run ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench pipeline",
        description="publish → result latency: own mosquitto, a classifier process, N "
        "simulated edge nodes publishing real embedding messages at QoS 1.",
    )
    p.add_argument("--nodes", type=int, default=8, help="simulated edge nodes (default 8)")
    p.add_argument("--fps", type=float, default=15.0, help="messages/s per node (default 15)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration (default 20)")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--gallery",
        default=str(ROOT / "dataset" / "gallery"),
        help="gallery folder (default dataset/gallery; embeddings cached)",
    )
    g.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="made-up gallery: N vectors, 10 per person",
    )
    p.add_argument("--dim", type=int, default=512, help="--synthetic vector size (default 512)")
    p.add_argument("--model", default="sface", help="embedder of the dataset gallery")
    p.add_argument(
        "--batch-max", type=int, default=64, help="classifier micro-batch (1 = off; default 64)"
    )
    p.add_argument(
        "--inprocess",
        action="store_true",
        help="run the classifier in this process (shares the GIL with the nodes)",
    )
    p.add_argument(
        "--broker-nagle",
        action="store_true",
        help="leave mosquitto's set_tcp_nodelay off (its default) to see what it costs",
    )
    p.add_argument(
        "--faiss-threads",
        type=int,
        default=0,
        help="OpenMP threads for FAISS in the classifier (OMP_NUM_THREADS; 0 = its default)",
    )
    p.add_argument(
        "--profile",
        default="",
        metavar="FILE",
        help="py-spy record the classifier during the run (.svg, .json speedscope, else raw)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent before measuring")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.synthetic:
        model_id = synthetic_model_id(args.dim)
        probes = synthetic_probes(args.synthetic, args.dim)
        gallery = f"synthetic {args.synthetic}x{args.dim}"
    else:
        note("computing probe embeddings from dataset/probes …")
        probes, model_id = dataset_probes(args.model)
        gallery = f"{Path(args.gallery).name} ({args.model})"

    with Broker(nodelay=not args.broker_nagle) as broker:
        watcher = Watcher(broker.url)
        classifier = start_classifier(args, broker.url)
        nodes: list[SimNode] = []
        try:
            ready = None
            deadline = time.monotonic() + 600  # a cold dataset gallery is embedded first
            while ready is None and time.monotonic() < deadline:
                if classifier.proc is not None and classifier.proc.poll() is not None:
                    raise SystemExit(f"the classifier exited with {classifier.proc.returncode}")
                ready = watcher.wait_status(
                    lambda s: s.get("state") == "online" and s.get("model") == model_id, 1.0
                )
            if ready is None:
                raise SystemExit(
                    f"the classifier did not come online with model {model_id} "
                    f"(last status: {watcher.status})"
                )
            note(
                f"classifier online: {ready['gallery']['vectors']} vectors, model {model_id}; "
                f"{args.nodes} nodes × {args.fps:g} fps for {args.seconds:g} s"
            )
            nodes = [
                SimNode(f"sim{i:02d}", broker.url, model_id, probes, offset=i * 7)
                for i in range(args.nodes)
            ]
            for n in nodes:
                n.connect()
            stop = threading.Event()
            if args.warmup > 0:
                run_nodes(nodes, args.fps, args.warmup, stop)
                wait_results(nodes, 5.0)
            warm = {n.name: set(n.sent) for n in nodes}
            profiler = start_profiler(args, classifier)
            started, ended = run_nodes(nodes, args.fps, args.seconds, stop)
            if profiler is not None:
                profiler.wait(30)
            drained = wait_results(nodes, 10.0)
            after = time.time()
            status = watcher.wait_status(lambda s: s.get("ts", 0) > after, 5.0) or watcher.status
        finally:
            for n in nodes:
                n.close()
            classifier.stop()
            watcher.close()

    lat: list[float] = []
    timings: list[dict[str, float]] = []
    transport: list[float] = []  # publish → result minus the time inside the classifier
    sent = received = 0
    for n in nodes:
        with n.lock:
            for seq in n.sent:
                if seq in warm[n.name]:
                    continue
                sent += 1
                if seq in n.latency_ms:
                    received += 1
                    lat.append(n.latency_ms[seq])
                    timings.append(n.timings[seq])
                    inside = n.timings[seq].get("total_classifier_ms")
                    if inside is not None:
                        transport.append(n.latency_ms[seq] - inside)
    warm_lost = sum(len(w - set(n.latency_ms)) for n, w in zip(nodes, warm.values(), strict=True))
    last = max((n.last_at for n in nodes), default=drained)
    elapsed = max(last - started, 1e-9)
    row: dict[str, Any] = {
        "bench": "pipeline",
        "nodes": args.nodes,
        "fps": args.fps,
        "seconds": args.seconds,
        "classifier": "in-process" if args.inprocess else "process",
        "gallery": gallery,
        "gallery_vectors": (status.get("gallery") or {}).get("vectors"),
        "model": model_id,
        "batch_max": args.batch_max,
        "broker_nodelay": not args.broker_nagle,
        "faiss_threads": args.faiss_threads or None,
        "messages": sent,
        "received": received,
        "lost": sent - received + warm_lost,
        "errors": len(watcher.errors),
        **summary(lat),
        "throughput_per_s": round(received / elapsed, 1),
        "offered_per_s": round(args.nodes * args.fps, 1),
        **{
            k: v
            for key in ("queue_ms", "search_ms", "total_classifier_ms")
            for k, v in zip(
                (f"{key}_p50", f"{key}_p99"),
                _pcts([t[key] for t in timings if key in t]),
                strict=True,
            )
        },
        "classifier_status": {
            k: status.get(k) for k in ("processed", "dropped", "rejected", "timings")
        },
        "send_window_s": round(ended - started, 3),
    }
    row["classifier_ms_p50"] = row.pop("total_classifier_ms_p50")
    row["classifier_ms_p99"] = row.pop("total_classifier_ms_p99")
    row["transport_ms_p50"], row["transport_ms_p99"] = _pcts(transport)
    return row


def _pcts(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(np.asarray(values, float), [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


def wait_results(nodes: list[SimNode], timeout: float) -> float:
    """Wait until every node has its results (or ``timeout``); when the last arrived."""
    deadline = time.monotonic() + timeout
    while any(n.outstanding() for n in nodes) and time.monotonic() < deadline:
        time.sleep(0.02)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_classifier":
        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    if args.inprocess:
        limit_faiss_threads(args.faiss_threads)  # before anything imports faiss
    if args.nodes < 1 or args.fps <= 0 or args.seconds <= 0:
        raise SystemExit("--nodes, --fps and --seconds must be positive")
    row = run(args)
    notes = [
        f"target: {args.nodes} nodes × {args.fps:g} fps publish → result p99 ≤ 5 ms, 0 lost: "
        + ("met" if (row["p99_ms"] or 1e9) <= 5.0 and row["lost"] == 0 else "NOT met")
        if args.nodes == 8 and args.fps == 15
        else "target is defined for 8 nodes × 15 fps"
    ]
    emit("pipeline", [row], COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
