"""The ONNX Runtime session options sweep of ``facewire bench embed``: every
combination of intra-op threads, graph optimisation and memory arena, round-robin, on
the int8 CLIP model at batch 1; ``choose`` picks the options the other rows use."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import note, summary

SWEEP_COLUMNS = [
    ("threads", "intra-op threads"),
    ("graph_opt", "graph optimisation"),
    ("arena", "memory arena"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("mean_ms", "mean ms"),
]


GRAPH_OPT = ("basic", "extended", "all")


def settle(gap_s: float) -> None:
    """Let the previous call's worker threads stop spinning before the next call starts.

    ONNX Runtime's and OpenMP's pool threads busy-wait for a while after a run; without
    a pause, whichever configuration follows a multi-threaded one in the round-robin
    shares the CPU with those spinning threads and looks slower than it is. (An edge
    node does other work between two embeds anyway.)
    """
    if gap_s > 0:
        time.sleep(gap_s)


def ort_options(threads: int, graph_opt: str, arena: bool) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_opt]
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 3
    return opts


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def sweep(path: Path, pixels: np.ndarray, repeats: int, gap_s: float) -> list[dict[str, Any]]:
    """Every combination, round-robin, on one preprocessed crop (model time only).

    All 18 sessions are open at once when memory allows; on a small board they are
    measured in groups that fit in half the free memory.
    """
    import onnxruntime as ort

    combos = list(itertools.product((1, 2, 0), GRAPH_OPT, (True, False)))
    avail = mem_available()
    per_session = 1.5 * path.stat().st_size
    group = (
        len(combos) if avail is None else int(max(2, min(len(combos), avail // 2 // per_session)))
    )
    if group < len(combos):
        note(f"  little free memory: sweeping {group} option sets at a time")
    times: list[list[float]] = [[] for _ in combos]
    for first in range(0, len(combos), group):
        sessions = []
        for threads, opt, arena in combos[first : first + group]:
            s = ort.InferenceSession(
                str(path),
                sess_options=ort_options(threads, opt, arena),
                providers=["CPUExecutionProvider"],
            )
            for _ in range(2):
                s.run(None, {"pixel_values": pixels})
            sessions.append(s)
        for _ in range(repeats):
            for i, s in enumerate(sessions, start=first):
                settle(gap_s)
                t0 = time.perf_counter()
                s.run(None, {"pixel_values": pixels})
                times[i].append((time.perf_counter() - t0) * 1000.0)
        del sessions
    rows = []
    for (threads, opt, arena), t in zip(combos, times, strict=True):
        s = summary(t)
        rows.append(
            {
                "kind": "sweep",
                "model": "clip-vit-b32-int8",
                "backend": "onnxruntime",
                "batch": 1,
                "threads": threads or "default",
                "graph_opt": opt,
                "arena": "on" if arena else "off",
                "p50_ms": s["p50_ms"],
                "p99_ms": s["p99_ms"],
                "mean_ms": round(float(np.mean(t)), 3),
            }
        )
    return rows


def choose(rows: list[dict[str, Any]], tolerance: float = 0.10) -> dict[str, Any]:
    """The lowest mean time (what bounds an edge node's frame rate; unlike the median it
    counts the stalls that extra threads suffer on a busy CPU); among those within
    ``tolerance`` of it (about the run-to-run noise on a shared machine), fewer threads
    first, then ONNX Runtime's defaults (optimisation "all", arena on)."""
    best = min(r["mean_ms"] for r in rows)
    close = [r for r in rows if r["mean_ms"] <= best * (1 + tolerance)]

    def preference(r: dict[str, Any]) -> tuple[Any, ...]:
        threads = {1: 0, 2: 1, "default": 2}[r["threads"]]
        return (threads, r["graph_opt"] != "all", r["arena"] != "on", r["mean_ms"])

    return min(close, key=preference)
