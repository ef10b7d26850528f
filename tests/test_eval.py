"""``facewire eval`` end to end on the shipped sample (subprocess, like a user runs it)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import DATASET, ROOT


def run_eval(*extra: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "facewire",
        "eval",
        "--gallery",
        str(DATASET / "gallery"),
        "--probes",
        str(DATASET / "probes"),
        "--unknown",
        str(DATASET / "unknown"),
        "--json",
        *extra,
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_eval_names_the_right_person_for_most_probes():
    r = run_eval()
    for key in (
        "model",
        "identities",
        "gallery_images",
        "probes",
        "rank1",
        "unknown_rejected",
        "threshold",
        "no_face",
        "ms_per_face",
    ):
        assert key in r, key
    assert r["model"].startswith("sface-")
    assert r["identities"] == 22
    assert r["probes"] == 88
    assert r["no_face"] < 0.2 * r["probes"]
    assert r["rank1"] >= 0.95
    assert r["named_correctly"] >= 0.9
    assert r["unknown_rejected"] >= 0.8
    assert r["ms_per_face"] > 0


def test_eval_table_and_help():
    done = subprocess.run(
        [sys.executable, "-m", "facewire", "eval", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--no-mesh" in done.stdout and "--unknown" in done.stdout
