"""``facewire bench classifier``: the classifier alone, fed as fast as it can take it.

No network on the way in: pre-encoded embedding messages go through the service's own
delivery-thread handler (``ClassifierService.handle``: topic, decode, checks,
``FairQueues.put``) from a feeder thread, while the service's own worker thread
(``start_workers``: ``queues.take(batch_max)`` + ``classify``) runs with its
``BusClient`` connected to a private mosquitto: building the result JSON and
publishing it (QoS 0) is part of the measured cost, as in production. The feeder
stops at a bounded backlog (never more than the per-node queues hold, so nothing is
dropped) and the clock stops when the last result has left paho's send queue. CPU
time per message is reported for the feeder and the worker.

Galleries: ``bench.common.synthetic_gallery`` (made-up people, 10 vectors each;
512-d like CLIP, 128-d like SFace) with the service's default index for the size, or
``--index``. Queries: half new "photos" of gallery people, half strangers. Each row
also says how the index's answers compare with an exact search of the same queries.
Micro-batching on (``batch_max`` 32) and off (1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import (
    RESULTS,
    SYNTHETIC_PER_ID,
    Broker,
    emit,
    note,
    synthetic_gallery,
    synthetic_probes,
)
from facewire.bench.under_test import synthetic_model_id

COLUMNS = [
    ("dim", "dim"),
    ("gallery", "gallery"),
    ("index", "index"),
    ("batch_max", "batch"),
    ("replicas", "replicas"),
    ("embeddings_per_s", "embeddings/s"),
    ("mean_batch", "mean batch"),
    ("net_us", "network µs/msg"),
    ("worker_us", "worker µs/msg"),
    ("search_us", "search µs/msg"),
    ("recall_at_1", "recall@1"),
    ("same_answer_known", "same answer (known)"),
    ("strangers_named", "strangers named"),
    ("strangers_named_exact", "… exact"),
    ("dropped", "dropped"),
    ("messages", "messages"),
]

NODES = 8


def make_matcher(
    n: int, dim: int, cfg: Any, cache_dir: Path | None, probes: np.ndarray
) -> tuple[Any, float, dict[str, float]]:
    """The service's ``Matcher`` on ``synthetic_gallery(n, dim)``, its build time in s
    (-1: read from the cache) and how its answers compare with an exact search.

    Non-flat indexes take a while to build at 100k on a small machine, so they are
    kept in ``cache_dir`` when given (same vectors every time).
    """
    import faiss

    from facewire.classifier.search import Matcher, index_kind, make_index, tune

    vectors, labels = synthetic_gallery(n, dim)
    s = cfg.search
    kind = index_kind(n, s)
    path = cache_dir / f"{kind}-{n}x{dim}-v3.faiss" if (kind != "flat" and cache_dir) else None
    t0 = time.perf_counter()
    if path is not None and path.exists():
        index, built = tune(faiss.read_index(str(path)), s), -1.0
    else:
        index = make_index(vectors, s)
        built = time.perf_counter() - t0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(index, str(path))
    matcher = Matcher(vectors, labels, s.k, s.threshold, index=index)
    return matcher, built, agreement(matcher, vectors, labels, probes)


def agreement(
    matcher: Any, vectors: np.ndarray, labels: list[str], probes: np.ndarray
) -> dict[str, float]:
    """recall@1 against an exact search (known half of the probes) and the share of
    probes that get the same answer (name or unknown) as with an exact search."""
    from facewire.classifier.search import Matcher
    from facewire.config.schema import SearchConfig

    exact = Matcher(vectors, labels, matcher.k, matcher.threshold, SearchConfig(index="flat"))
    a, b = matcher.match(probes), exact.match(probes)
    known = len(probes) // 2
    same_nearest = (a.codes[:known, 0] == b.codes[:known, 0]).mean()
    name_a = np.where(a.known, a.winner, -1)
    name_b = np.where(b.known, b.winner, -1)
    return {
        "recall_at_1": round(float(same_nearest), 4),
        "same_answer_known": round(float((name_a[:known] == name_b[:known]).mean()), 4),
        # a random stranger can come close to someone in a big low-dimensional
        # gallery: exact search names some of them (false accepts) too
        "strangers_named": round(float((name_a[known:] >= 0).mean()), 4),
        "strangers_named_exact": round(float((name_b[known:] >= 0).mean()), 4),
    }


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds ``thread`` has used so far (Linux/Unix per-thread clock)."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class Feed:
    """The messages fed, each once: the classifier answers a message it has seen
    (same node, seq and capture time) from its recent answers without classifying it,
    so replaying one would measure the cache, not the classifier."""

    def __init__(self, payloads: list[tuple[str, bytes]]) -> None:
        from facewire.bus.transport import Message

        self.messages = [Message(topic, payload, False, 1) for topic, payload in payloads]
        self.at = 0

    def take(self) -> Any:
        """The next message, or ``None`` when all were fed."""
        if self.at >= len(self.messages):
            return None
        self.at += 1
        return self.messages[self.at - 1]


def measure(service: Any, feed: Feed, seconds: float) -> dict[str, Any]:
    """Feed messages from ``feed`` for ``seconds`` (or until it runs out) to a service
    whose worker threads run (``start_workers``); how many results went out, and what
    each thread spent."""
    capacity = service.cfg.queue_size * NODES // 2
    stop = threading.Event()
    fed = [0]
    cpu: dict[str, float] = {}
    calls = [0]
    search_s = [0.0]
    matcher = service.index.matcher
    original_match = matcher.match

    def timed_match(q: np.ndarray) -> Any:
        t0 = time.perf_counter()
        try:
            return original_match(q)
        finally:
            search_s[0] += time.perf_counter() - t0
            calls[0] += 1

    matcher.match = timed_match  # instance attribute: this service's matcher only
    start_processed = service.processed
    ran_out = [False]

    def feeder() -> None:
        # never more in flight than the fair queues hold: nothing is dropped
        t0 = time.thread_time()
        i = 0
        while not stop.is_set():
            if i - (service.processed - start_processed) >= capacity:
                time.sleep(0.0002)
                continue
            m = feed.take()
            if m is None:
                ran_out[0] = True
                break
            service.handle(m)
            i += 1
        fed[0] = i
        cpu["net"] = time.thread_time() - t0

    workers = {t.name: t for t in service.threads}
    before = {name: thread_cpu_s(t) for name, t in workers.items()}
    feeder_thread = threading.Thread(target=feeder, name="feeder")
    t_start = time.perf_counter()
    feeder_thread.start()
    feeder_thread.join(seconds)
    stop.set()
    feeder_thread.join()
    deadline = time.monotonic() + 30
    while service.processed - start_processed < fed[0] and time.monotonic() < deadline:
        time.sleep(0.0005)
    # results still in the client's send queue have not been "delivered" yet
    while service.bus.unsent and time.monotonic() < deadline:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - t_start
    for name, t in workers.items():
        cpu[name] = thread_cpu_s(t) - before[name]
    matcher.match = original_match
    processed = service.processed - start_processed
    per_msg = 1e6 / max(processed, 1)
    return {
        "messages": processed,
        "fed": fed[0],
        "embeddings_per_s": round(processed / elapsed, 1),
        "mean_batch": round(processed / max(calls[0], 1), 2),
        "net_us": round(cpu["net"] / max(fed[0], 1) * 1e6, 1),
        "worker_us": round(cpu.get("classifier-worker", 0.0) * per_msg, 1),
        "search_us": round(search_s[0] * per_msg, 1),
        "dropped": sum(service.queues.drops().values()),
        "rejected": sum(service.refusals.by_node().values()),
        "elapsed_s": round(elapsed, 3),
        "ran_out": ran_out[0],
    }


def run_service(
    cfg: Any, index: Any, payloads: list[tuple[str, bytes]], seconds: float, tag: str = ""
) -> dict[str, Any]:
    """One ``ClassifierService`` with its own threads: warm up, then ``measure``."""
    from facewire.bus.client import BusClient
    from facewire.classifier.service import ClassifierService

    service = ClassifierService(cfg, index, BusClient(cfg.broker, f"bench-classifier{tag}"))
    service.bus.connect()
    service.start_workers(stats=False)
    feed = Feed(payloads)
    try:
        # warm-up: first FAISS calls, first JSON dumps, socket buffers
        measure(service, feed, min(0.3, seconds))
        return measure(service, feed, seconds)
    finally:
        service.stop()


def _replica(
    i: int, cfg: Any, size: int, dim: int, cache: Path | None, seconds: float, start: Any, out: Any
) -> None:
    """One replica process: its own index (from the cache), service and feeder."""
    from facewire.classifier.service import GIL_SWITCH_INTERVAL_S, GalleryIndex

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # a process of its own, as in production

    probes = synthetic_probes(size, dim)
    matcher, _, _ = make_matcher(size, dim, cfg, cache, probes)
    index = GalleryIndex(matcher, synthetic_model_id(dim), -(-size // SYNTHETIC_PER_ID), size, "")
    sealers = None
    if cfg.sealing.enabled:  # the keys bench_keys made, read from the folder
        from facewire.bus.keys import KeyRing
        from facewire.bus.sealing import Sealer

        ring = KeyRing(Path(cfg.sealing.keys))
        box = ring.classifier_box_public()
        sealers = {f"node{n}": Sealer(ring.node_signing_key(f"node{n}"), box) for n in range(NODES)}
    payloads = encode_payloads(index.model_id, probes, int(MAX_RATE * (seconds + 0.3)), sealers)
    start.wait()  # every replica measures at the same time
    out.put(run_service(cfg, index, payloads, seconds, tag=f"-{i}"))


def run_replicas(
    n: int, cfg: Any, size: int, dim: int, cache: Path | None, seconds: float
) -> dict[str, Any]:
    """``n`` classifier processes at once, like replicas behind a shared subscription
    (each gets its own share of the messages): their embeddings/s add up."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork after FAISS's OpenMP started
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_replica, args=(i, cfg, size, dim, cache, seconds, start, out))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    rows = [out.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join(30)
    total = sum(r["embeddings_per_s"] for r in rows)
    mean = {k: round(sum(r[k] for r in rows) / n, 1) for k in rows[0] if k.endswith("_us")}
    return {
        **mean,
        "messages": sum(r["messages"] for r in rows),
        "fed": sum(r["fed"] for r in rows),
        "embeddings_per_s": round(total, 1),
        "per_replica": [r["embeddings_per_s"] for r in rows],
        "mean_batch": round(sum(r["mean_batch"] for r in rows) / n, 2),
        "dropped": sum(r["dropped"] for r in rows),
        "rejected": sum(r["rejected"] for r in rows),
        "elapsed_s": max(r["elapsed_s"] for r in rows),
    }


#: The most embeddings/s a run is expected to reach: messages are made for this rate
#: (each is fed once, see ``Feed``).
MAX_RATE = 25_000


def encode_payloads(
    model_id: str, probes: np.ndarray, count: int = 2048, sealers: dict[str, Any] | None = None
) -> list[tuple[str, bytes]]:
    """``count`` embedding messages from ``NODES`` nodes, as an edge would send them
    (sealed to the classifier with ``sealers``: node → ``bus.sealing.Sealer``)."""
    from facewire.bus import codec, topics

    out = []
    now = time.time()
    for i in range(count):
        node = f"node{i % NODES}"
        msg = codec.EmbeddingMessage(
            node=node,
            seq=i // NODES + 1,
            frame_id=i // NODES,
            face_index=0,
            bbox=(220, 140, 200, 200),
            model_id=model_id,
            captured_at=now,
            stages={"capture": 1.0, "detect": 4.0, "mesh": 6.0, "align": 0.3, "embed": 10.0},
            quality=(40000.0, 150.0, 120.0),
            vector=probes[i % len(probes)],
        )
        payload = codec.encode(msg)
        if sealers is not None:
            payload = sealers[node].seal(payload)
        out.append((topics.embedding(node), payload))
    return out


def bench_keys(folder: Path) -> dict[str, Any]:
    """A key folder with the classifier's keys and one per bench node; their sealers."""
    from facewire.bus.keys import KeyRing
    from facewire.bus.sealing import Sealer

    ring = KeyRing(folder)
    ring.ensure_classifier()
    box = ring.classifier_box_public()
    return {f"node{i}": Sealer(ring.make_node(f"node{i}"), box) for i in range(NODES)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench classifier",
        description="The classifier alone (decode → fair queues → FAISS → result JSON → "
        "publish), fed as fast as possible: embeddings/s by gallery size.",
    )
    p.add_argument("--sizes", default="1000,10000,100000", help="gallery sizes (comma list)")
    p.add_argument("--dims", default="512,128", help="vector sizes (CLIP 512, SFace 128)")
    p.add_argument("--batch", default="64,1", help="batch_max values (1 = no micro-batching)")
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    p.add_argument(
        "--index",
        choices=["auto", "flat", "ivf", "hnsw"],
        default="auto",
        help="FAISS index (default auto: what the service picks for the gallery size)",
    )
    p.add_argument(
        "--faiss-threads",
        type=int,
        default=0,
        help="FAISS threads of the search thread (default: the service's search.threads, 1)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="build IVF/HNSW indexes afresh (cached in bench/results/cache otherwise)",
    )
    p.add_argument("--nprobe", type=int, default=None, help="ivf: cells scanned per query")
    p.add_argument("--ef-search", type=int, default=None, help="hnsw: candidates per query")
    p.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="classifier processes measured at once, as behind a shared subscription (default 1)",
    )
    p.add_argument(
        "--no-tracks",
        action="store_true",
        help="classify without decisions over tracks (to see what following faces costs)",
    )
    p.add_argument(
        "--result-qos",
        type=int,
        choices=[0, 1],
        default=None,
        help="MQTT QoS of the results (default: the service's result_qos, 1)",
    )
    p.add_argument(
        "--sealed",
        action="store_true",
        help="sealed embeddings in, signed results out (sealing.enabled), to see what it costs",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from facewire import config
    from facewire.classifier.search import describe
    from facewire.classifier.service import GIL_SWITCH_INTERVAL_S
    from facewire.config.schema import ClassifierConfig

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # what the classifier's main sets
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dims = [int(s) for s in args.dims.split(",") if s]
    batch_maxes = [int(s) for s in args.batch.split(",") if s]
    logging.getLogger("facewire.classifier").setLevel(logging.WARNING)
    knobs = {
        k: v
        for k, v in {"search.nprobe": args.nprobe, "search.ef_search": args.ef_search}.items()
        if v is not None
    }
    if args.no_tracks:
        knobs["track.enabled"] = False
    if args.result_qos is not None:
        knobs["result_qos"] = args.result_qos
    if args.faiss_threads > 0:
        knobs["search.threads"] = args.faiss_threads
    rows: list[dict[str, Any]] = []
    count = int(MAX_RATE * (args.seconds + 0.3))
    sealers = None
    keys = tempfile.TemporaryDirectory(prefix="facewire-bench-keys-")
    if args.sealed:
        sealers = bench_keys(Path(keys.name))
        knobs |= {"sealing.enabled": True, "sealing.keys": keys.name, "sealing.window_s": 3600.0}
    with keys, Broker() as broker:
        for dim in dims:
            for size in sizes:
                base = config.load(
                    ClassifierConfig,
                    overrides={"broker.url": broker.url, "search.index": args.index, **knobs},
                    env={},
                )
                cache = None if args.no_cache else RESULTS / "cache"
                note(f"building a {size} × {dim} gallery index …")
                probes = synthetic_probes(size, dim)
                matcher, built, quality = make_matcher(size, dim, base, cache, probes)
                from facewire.classifier.service import GalleryIndex

                index = GalleryIndex(
                    matcher, synthetic_model_id(dim), -(-size // SYNTHETIC_PER_ID), size, "bench"
                )
                note(f"making {count:,} messages{' (sealed)' if sealers else ''} …")
                payloads = encode_payloads(index.model_id, probes, count, sealers)
                for batch_max in batch_maxes:
                    cfg = config.load(
                        ClassifierConfig,
                        overrides={
                            "broker.url": broker.url,
                            "batch_max": batch_max,
                            "search.index": args.index,
                            **knobs,
                        },
                        env={},
                    )
                    if args.replicas > 1:
                        r = run_replicas(args.replicas, cfg, size, dim, cache, args.seconds)
                    else:
                        r = run_service(cfg, index, payloads, args.seconds)
                    row = {
                        "bench": "classifier",
                        "dim": dim,
                        "gallery": size,
                        "index": describe(matcher.index),
                        "batch_max": batch_max,
                        "replicas": args.replicas,
                        **r,
                        **quality,
                        "index_build_s": round(built, 2) if built >= 0 else None,
                        "faiss_threads": args.faiss_threads or None,
                        "seconds": args.seconds,
                        "sealed": args.sealed,
                    }
                    rows.append(row)
                    note(
                        f"  dim {dim} gallery {size} batch {batch_max}: "
                        f"{row['embeddings_per_s']:,.0f} embeddings/s"
                    )
    ten_k = [r for r in rows if r["gallery"] == 10_000 and r["batch_max"] > 1]
    notes = []
    for r in ten_k:
        verdict = "met" if r["embeddings_per_s"] >= 20_000 else "NOT met"
        notes.append(
            f"target ≥ 20,000 embeddings/s at 10k ({r['dim']}-d, batch {r['batch_max']}): {verdict}"
        )
    emit("classifier", rows, COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
