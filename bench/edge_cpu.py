"""``facewire bench edge-cpu``: what the edge spends per second of video on one person
standing in front of the camera, with the skipping of already-named faces off and on.

A private mosquitto, ``facewire classifier`` on ``dataset/gallery`` and one ``facewire
edge`` process replay camera-like 640×480 frames of one gallery person (one probe
photo, moved by a few pixels from frame to frame, as a person standing still moves) at
``--fps``. After ``--warmup`` seconds (the classifier names the face, the edge starts
skipping), the edge process's CPU time (user + system, from ``/proc``) over
``--seconds`` is divided by the seconds: CPU per second of video, in cores (1.0 = one
core busy all the time). Rows: ``reembed_named_s`` 0 (every frame embedded) and the
configured value (default 1 s), each optionally on one core with one ONNX Runtime
thread (``--one-core``: ``taskset`` to CPU 0, ``pipeline.threads`` 1), the slowest
honest stand-in for a Raspberry Pi here.

    facewire bench edge-cpu --seconds 20 --fps 15 --one-core
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import ROOT, Broker, child_env, emit, note, stop_process
from facewire.bench.endtoend import Listener
from facewire.bench.frames import compose_frame, write_video
from facewire.models.files import list_photos

COLUMNS = [
    ("model", "model"),
    ("cores", "cores"),
    ("reembed_named_s", "re-embed named every s"),
    ("fps", "fps"),
    ("frames_per_s", "frames/s done"),
    ("sent_per_s", "embeddings/s sent"),
    ("skipped_per_s", "faces/s skipped (named)"),
    ("cpu_per_video_s", "CPU s per s of video"),
    ("named", "named"),
]


def write_standing(path: Path, person: str, count: int = 60) -> Path:
    """A video of ``count`` frames of ``person`` standing: one photo, a few pixels of
    sway (a continuous take, which the edge follows)."""
    photo = list_photos(ROOT / "dataset" / "probes" / person)[0]
    base = compose_frame([photo])
    rng = np.random.default_rng(0)
    shifts = [tuple(int(v) for v in rng.integers(-3, 4, size=2)) for _ in range(count)]
    return write_video(path, (np.roll(base, (dy, dx), axis=(0, 1)) for dy, dx in shifts))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(
    args: argparse.Namespace, frames: Path, reembed_s: float, one_core: bool
) -> dict[str, Any]:
    with Broker() as broker:
        listener = Listener(broker.url)
        listener.bus.connect()
        env = child_env(FACEWIRE_LOG="WARNING")
        common = ["--broker", broker.url, "--model", args.model]
        classifier = subprocess.Popen(
            [sys.executable, "-m", "facewire", "classifier", "--dataset", args.gallery, *common],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        edge_env = {**env, "FACEWIRE_REEMBED_NAMED_S": str(reembed_s),
                    "FACEWIRE_STATUS_INTERVAL_S": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "facewire", "edge", "--node", "door", "--source",
               str(frames), "--fps", str(args.fps), "--loop", *common]  # fmt: skip
        if one_core:
            edge_env["FACEWIRE_PIPELINE_THREADS"] = "1"
            cmd = ["taskset", "-c", "0", *cmd]
        edge = None
        try:
            deadline = time.monotonic() + 300
            while listener.classifier.get("state") != "online":
                if classifier.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the classifier did not come online")
                time.sleep(0.1)
            edge = subprocess.Popen(cmd, cwd=ROOT, env=edge_env, stdout=subprocess.DEVNULL)
            while not listener.results:
                if edge.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("no result from the edge")
                time.sleep(0.1)
            time.sleep(args.warmup)
            before = dict(listener.status.get("door") or {})
            cpu0, t0 = cpu_seconds(edge.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(edge.pid), time.monotonic()
            time.sleep(1.2)  # the next status, covering the window
            after = dict(listener.status.get("door") or {})
            names = [r.name for _, r in listener.results]
        finally:
            if edge is not None:
                stop_process(edge)
            stop_process(classifier)
            listener.bus.close(timeout=0)
    elapsed = t1 - t0

    def rate(key: str) -> float | None:
        a, b = before.get(key), after.get(key)
        return None if a is None or b is None else round((b - a) / elapsed, 2)

    return {
        "bench": "edge-cpu",
        "model": args.model,
        "cores": "1 (taskset, 1 thread)" if one_core else str(os.cpu_count()),
        "reembed_named_s": reembed_s,
        "fps": args.fps,
        "seconds": round(elapsed, 2),
        "frames_per_s": after.get("fps"),
        "sent_per_s": rate("sent"),
        "skipped_per_s": rate("skipped_named"),
        "cpu_per_video_s": round((cpu1 - cpu0) / elapsed, 3),
        "named": f"{names.count(args.person)}/{len(names)}",
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench edge-cpu",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=20.0, help="measured (default 20)")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds first, not measured")
    p.add_argument("--fps", type=float, default=15.0, help="camera frame rate (default 15)")
    p.add_argument("--model", default="sface", help="embedder (default sface)")
    p.add_argument("--gallery", default="dataset/gallery", help="the classifier's gallery")
    p.add_argument("--person", default="ORL_s01", help="who stands there (a gallery person)")
    p.add_argument(
        "--reembed-named-s",
        type=float,
        default=1.0,
        help="the 'on' row's edge.reembed_named_s (the 'off' row is 0; default 1)",
    )
    p.add_argument(
        "--one-core",
        action="store_true",
        help="also on one core with one ONNX Runtime thread (taskset -c 0)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds <= 0 or args.fps <= 0:
        raise SystemExit("facewire bench edge-cpu: --seconds and --fps must be > 0")
    if args.one_core and shutil.which("taskset") is None:
        raise SystemExit("facewire bench edge-cpu: --one-core needs taskset (util-linux)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="facewire-standing-") as tmp:
        video = write_standing(Path(tmp) / "standing.avi", args.person)
        for one_core in [False, True] if args.one_core else [False]:
            for reembed_s in (0.0, args.reembed_named_s):
                note(f"reembed_named_s {reembed_s:g}, {'one core' if one_core else 'all cores'} …")
                rows.append(run_one(args, video, reembed_s, one_core))
    emit("edge-cpu", rows, COLUMNS, args.json, params=vars(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
