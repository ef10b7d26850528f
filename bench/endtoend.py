"""``facewire bench e2e``: how long until the name appears, with every real part running.

What it runs, each as its own process like a deployment: a private mosquitto, ``facewire
classifier`` on ``dataset/gallery``, and N ``facewire edge`` nodes replaying camera-like
640×480 JPEG frames (one probe photo of a gallery person each, ``bench.frames``) at
``--fps``, with dedup off so every frame's face is sent. The bench subscribes to the
results like the monitor does.

Measured per result, all on this machine's clock (one machine, so the edge's
``captured_at`` and the bench's receive time share it):

- *capture → result*: the frame was read by the edge → its result arrived here, i.e.
  the name is on the wire for the monitor, a door lock or Home Assistant;
- its parts: the edge's stages (read + decode, detect, mesh, align, embed, encode:
  each result's ``timings``), the classifier's (arrival → result sent), and the rest
  (*wire*: the edge's publish call, two broker hops, both clients' network threads);
- the edge's own figure: the p50/p99 its retained status reports (capture → result
  received back at the edge, on its own clock).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewire.bench.common import (
    ROOT,
    Broker,
    child_env,
    emit,
    note,
    percentiles,
    stop_process,
    summary,
)
from facewire.bench.frames import compose_frame
from facewire.bus.messages import EDGE_STAGES, ClassifierStatus, EdgeStatus, Result
from facewire.models.files import list_photos

COLUMNS = [
    ("model", "model"),
    ("detector", "detector"),
    ("mesh_runtime", "mesh"),
    ("nodes", "nodes"),
    ("fps", "fps"),
    ("results", "results"),
    ("named", "named"),
    ("p50_ms", "capture → result p50"),
    ("p95_ms", "p95"),
    ("p99_ms", "p99"),
    *[(f"{s}_p50_ms", f"{s} p50") for s in EDGE_STAGES],
    ("classifier_p50_ms", "classifier p50"),
    ("wire_p50_ms", "wire p50"),
    ("edge_status_p50_ms", "edge status p50"),
    ("edge_status_p99_ms", "edge status p99"),
]


def write_frames(directory: Path, count: int) -> int:
    """``count`` JPEG frames, each with one probe photo of a different gallery person."""
    people = sorted(p for p in (ROOT / "dataset" / "probes").iterdir() if p.is_dir())
    written = 0
    for i in range(count):
        person = people[i % len(people)]
        photos = list_photos(person)
        frame = compose_frame([photos[(i // len(people)) % len(photos)]])
        cv2.imwrite(str(directory / f"{i:03d}-{person.name}.jpg"), frame)
        written += 1
    return written


class Listener:
    """Subscribes like the monitor: results, and each edge's retained status."""

    def __init__(self, url: str) -> None:
        from facewire.bus import topics
        from facewire.bus.client import BusClient
        from facewire.config.schema import BrokerConfig

        self.results: list[tuple[float, Result]] = []
        self.status: dict[str, dict[str, Any]] = {}
        self.classifier: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.bus = BusClient(BrokerConfig(url=url), "bench-e2e")
        self.bus.subscribe(topics.RESULTS, self._on_result, qos=0)
        self.bus.subscribe(topics.STATUSES, self._on_status, qos=1)

    def _on_result(self, m: Any) -> None:
        now = time.time()
        with self._lock:
            self.results.append((now, Result.decode(m.payload)))

    def _on_status(self, m: Any) -> None:
        from facewire.bus import topics

        if not m.payload:
            return
        with self._lock:
            if m.topic == topics.CLASSIFIER_STATUS:
                self.classifier = ClassifierStatus.decode(m.payload).as_dict()
            else:
                self.status[topics.parse(m.topic)] = EdgeStatus.decode(m.payload).as_dict()


