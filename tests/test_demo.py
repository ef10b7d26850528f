"""The README's demo command: everything starts, names appear in the monitor, Ctrl-C stops all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from tests.broker import free_port
from tests.conftest import ROOT


def test_demo_runs_and_stops_cleanly(tmp_path):
    broker, web = free_port(), free_port()
    # a file, not a pipe: a full pipe would block the demo's children mid-test
    log = (tmp_path / "demo.log").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facewire",
            "demo",
            "--broker-port",
            str(broker),
            "--monitor-port",
            str(web),
            "--fps",
            "5",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 240
        rows: list[dict] = []

        def enough(rows: list[dict]) -> bool:
            door = sum(r["node"] == "door" for r in rows)
            return door >= 20 and any(r["node"] == "office" for r in rows)

        while time.monotonic() < deadline and not enough(rows):
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            time.sleep(1)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{web}/log?limit=200", timeout=2
                ) as r:
                    rows = json.loads(r.read())["detections"]
            except OSError:
                continue
        nodes = {r["node"] for r in rows}
        assert nodes == {"door", "office"}, rows[:3]
        door = [r for r in rows if r["node"] == "door"]
        assert sum(r["name"].startswith("ORL_s") for r in door) >= 0.8 * len(door)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    out = (tmp_path / "demo.log").read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "facewire demo stopped" in out
