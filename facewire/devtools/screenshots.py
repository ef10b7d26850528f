"""Screenshots of the monitor pages for the docs: ``python -m facewire.devtools.screenshots``.

Fills a throw-away store and state with made-up but plausible data (no broker
needed), serves the app on a free port and captures the pages with headless
Chromium through selenium (``pip install selenium``; Debian: ``apt-get install
chromium chromium-driver``). Writes ``monitor-log.png``, ``monitor-thresholds.png``
and ``monitor-nodes.png`` into ``--out`` (default: ``var/screenshots``; the pictures
in docs/img are taken from the real demo instead).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import shutil
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from facewire.monitor.app import create_app
from facewire.monitor.state import State
from facewire.monitor.store import Store

NODES = ("door", "lobby", "garage")
PEOPLE = ("Ada_Lovelace", "Alan_Turing", "Grace_Hopper", "Katherine_Johnson", "Edsger_Dijkstra")
THRESHOLD = 0.363
MODEL = "sface-2021dec-int8bq:7c1e04"


def _found(driver: Any, selector: str) -> bool:
    """The page shows ``selector`` (a WebDriverWait condition)."""
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, selector))


def thresholds(rng: random.Random) -> dict[str, Any]:
    """What a classifier publishes: the real calibration and live statistics, on
    made-up clustered vectors (30 people, 6 photos each) and made-up queries."""
    import numpy as np

    from facewire.classifier.calibrate import choose_threshold
    from facewire.classifier.thresholds import LiveThresholds
    from facewire.config.schema import SearchConfig

    gen = np.random.default_rng(rng.randrange(2**32))
    centres = gen.normal(size=(30, 64))
    vectors = np.repeat(centres, 6, axis=0) + 0.8 * gen.normal(size=(180, 64))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [PEOPLE[i % len(PEOPLE)] + f"_{i}" for i in range(30) for _ in range(6)]
    chosen = choose_threshold(SearchConfig(), vectors.astype(np.float32), labels, THRESHOLD)
    assert chosen.calibration is not None
    live = LiveThresholds(400)
    live.extend(
        [rng.gauss(0.6, 0.12) if rng.random() < 0.8 else rng.gauss(0.18, 0.08) for _ in range(400)]
    )
    stats = live.snapshot(chosen.value, chosen.calibration.summary(), chosen.source, chosen.note)
    return stats.as_dict()


def fill(store: Store, state: State, rng: random.Random) -> None:
    now = time.time()
    for i in range(120):  # ten minutes of heartbeats, every 5 s
        at = now - 600 + i * 5
        for k, node in enumerate(NODES):
            p50 = 18 + 4 * k + 3 * math.sin(i / 9 + k) + rng.random() * 2
            state.node_status(
                node,
                {
                    "node": node,
                    "state": "online",
                    "model": MODEL,
                    "fps": 5.0 - k * 0.4,
                    "latency_ms": {"p50": round(p50, 1), "p99": round(p50 * 1.9, 1), "n": 300},
                    "sent": 40 * i + k,
                    "dropped_dedup": 11 * i // 2,
                    "buffered": 0,
                    "ts": at,
                },
                at=at,
            )
    state.node_status("garage", {"node": "garage", "state": "offline"}, at=now - 40)
    seq = dict.fromkeys(NODES, 0)
    for i in range(60):
        at = now - 300 + i * 5 + rng.random()
        node = rng.choice(NODES[:2] if i > 50 else NODES)
        seq[node] += 1
        if i % 6 == 4 or rng.random() < 0.1:
            name, score = "unknown", rng.uniform(0.08, 0.33)
        else:
            name, score = rng.choice(PEOPLE), rng.uniform(0.38, 0.82)
        stages = {
            "detect_ms": rng.uniform(3, 6),
            "mesh_ms": rng.uniform(4, 8),
            "align_ms": rng.uniform(0.3, 0.8),
            "embed_ms": rng.uniform(7, 12),
            "encode_ms": 0.05,
            "queue_ms": rng.uniform(0.05, 0.6),
            "search_ms": rng.uniform(0.1, 0.3),
        }
        result = {
            "node": node,
            "seq": seq[node],
            "frame": seq[node] * 3,
            "face": 0,
            "name": name,
            "score": round(score, 4),
            "threshold": THRESHOLD,
            "model": MODEL,
            "neighbours": [{"name": name, "score": round(score, 4)}],
            "bbox": [200, 120, 140, 140],
            "captured_at": at - 0.03,
            "timings": {k: round(v, 3) for k, v in stages.items()},
            "classified_at": at,
        }
        store.add(result, node=node, received_at=at)
        state.seen_result(node, at=at)
    state.classifier_status(
        {
            "state": "online",
            "model": MODEL,
            "gallery": {
                "identities": 52,
                "vectors": 488,
                "version": "3f9a21c",
                "index": "flat",
                "dim": 128,
            },
            "queues": {"door": 0, "lobby": 1, "garage": 0},
            "dropped": {"door": 0, "lobby": 3, "garage": 0},
            "rejected": 2,
            "processed": 18_342,
            "messages_per_s": 9.8,
            "timings": {"queue_ms_p50": 0.21, "search_ms_p50": 0.14, "search_ms_p99": 0.52},
            "ts": now,
        },
        at=now - 1,
    )
    state.error(
        "garage",
        {
            "node": "garage",
            "reason": "wrong_model",
            "detail": "clip-vit-b32 ≠ " + MODEL,
            "seq": 17,
            "count": 1,
        },
        at=now - 200,
    )
    state.thresholds(thresholds(rng), at=now - 1)


def _viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def main(argv: list[str] | None = None) -> int:
    default_out = Path(__file__).resolve().parent.parent / "var" / "screenshots"
    p = argparse.ArgumentParser(prog="python -m facewire.devtools.screenshots", description=__doc__)
    p.add_argument("--out", type=Path, default=default_out, help="folder for the PNG files")
    p.add_argument("--width", type=int, default=1280)
    args = p.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="monitor-shots-"))
    store, state = Store(work / "demo.sqlite3"), State()
    fill(store, state, random.Random(7))
    store.flush(10)  # the writer thread has every row before the pages are read
    state.broker_address = "mqtt://broker:1883"  # made-up data: pretend to be connected
    state.broker_connected = lambda: True
    server = make_server("127.0.0.1", 0, create_app(store, state), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={args.width},900",
        f"--user-data-dir={work / 'profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts
    )
    args.out.mkdir(parents=True, exist_ok=True)
    shots = [
        ("/log/html", "monitor-log.png", "#rows tr", 720),
        ("/threshold_stats/html", "monitor-thresholds.png", "#chart-cal svg path", None),
        ("/nodes/html", "monitor-nodes.png", ".chart svg path", None),
    ]
    try:
        for path, name, ready, height in shots:
            _viewport(driver, args.width, 900)
            driver.get(base + path)
            WebDriverWait(driver, 10).until(partial(_found, selector=ready))
            time.sleep(1.5)  # let the row flash animation finish
            full = driver.execute_script(
                "return Math.ceil(document.querySelector('main').getBoundingClientRect().bottom)"
            )
            _viewport(driver, args.width, height or full)
            time.sleep(0.3)
            driver.save_screenshot(str(args.out / name))
            print(args.out / name)
    finally:
        driver.quit()
        store.feed.close()
        server.shutdown()
        server.server_close()
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