def run_one(args: argparse.Namespace, model: str, frames_dir: Path) -> dict[str, Any]:
    import subprocess

    with Broker() as broker:
        listener = Listener(broker.url)
        listener.bus.connect()
        common = ["--broker", broker.url, "--model", model]
        if args.detector:
            common += ["--detector", args.detector]
        env = child_env(FACEWIRE_LOG="WARNING")
        if args.mesh_runtime:  # edge and classifier must agree
            env["FACEWIRE_PIPELINE_MESH_RUNTIME"] = args.mesh_runtime
        classifier = subprocess.Popen(
            [sys.executable, "-m", "facewire", "classifier", "--dataset", args.gallery, *common],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        edges: list[subprocess.Popen[Any]] = []
        try:
            deadline = time.monotonic() + args.ready_timeout
            while listener.classifier.get("state") != "online":
                if classifier.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the classifier did not come online with model {model}")
                time.sleep(0.1)
            note(
                f"{model}: classifier online; starting {args.nodes} edge node(s) at {args.fps} fps"
            )
            for i in range(args.nodes):
                cmd = [sys.executable, "-m", "facewire", "edge", "--node", f"cam{i + 1}"]
                cmd += ["--source", str(frames_dir), "--fps", str(args.fps), "--loop"]
                cmd += ["--dedup-distance", "0", *common]
                # a status every second: the edge's own p50/p99 are read from it
                edge_env = {
                    **env,
                    "FACEWIRE_STATUS_INTERVAL_S": "1",
                    "FACEWIRE_REEMBED_NAMED_S": "0",
                }
                edges.append(
                    subprocess.Popen(cmd, cwd=ROOT, env=edge_env, stdout=subprocess.DEVNULL)
                )
            # warm-up: model loading, first runs, first connections; not timed
            while not listener.results:
                if any(e.poll() is not None for e in edges) or time.monotonic() > deadline:
                    raise SystemExit(f"no result from the edge nodes with model {model}")
                time.sleep(0.1)
            time.sleep(args.warmup)
            start = len(listener.results)
            time.sleep(args.seconds)
            with listener._lock:
                got = listener.results[start:]
                status = dict(listener.status)
        finally:
            for e in edges:
                stop_process(e)
            stop_process(classifier)
            listener.bus.close(timeout=0)
    return summarise(model, args, got, status)


def summarise(
    model: str, args: argparse.Namespace, got: list[tuple[float, Result]], status: Any
) -> dict[str, Any]:
    # captured_at is stamped once the frame is read and decoded: add that stage back
    total = [
        (at - (r.captured_at or at)) * 1000.0 + (r.timings.get("capture") or 0.0) for at, r in got
    ]
    stage = {s: [r.timings.get(s) for _, r in got] for s in EDGE_STAGES}
    inside = [r.timings.get("total_classifier") for _, r in got]
    edge_sum = [sum(r.timings.get(s) or 0.0 for s in EDGE_STAGES) for _, r in got]
    wire = [t - e - (c or 0.0) for t, e, c in zip(total, edge_sum, inside, strict=True)]

    def p50(values: list[Any]) -> float | None:
        clean = [v for v in values if isinstance(v, int | float)]
        return percentiles(clean, [50])[0] if clean else None

    latency = [s.get("latency_ms") or {} for s in status.values()]
    edge_p50 = [lat["p50"] for lat in latency if lat.get("p50") is not None]
    edge_p99 = [lat["p99"] for lat in latency if lat.get("p99") is not None]
    return {
        "bench": "e2e",
        "model": model,
        "detector": args.detector or "config",
        "mesh_runtime": args.mesh_runtime or "config",
        "nodes": args.nodes,
        "fps": args.fps,
        "results": len(got),
        "named": round(sum(r.known for _, r in got) / max(len(got), 1), 3),
        **summary(total),
        **{f"{s}_p50_ms": p50(v) for s, v in stage.items()},
        "classifier_p50_ms": p50(inside),
        "wire_p50_ms": p50(wire),
        "edge_status_p50_ms": round(float(np.median(edge_p50)), 3) if edge_p50 else None,
        "edge_status_p99_ms": round(float(np.max(edge_p99)), 3) if edge_p99 else None,
        "seconds": args.seconds,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench e2e",
        description="How long until the name appears: own mosquitto, facewire classifier, "
        "N facewire edge processes replaying camera-like frames; capture → result.",
    )
    p.add_argument(
        "--models",
        default="sface,clip-vit-b32-int8",
        help="embedders to run, one after the other (default: sface,clip-vit-b32-int8; "
        "CLIP rows need its files: facewire models export clip)",
    )
    p.add_argument("--detector", choices=["haar", "yunet"], default=None, help="edge detector")
    p.add_argument(
        "--mesh-runtime",
        choices=["mediapipe", "landmarks"],
        default=None,
        help="FaceMesh's whole graph or its landmark model alone (default: the config's)",
    )
    p.add_argument("--nodes", type=int, default=1, help="edge processes (default 1)")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second each (default 5)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per model")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="untimed seconds after the first result"
    )
    p.add_argument("--frames", type=int, default=22, help="distinct frames replayed (default 22)")
    p.add_argument("--gallery", default=str(ROOT / "dataset" / "gallery"), help="gallery folder")
    p.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for start-up"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    from facewire.models.embedders import model_path

    args = build_parser().parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facewire-e2e-") as tmp:
        frames_dir = Path(tmp)
        write_frames(frames_dir, args.frames)
        for model in [m for m in args.models.split(",") if m]:
            if not model_path(model).exists():
                note(f"{model}: no model file, skipped (facewire models --help)")
                continue
            rows.append(run_one(args, model, frames_dir))
    notes = [
        "capture → result: frame read by the edge → result received by a subscriber "
        "(same machine, same clock)",
    ]
    emit("e2e", rows, COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
