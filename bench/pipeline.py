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
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import (
    ROOT,
    Broker,
    emit,
    limit_faiss_threads,
    note,
    summary,
    synthetic_probes,
)
from facewire.bench.sim_nodes import SimNode, dataset_probes, run_nodes
from facewire.bench.under_test import (
    Watcher,
    serve,
    start_classifier,
    start_profiler,
    synthetic_model_id,
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
                    inside = n.timings[seq].get("total_classifier")
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
            for key in ("queue", "search", "total_classifier")
            for k, v in zip(
                (f"{key}_ms_p50", f"{key}_ms_p99"),
                _pcts([t[key] for t in timings if t.get(key) is not None]),
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
