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


def test_demo_runs_and_stops_cleanly():
    broker, web = free_port(), free_port()
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        rows: list[dict] = []
        while time.monotonic() < deadline and len({r["node"] for r in rows}) < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
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
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    assert "facewire demo stopped" in out
