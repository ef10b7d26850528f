"""``facewire bench screen``: a short run with every real part, Chromium included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_bench import bench


def test_screen_bench_paints_every_frame(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        "screen",
        *("--fps", "5", "--seconds", "3", "--warmup", "1"),
        timeout=240,
    )
    assert row["model"] == "sface" and row["fps"] == 5
    assert row["results"] >= 8  # 5 fps × 3 s, give or take start and stop
    assert row["painted"] == row["results"]  # every frame's result reached the screen
    assert row["named"] >= 0.8  # the frames show gallery people
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    parts = ["edge", "classified", "received", "stream", "paint"]
    for part in parts:
        assert row[f"{part}_p50_ms"] is not None and row[f"{part}_p50_ms"] >= 0, part
    # the points follow each other: result sent, received, then painted
    assert row["classified_p50_ms"] <= row["received_p50_ms"] < row["p50_ms"]
    assert row["paint_p50_ms"] < row["p50_ms"]
    assert row["stream_p50_ms"] <= row["stream_p99_ms"]
    assert row["paint_p50_ms"] <= row["paint_p99_ms"]
    assert all(abs(s) < 50 for s in row["clock_skew_ms"])  # the page's clock is ours


def test_screen_bench_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facewire", "bench", "screen", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0
    assert all(flag in out.stdout for flag in ("--json", "--seconds", "--fps"))
