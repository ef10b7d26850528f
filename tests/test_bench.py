"""The benchmarks run and report what they promise (tiny parameters; no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

PIPELINE_KEYS = {
    "nodes",
    "fps",
    "messages",
    "lost",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "throughput_per_s",
    "queue_ms_p50",
    "search_ms_p50",
}
CLASSIFIER_KEYS = {"dim", "gallery", "index", "batch_max", "embeddings_per_s", "messages"}
EDGE_STAGES = ["capture", "detect", "mesh", "align", "embed", "publish", "total"]


def bench(tmp_path: Path, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Run ``facewire bench <args> --json``; its JSON lines (results go to tmp_path)."""
    env = dict(os.environ, FACEWIRE_BENCH_RESULTS=str(tmp_path), FACEWIRE_LOG="WARNING")
    proc = subprocess.run(
        [sys.executable, "-m", "facewire", "bench", *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"no JSON on stdout; stderr: {proc.stderr[-2000:]}"
    saved = json.loads((tmp_path / f"{args[0]}.json").read_text())
    assert saved["rows"] == lines
    assert saved["machine"]["cores"] >= 1
    return lines


def test_pipeline_bench_synthetic(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        "pipeline",
        *("--nodes", "2", "--fps", "5", "--seconds", "2", "--synthetic", "1000", "--dim", "128"),
        *("--warmup", "0.2"),
    )
    assert row.keys() >= PIPELINE_KEYS
    assert row["nodes"] == 2 and row["fps"] == 5
    assert row["messages"] >= 15  # 2 nodes × 5 fps × 2 s, give or take the edges
    assert row["lost"] == 0 and row["errors"] == 0
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["queue_ms_p50"] is not None and row["search_ms_p50"] is not None
    assert row["classifier_status"]["processed"] >= row["messages"]


def test_classifier_bench(tmp_path: Path) -> None:
    rows = bench(
        tmp_path,
        "classifier",
        *("--sizes", "1000,10000", "--dims", "128", "--batch", "32,1", "--seconds", "0.3"),
        "--no-cache",
    )
    assert [(r["gallery"], r["dim"], r["batch_max"]) for r in rows] == [
        (1000, 128, 32),
        (1000, 128, 1),
        (10000, 128, 32),
        (10000, 128, 1),
    ]
    for r in rows:
        assert r.keys() >= CLASSIFIER_KEYS
        assert r["messages"] > 0 and r["embeddings_per_s"] > 0
        assert r["dropped"] == 0 and r["rejected"] == 0
        assert r["net_us"] > 0 and r["worker_us"] > 0
    assert rows[1]["mean_batch"] == 1.0
    # exact search up to 5k vectors, inverted lists beyond; the approximate index
    # finds the same nearest vector and gives the same name to every known face
    assert [r["index"] for r in rows] == ["flat", "flat", "ivf256-fp16/8", "ivf256-fp16/8"]
    assert rows[0]["recall_at_1"] == 1.0 and rows[0]["same_answer_known"] == 1.0
    assert rows[2]["recall_at_1"] >= 0.99 and rows[2]["same_answer_known"] >= 0.99
    assert rows[2]["strangers_named"] <= rows[2]["strangers_named_exact"] + 0.01


def test_classifier_bench_sealed(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        "classifier",
        *("--sizes", "1000", "--dims", "128", "--batch", "32", "--seconds", "0.3", "--sealed"),
        "--no-cache",
    )
    # every sealed message opened and answered, none refused, none a repeat
    assert row["sealed"] is True and row["messages"] > 0
    assert row["rejected"] == 0 and row["dropped"] == 0 and row["ran_out"] is False


def test_soak_bench_samples_memory_and_loses_nothing(tmp_path: Path) -> None:
    svg = tmp_path / "soak.svg"
    rows = bench(
        tmp_path,
        "soak",
        *("--minutes", "0.15", "--sample-s", "3", "--nodes", "2", "--fps", "5"),
        *("--out", str(svg)),
        timeout=300,
    )
    *samples, totals = rows  # the samples, then the run's totals
    assert len(samples) >= 3 and totals["bench"] == "soak"
    assert totals["sent"] >= 2 * 5 * 9 * 0.8 and totals["lost"] == 0
    assert totals["classifier_exit"] == 0 and totals["monitor_exit"] == 0
    for s in samples:
        assert s["classifier_rss_mb"] > 10 and s["monitor_rss_mb"] > 10
    assert samples[-1]["answered"] == totals["sent"]
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<polyline") == 3


def test_classifier_bench_replicas(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        "classifier",
        *("--sizes", "1000", "--dims", "128", "--batch", "32", "--seconds", "0.3"),
        *("--replicas", "2"),
    )
    assert row["replicas"] == 2 and len(row["per_replica"]) == 2
    assert all(r > 0 for r in row["per_replica"])
    assert row["embeddings_per_s"] == pytest.approx(sum(row["per_replica"]), abs=0.2)
    assert row["messages"] > 0 and row["dropped"] == 0 and row["rejected"] == 0


def test_e2e_bench_sface(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        "e2e",
        *("--models", "sface", "--fps", "5", "--seconds", "3", "--warmup", "0.5"),
        timeout=180,
    )
    assert row["model"] == "sface" and row["nodes"] == 1
    assert row["results"] >= 8  # 5 fps × 3 s, give or take start and stop
    assert row["named"] >= 0.8  # the frames show gallery people
    assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    stages = ["capture", "detect", "mesh", "align", "embed", "encode"]
    parts = sum(row[f"{s}_p50_ms"] for s in stages) + row["classifier_p50_ms"]
    # the parts are medians, so they only roughly add up to the median total
    assert parts <= row["p50_ms"] * 1.5 and row["embed_p50_ms"] > 0
    assert row["edge_status_p50_ms"] is not None


def test_edge_bench_sface(tmp_path: Path) -> None:
    rows = bench(tmp_path, "edge", "--model", "sface", "--repeats", "3", "--warmup", "1")
    assert [(r["model"], r["faces"]) for r in rows] == [("sface", 1), ("sface", 3)]
    for r in rows:
        assert r["found"] == r["faces"]  # the composed frames' faces are all detected
        for stage in EDGE_STAGES:
            assert r[f"{stage}_p50_ms"] is not None and r[f"{stage}_p99_ms"] is not None
        assert r["total_p50_ms"] >= r["embed_p50_ms"]
        assert r["as_shipped"] is False  # SFace loads with its rewrites

    # the picture of these rows: one bar per row, a segment per stage, the total at the end
    out = tmp_path / "edge.svg"
    plot = [sys.executable, "-m", "facewire", "bench", "plot", str(tmp_path / "edge.json")]
    done = subprocess.run(
        [*plot, "--label", "now", "--target", "30", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    picture = ET.parse(out).getroot()  # well-formed SVG
    titles = [t.text or "" for t in picture.iter("{http://www.w3.org/2000/svg}title")]
    assert sum(t.startswith("embed ") for t in titles) == 2
    texts = [t.text or "" for t in picture.iter("{http://www.w3.org/2000/svg}text")]
    for r in rows:
        assert f"p50 {r['total_p50_ms']:.1f}" in texts
    assert "now: sface, 1 face, landmarks" in texts and "target 30 ms" in texts


def test_bench_plot_refuses_what_it_cannot_draw(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "facewire", "bench", "plot"]
    other = tmp_path / "classifier.json"
    other.write_text(json.dumps({"bench": "classifier", "rows": [{"bench": "classifier"}]}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"bench": "e2e", "rows": [')
    cases = [
        ([str(other)], "this draws e2e, edge"),
        ([str(broken)], "neither a bench result document nor JSON lines"),
        ([str(tmp_path / "missing.json")], "missing.json"),
        ([str(other), "--label", "a", "--label", "b"], "2 --label for 1 files"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [*run, *args, "--out", str(tmp_path / "x.svg")],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
    assert not (tmp_path / "x.svg").exists()


def test_bench_dispatcher() -> None:
    run = [sys.executable, "-m", "facewire", "bench"]
    out = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for name in ("embed", "edge", "classifier", "pipeline", "e2e", "all"):
        assert name in out.stdout
    bad = subprocess.run([*run, "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown bench" in bad.stderr


@pytest.mark.parametrize("name", ["pipeline", "edge", "classifier", "e2e"])
def test_bench_help(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facewire", "bench", name, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--json" in out.stdout


GALLERY_KEYS = {
    "gallery",
    "dim",
    "kind",
    "index",
    "params",
    "build_s",
    "train_s",
    "add_s",
    "cached",
    "index_bytes",
    "rss_growth_mb",
    "search_p50_ms",
    "search_p99_ms",
    "batch64_ms",
    "recall_at_1",
    "same_person_at_1",
    "recall_at_1_strangers",
    "queries",
}


def test_gallery_bench_flat_then_ivf_then_from_the_cache(tmp_path: Path) -> None:
    args = ("gallery", "--sizes", "2000,6000", "--dim", "128", "--queries", "200")
    rows = bench(tmp_path, *args)
    # exact search up to 5k vectors, inverted lists beyond (the service's auto)
    assert [(r["gallery"], r["kind"]) for r in rows] == [(2000, "flat"), (6000, "ivf")]
    for r in rows:
        assert r.keys() >= GALLERY_KEYS
        assert 0 < r["search_p50_ms"] <= r["search_p99_ms"] <= r["search_max_ms"]
        assert r["batch64_ms"] > 0 and r["index_bytes"] > 0 and r["queries"] == 200
        assert r["build_s"] >= 0 and not r["cached"]
    flat, ivf = rows
    assert flat["index"] == "flat" and flat["index_bytes"] == 2000 * 128 * 4
    assert flat["recall_at_1"] == 1.0 and flat["same_person_at_1"] == 1.0
    assert flat["recall_at_1_strangers"] >= 0.99  # exact too, up to float rounding
    assert ivf["index"].startswith("ivf") and ivf["params"]["nprobe"] == 8
    assert ivf["recall_at_1"] >= 0.95 and ivf["same_person_at_1"] >= 0.99
    assert ivf["build_s"] >= ivf["train_s"] >= 0
    # again: the IVF index comes from the cache, with the time its build took
    again = bench(tmp_path, *args)
    assert again[1]["cached"] and again[1]["build_s"] == ivf["build_s"]
    assert again[1]["recall_at_1"] == ivf["recall_at_1"] and not again[0]["cached"]


def test_gallery_bench_pq_with_a_setting(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        *("gallery", "--sizes", "3000", "--dim", "64", "--queries", "200", "--index", "pq"),
        *("--set", "pq_rerank=16", "--no-cache"),
    )
    assert row["kind"] == "pq" and row["index"] == "pq32-fp16/16"
    assert row["recall_at_1"] >= 0.99 and row["same_person_at_1"] == 1.0
    assert not (tmp_path / "cache").exists()


def test_gallery_bench_refuses_an_unknown_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facewire", "bench", "gallery", "--set", "nprobes=3"],
        cwd=ROOT,
        env=dict(os.environ, FACEWIRE_BENCH_RESULTS=str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "search.nprobe" in done.stderr


def test_gallery_bench_help_and_its_vectors() -> None:
    import numpy as np

    from facewire.bench.common import synthetic_gallery
    from facewire.bench.gallery import gallery_vectors

    out = subprocess.run(
        [sys.executable, "-m", "facewire", "bench", "gallery", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "--json" in out.stdout and "--sizes" in out.stdout
    # made in chunks, the same numbers as the other benches' synthetic gallery
    want, _ = synthetic_gallery(2_500, 32)
    assert np.array_equal(gallery_vectors(2_500, 32, chunk=1_000), want)


def test_gallery_bench_people_above_a_set_size(tmp_path: Path) -> None:
    (row,) = bench(
        tmp_path,
        *("gallery", "--sizes", "8000", "--dim", "64", "--queries", "200"),
        *("--set", "people_above=7000"),
    )
    # 800 made-up people, a cell each; their means found by a fast scan of short codes
    assert row["kind"] == "people" and row["index"] == "people800-fp16/8"
    assert row["params"] == {"nlist": 800, "nprobe": 8, "by_residual": False}
    assert row["recall_at_1"] >= 0.98 and row["same_person_at_1"] == 1.0
    assert row["index_bytes"] >= 8000 * 64 * 2  # float16 vectors
