"""``facewire bench edge``: the edge's time per frame, stage by stage, on real frames.

Frames are 640×480 camera-like pictures made from real ORL photos
(``bench.frames.moving_frames``) with one face and with three faces, a loop of 30
frames in which the faces sway a few pixels from frame to frame, each JPEG-compressed
once like a webcam's MJPEG frame, replayed in order as one video. Each repeat times,
on the edge's clock:

- ``capture``: decoding the JPEG (a camera frame arrives compressed),
- ``detect``: the detector (YuNet by default, ``--detector haar``) on the downscaled
  frame, plus each face's quality measure (``FacePipeline.detect``); on a frame where
  the faces are followed (``detect_every`` > 1) only the box and quality,
- ``mesh``: FaceMesh on each face's box, or the landmark model on the region of each
  followed face's previous landmarks (sum over the frame's faces),
- ``align``: warp + oval mask of each face (sum),
- ``embed``: one embedder call for all faces of the frame,
- ``publish``: ``EdgeNode.publish`` per face: build the message, ``codec.encode``,
  hand it to a real local mosquitto at QoS 1 (sum),
- ``total``: capture start → last face published.

The steps are the edge's own methods called one by one, exactly what
``FaceFollower.get`` + ``EdgeNode.process`` do (with dedup off, so every face is sent).
Each row also gives the total's p50 over the frames that ran full-frame detection and
over those that followed the faces, and (``agreement``, untimed) how close the followed
faces' landmarks and vectors are to the full path's on the same frames.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewire.bench.common import ROOT, Broker, emit, note, percentiles
from facewire.bench.frames import compose_frame, moving_frames

MODELS = ["sface", "clip-vit-b32", "clip-vit-b32-int8"]
STAGES = ["capture", "detect", "mesh", "align", "embed", "publish", "total"]

COLUMNS = [
    ("model", "model"),
    ("detector", "detector"),
    ("mesh_runtime", "mesh"),
    ("detect_every", "every"),
    ("faces", "faces"),
    *[(f"{s}_p50_ms", f"{s} p50") for s in STAGES[:-1]],
    ("total_p50_ms", "total p50"),
    ("total_p99_ms", "total p99"),
    ("detected_p50_ms", "detected p50"),
    ("followed_p50_ms", "followed p50"),
    ("follow_lm_err_pct_p50", "lm err %"),
    ("follow_cos_p50", "cos vs full"),
    ("found", "found"),
]


def pick_photos(n: int = 3) -> list[Path]:
    """``n`` probe photos of different people whose face Haar finds in a composed frame
    (the first such photo per person, people in sorted order: the same every run)."""
    from facewire.classifier.gallery import iter_people
    from facewire.models.detect import HaarDetector

    detector = HaarDetector()
    chosen: dict[str, Path] = {}
    for person, photo in iter_people(ROOT / "dataset" / "probes", photos_only=True):
        if person in chosen:
            continue
        grey = cv2.cvtColor(compose_frame([photo]), cv2.COLOR_BGR2GRAY)
        if len(detector.detect(grey)) == 1:
            chosen[person] = photo
            if len(chosen) == n:
                return list(chosen.values())
    raise SystemExit(f"fewer than {n} probe photos with a detectable face in dataset/probes")


def _jpeg(frame: np.ndarray) -> bytes:
    ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpg.tobytes()


def videos(count: int = 30) -> dict[int, list[bytes]]:
    """JPEG bytes of ``moving_frames`` with 1 and with 3 faces: ``count`` frames each."""
    photos = pick_photos(3)
    return {n: [_jpeg(f) for f in moving_frames(photos[:n], count)] for n in (1, 3)}


def time_frame(node: Any, jpeg: bytes, frame_id: int) -> tuple[dict[str, float], int, bool]:
    """One frame through the edge, stage by stage: ({stage: ms}, faces published,
    whether it ran full-frame detection)."""
    from facewire.edge.sources import Frame

    pipeline, follower = node.pipeline, node.follower
    t0 = time.perf_counter()
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    t1 = time.perf_counter()
    frame = Frame(frame_id, image, time.time(), t0, (t1 - t0) * 1000.0)
    faces = follower.find(image)
    t2 = time.perf_counter()
    found_mesh = sum(f.stages.get("mesh", 0.0) for f in faces)  # meshed while following
    kept = [f for f in faces if pipeline.prepare(image, f)]
    t3 = time.perf_counter()
    pipeline.embed(kept)
    t4 = time.perf_counter()
    for face in kept:
        node.publish(frame, face)
    t5 = time.perf_counter()
    mesh = sum(f.stages.get("mesh", 0.0) for f in faces)
    return (
        {
            "capture": (t1 - t0) * 1000.0,
            "detect": (t2 - t1) * 1000.0 - found_mesh,
            "mesh": mesh,
            # prepare() minus FaceMesh: warp + mask
            "align": (t3 - t2) * 1000.0 - (mesh - found_mesh),
            "embed": (t4 - t3) * 1000.0,
            "publish": (t5 - t4) * 1000.0,
            "total": (t5 - t0) * 1000.0,
        },
        len(kept),
        follower.detected,
    )


def agreement(pipeline: Any, detect_every: int, video: list[bytes]) -> dict[str, Any]:
    """Followed faces against the full path's on the same frames (one untimed pass of
    the video): landmark error as a share of the face box's longer side (median, max)
    and the cosine between the two vectors of each face (median, min)."""
    from facewire.models.face import box_iou
    from facewire.models.follow import FaceFollower

    follower = FaceFollower(pipeline, detect_every)
    errors, cosines = [], []
    for jpeg in video:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        fast, full = follower.get(image), pipeline.get(image)
        if follower.detected or not full:
            continue
        for face in fast:
            ref = max(full, key=lambda f: box_iou(f.box, face.box))
            if face.landmarks is not None and ref.landmarks is not None:
                err = np.linalg.norm(face.landmarks - ref.landmarks, axis=1).mean()
                errors.append(100.0 * err / max(ref.box[2:]))
            if face.embedding is not None and ref.embedding is not None:
                cosines.append(float(face.embedding @ ref.embedding))
    err_p50, err_max = percentiles(errors, (50, 100))
    cos_min, cos_p50 = percentiles(cosines, (0, 50))
    return {
        "follow_lm_err_pct_p50": err_p50,
        "follow_lm_err_pct_max": err_max,
        "follow_cos_p50": cos_p50,
        "follow_cos_min": cos_min,
    }


def bench_model(
    model: str,
    url: str,
    videos_by_faces: dict[int, list[bytes]],
    repeats: int,
    warmup: int,
    models_dir: str = "",
    spinning: str | None = None,
    detector: str | None = None,
    threads: int | None = None,
    pad: float | None = None,
    mesh_runtime: str | None = None,
    keys: str = "",
    detect_every: int | None = None,
) -> list[dict[str, Any]]:
    from facewire import config
    from facewire.bus.client import BusClient
    from facewire.config.schema import EdgeConfig
    from facewire.edge.daemon import EdgeNode

    cfg = config.load(
        EdgeConfig,
        overrides={
            "node": "bench-edge",
            "broker.url": url,
            "pipeline.model": model,
            "pipeline.models_dir": models_dir,
            "dedup_distance": 0.0,  # every face is published, every frame
            "reembed_named_s": 0.0,  # … and embedded
            "detect_every": detect_every,
            "pipeline.detector.kind": detector,
            "pipeline.threads": threads,
            "pipeline.detector.pad": pad,
            "pipeline.mesh_runtime": mesh_runtime,
            "pipeline.ort_spinning": spinning,
            # sealed to a classifier's key (its cost is in "publish")
            "sealing.enabled": bool(keys),
            "sealing.keys": keys,
        },
        env={},
    )
    node = EdgeNode(cfg, BusClient(cfg.broker, f"edge-{cfg.node}")).start()
    rows = []
    try:
        for n_faces, video in videos_by_faces.items():
            samples: dict[str, list[float]] = {s: [] for s in STAGES}
            found = []
            by_path: dict[bool, list[float]] = {True: [], False: []}
            node.follower.reset()  # another video: start with full-frame detection
            for i in range(warmup + repeats):
                stages, count, detected = time_frame(node, video[i % len(video)], i)
                if i < warmup:
                    continue
                found.append(count)
                by_path[detected].append(stages["total"])
                for s, ms in stages.items():
                    samples[s].append(ms)
            row: dict[str, Any] = {
                "bench": "edge",
                "model": model,
                "model_id": node.pipeline.model_id,
                "detector": cfg.pipeline.detector.kind,
                "mesh_runtime": cfg.pipeline.mesh_runtime,
                "detect_every": node.follower.detect_every,
                "detected_frames": len(by_path[True]),
                "pad": cfg.pipeline.detector.pad,
                "faces": n_faces,
                "found": int(np.median(found)),
                "ort_spinning": cfg.pipeline.ort_spinning,
                "threads": cfg.pipeline.threads,
                "repeats": repeats,
                "sealed": bool(keys),
            }
            for s in STAGES:
                p50, p99 = percentiles(samples[s], (50, 99))
                row[f"{s}_p50_ms"] = p50
                row[f"{s}_p99_ms"] = p99
            for key, detected in (("detected", True), ("followed", False)):
                row[f"{key}_p50_ms"] = percentiles(by_path[detected], (50,))[0]
            if node.follower.detect_every > 1:
                row.update(agreement(node.pipeline, node.follower.detect_every, video))
            rows.append(row)
            note(f"  {model}, {n_faces} face(s): capture → published p50 {row['total_p50_ms']} ms")
        node.bus.flush(10)
    finally:
        node.close(drain_s=0)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench edge",
        description="Edge time per 640×480 frame of a short video (1 and 3 faces), per "
        "stage, capture → published to a local mosquitto at QoS 1, for each model file "
        "present.",
    )
    p.add_argument("--model", choices=MODELS, default=None, help="one model (default: all)")
    p.add_argument("--repeats", type=int, default=100, help="frames timed per row (default 100)")
    p.add_argument("--warmup", type=int, default=5, help="frames run first, not timed")
    p.add_argument(
        "--models-dir",
        default="",
        help="look for model files here first, then in the models folder",
    )
    p.add_argument(
        "--ort-spinning",
        choices=["off", "run", "on"],
        default=None,
        help="what-if: ONNX Runtime's worker threads spin during a run only (run, the "
        "config's default), sleep between ops (off), or also spin after a run (on, "
        "ONNX Runtime's own default)",
    )
    p.add_argument(
        "--ort-no-spin",
        action="store_const",
        const="off",
        dest="ort_spinning",
        help="same as --ort-spinning off",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="what-if: ONNX Runtime intra-op threads (default: the config's, 0 = library's)",
    )
    p.add_argument(
        "--detector",
        choices=["haar", "yunet"],
        default=None,
        help="face detector (default: the config's, see config/edge.yaml)",
    )
    p.add_argument(
        "--pad",
        type=float,
        default=None,
        help="what-if: detector border padding (default: the config's; haar 0.15, yunet 0)",
    )
    p.add_argument(
        "--mesh-runtime",
        choices=["mediapipe", "landmarks"],
        default=None,
        help="FaceMesh's whole graph or its landmark model alone (default: the config's)",
    )
    p.add_argument(
        "--sealed",
        action="store_true",
        help="seal each embedding to a (made-up) classifier key, as in deployment: its cost "
        "is in the publish stage",
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=None,
        help="full-frame detection every N frames, faces followed in between (default: "
        "the config's; 1: detect on every frame, the edge before issue 14)",
    )
    p.add_argument(
        "--loop-frames",
        type=int,
        default=30,
        help="frames in the video's loop (default 30, ~4 px a frame; fewer: faster faces)",
    )
    p.add_argument(
        "--as-shipped",
        action="store_true",
        help="what-if: run each model file as shipped, without the equal-output graph "
        "rewrites made when it loads (SFace's PRelu ops, see models/rewrites.py)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    from facewire.models.embedders import OnnxEmbedder

    args = build_parser().parse_args(argv)
    logging.getLogger("facewire.edge").setLevel(logging.WARNING)
    rewrites = OnnxEmbedder.rewrites_enabled
    OnnxEmbedder.rewrites_enabled = not args.as_shipped
    try:
        return _run(args)
    finally:
        OnnxEmbedder.rewrites_enabled = rewrites


def _run(args: argparse.Namespace) -> int:
    from facewire.models.embedders import model_path

    models = [args.model] if args.model else MODELS
    jpegs = videos(max(2, args.loop_frames))
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    keys = tempfile.TemporaryDirectory(prefix="facewire-bench-keys-")
    if args.sealed:
        from facewire.bus.keys import KeyRing

        ring = KeyRing(Path(keys.name))
        ring.ensure_classifier()
        ring.make_node("bench-edge")
    with keys, Broker() as broker:
        for model in models:
            found = [d for d in (args.models_dir, "") if model_path(model, d).exists()]
            where = found[0] if found else ""
            path = model_path(model, where)
            if not path.exists():
                msg = (
                    f"{model}: models/{path.name} not found, row skipped (make it with "
                    "`facewire models export clip`, or `--random-init` offline)"
                )
                note(msg)
                notes.append(msg)
                continue
            note(f"{model}: {args.repeats} frames of 1 and of 3 faces …")
            rows += bench_model(
                model,
                broker.url,
                jpegs,
                args.repeats,
                args.warmup,
                where,
                args.ort_spinning,
                args.detector,
                args.threads,
                args.pad,
                args.mesh_runtime,
                keys.name if args.sealed else "",
                args.detect_every,
            )
    for r in rows:
        r["as_shipped"] = args.as_shipped
        if r["model"] in ("clip-vit-b32-int8", "sface") and r["faces"] == 1:
            verdict = "met" if r["total_p50_ms"] <= 20 else "NOT met"
            shipped = " (the file as shipped)" if args.as_shipped else ""
            notes.append(
                f"target {r['model']}{shipped}, one face, capture → published p50 ≤ 20 ms: "
                f"{verdict}"
            )
    emit("edge", rows, COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
