"""``facewire bench startup``: how long a classifier takes to be ready, cold and warm.

It writes a gallery of ``--images`` photos (the sample gallery's photos, each copy
slightly changed so it is a file and a vector of its own), starts its own mosquitto,
and runs ``facewire classifier`` on it as a separate process: once with an empty
embedding cache (cold: every photo embedded), then ``--restarts`` times unchanged
(warm: everything from the cache). Ready = process started → its retained status
says ``online`` (subscribed, gallery searchable), measured by a subscriber here.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facewire.bench.common import ROOT, Broker, emit, note, stop_process

COLUMNS = [
    ("run", "run"),
    ("images", "images"),
    ("vectors", "vectors"),
    ("ready_s", "ready s"),
    ("threshold", "threshold"),
    ("threshold_source", "set by"),
]


def write_gallery(target: Path, images: int, seed: int = 0) -> int:
    """``images`` photos under ``target/<person>/``, from the sample gallery."""
    from facewire.models.files import list_photos

    people = sorted(
        p for p in (ROOT / "dataset" / "gallery").iterdir() if p.is_dir() and list_photos(p)
    )
    photos = {p.name: list_photos(p) for p in people}
    rng = np.random.default_rng(seed)
    for i in range(images):
        person = people[i % len(people)].name
        source = photos[person][(i // len(people)) % len(photos[person])]
        image = cv2.imread(str(source))
        # a small change of brightness and scale: another file, another vector
        image = cv2.convertScaleAbs(image, alpha=1.0, beta=float(rng.integers(-12, 13)))
        scale = 1.0 + float(rng.uniform(-0.04, 0.04))
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        (target / person).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target / person / f"{i:05d}.jpg"), image)
    return images


def ready_time(url: str, gallery: Path, timeout: float) -> dict[str, Any]:
    """Start a classifier on ``gallery``; seconds until its status says online."""
    from facewire.bus import topics
    from facewire.bus.client import BusClient
    from facewire.bus.messages import ClassifierStatus
    from facewire.config.schema import BrokerConfig

    online: list[ClassifierStatus] = []
    seen = threading.Event()
    started = [0.0]

    def on_status(m: Any) -> None:
        if not m.payload:
            return
        status = ClassifierStatus.decode(m.payload)
        if status.state == "online" and status.ts is not None and status.ts >= started[0]:
            online.append(status)
            seen.set()

    watcher = BusClient(BrokerConfig(url=url), "bench-startup")
    watcher.subscribe(topics.CLASSIFIER_STATUS, on_status)
    watcher.connect()
    cmd = [sys.executable, "-m", "facewire", "classifier", "--dataset", str(gallery)]
    cmd += ["--broker", url]
    started[0] = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not seen.wait(timeout):
            err = (
                proc.stderr.read().decode()[-2000:]
                if proc.poll() is not None and proc.stderr
                else ""
            )
            raise SystemExit(f"the classifier was not ready within {timeout:g} s {err}")
        ready = time.perf_counter() - t0
    finally:
        stop_process(proc)
        watcher.close()
    status = online[0]
    return {
        "ready_s": round(ready, 3),
        "vectors": status.gallery.vectors if status.gallery else None,
        "threshold": status.threshold,
        "threshold_source": status.threshold_source,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facewire bench startup", description=__doc__)
    p.add_argument("--images", type=int, default=1000, help="photos in the gallery (default 1000)")
    p.add_argument("--restarts", type=int, default=3, help="warm restarts (default 3)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds a start may take")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1 or args.restarts < 0:
        raise SystemExit("--images must be >= 1 and --restarts >= 0")
    work = Path(tempfile.mkdtemp(prefix="facewire-startup-"))
    rows: list[dict[str, Any]] = []
    try:
        gallery = work / "gallery"
        note(f"writing {args.images} photos …")
        write_gallery(gallery, args.images)
        with Broker() as broker:
            for run in ["cold"] + ["warm"] * args.restarts:
                note(f"{run} start …")
                rows.append({"run": run, "images": args.images} | ready_time(
                    broker.url, gallery, args.timeout
                ))  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    warm = [r["ready_s"] for r in rows if r["run"] == "warm"]
    notes = []
    if warm and args.images == 1000:
        verdict = "met" if max(warm) <= 2.0 else "NOT met"
        notes.append(f"target: an unchanged 1,000-image gallery ready in <= 2 s: {verdict}")
    emit("startup", rows, COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
