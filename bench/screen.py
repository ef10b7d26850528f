"""``facewire bench screen``: frame → name on screen, in a real browser.

What it runs, each as its own process like a deployment: a private mosquitto, ``facewire
classifier`` on ``dataset/gallery``, ``facewire monitor``, one ``facewire edge`` replaying
camera-like 640×480 JPEG frames at ``--fps`` with dedup off, and headless Chromium on
the monitor's ``/log/html``. The frames are one gallery person standing at the door,
swaying a few pixels from frame to frame (``bench.frames.moving_frames``, written as a
Motion JPEG video), as the edge sees a visitor and follows their face between
detections; ``--people`` replays a folder with a different person's probe photo in each
frame instead (``bench e2e``'s frames): each photo is a cut, searched for anew.

The bench injects a script into the page: a MutationObserver on the log table notes
each inserted row (``data-id``, node and seq cells) and, two animation frames later
(the second callback runs once the frame holding the row was painted), the time, as
``performance.timeOrigin + performance.now()``: milliseconds since the epoch on this
machine's clock, the clock of the edge's ``captured_at``. Per (node, seq) it then joins:

- the edge's printed result: ``captured_at`` (stamped once the frame was read and
  decoded, so the read's own ``capture`` time is added back, as in ``bench e2e``) and
  ``edge_latency_ms`` (capture → result back at the edge);
- the result's ``classified_at`` (the classifier sent it);
- the monitor's row (its SQLite file): ``received_at`` (the monitor's MQTT thread got it);
- the page's times: row inserted into the table; *rendered*, a task posted from the
  first animation frame callback (it runs once that frame's style, layout and paint are
  done: a lower bound of the paint); painted (the second callback: an upper bound).

So: *capture → painted* and its parts: capture → result at the edge, capture → received
by the monitor, received → inserted (the monitor's store, SQLite, the event stream,
the page's script) and inserted → painted (style, layout, paint, the next frame).
``--no-flash`` turns the page's new-row highlight off, to show what it costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from facewire.bench.common import (
    ROOT,
    Broker,
    child_env,
    emit,
    note,
    percentiles,
    stop_process,
    summary,
)
from facewire.bench.endtoend import write_frames
from facewire.bench.frames import moving_frames, write_video
from facewire.devtools.broker import free_port

TARGET_P50_MS = 40.0

COLUMNS = [
    ("model", "model"),
    ("fps", "fps"),
    ("scene", "scene"),
    ("flash", "flash"),
    ("rows_shown", "rows shown"),
    ("frames", "frames"),
    ("results", "results"),
    ("painted", "painted"),
    ("named", "named"),
    ("p50_ms", "capture → painted p50"),
    ("p95_ms", "p95"),
    ("p99_ms", "p99"),
    ("edge_p50_ms", "→ result at edge p50"),
    ("classified_p50_ms", "→ classified p50"),
    ("received_p50_ms", "→ monitor received p50"),
    ("stream_p50_ms", "received → inserted p50"),
    ("stream_p99_ms", "p99"),
    ("rendered_p50_ms", "inserted → rendered p50"),
    ("paint_p50_ms", "inserted → painted p50"),
    ("paint_p99_ms", "p99"),
]

# Runs in the page: records each row the live stream inserts, and when it was painted.
# Rows the page rebuilds from /log (the first load, a reload after a gap) lack "fresh".
OBSERVER_JS = """
if (!window.__screen) {
  const now = () => performance.timeOrigin + performance.now();
  const paints = window.__screen = [];
  const tbody = document.getElementById("rows");
  new MutationObserver((mutations) => {
    const inserted = now();
    for (const m of mutations) {
      for (const tr of m.addedNodes) {
        if (tr.nodeName !== "TR" || !tr.classList.contains("fresh")) continue;
        const rec = {
          id: Number(tr.dataset.id), node: tr.cells[1].textContent,
          seq: Number(tr.cells[6].textContent), inserted,
        };
        requestAnimationFrame(() => {
          // a task posted here runs once this frame's style, layout and paint are done
          const ch = new MessageChannel();
          ch.port1.onmessage = () => { rec.rendered = now(); };
          ch.port2.postMessage(null);
          requestAnimationFrame(() => {
            rec.painted = now();
            paints.push(rec);
          });
        });
      }
    }
  }).observe(tbody, { childList: true });
}
return performance.timeOrigin + performance.now() - Date.now();
"""

ROWS_JS = "return document.querySelectorAll('#rows tr, #older-rows tr').length"

# --no-flash: what the new-row highlight (a CSS filter animation on every cell) costs
NO_FLASH_CSS = "tr.fresh td { animation: none !important; }"

# --css, --keep-rows: changes to the page tried from here, its files unchanged
PAGE_JS = """
const [css, keep] = arguments;
if (css) {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.append(style);
}
if (keep > 0) {  // as log.js's MAX_ROWS would, after each insertion
  const tbody = document.getElementById("rows");
  const older = document.getElementById("older-rows");  // the page's older rows, if any
  const last = () => (older && older.rows.length ? older : tbody);
  const total = () => tbody.rows.length + (older ? older.rows.length : 0);
  const trim = () => { while (total() > keep) last().deleteRow(-1); };
  trim();
  new MutationObserver(trim).observe(tbody, { childList: true });
}
"""


def chromium_driver(profile: Path, chromium: str | None, chromedriver: str | None) -> Any:
    """Headless Chromium through chromedriver (selenium)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        raise SystemExit(f"bench screen needs selenium ({exc}): pip install selenium") from None
    browser = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = chromedriver or shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit("bench screen needs chromium and chromedriver on PATH")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


class EdgeResults:
    """Reads ``facewire edge --print-results`` lines on a thread of its own."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.lines.append(d)

    def __len__(self) -> int:
        with self._lock:
            return len(self.lines)

    def since(self, start: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.lines[start:]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def wait_http(url: str, deadline: float, proc: subprocess.Popen[Any]) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the monitor did not answer {url}")
        time.sleep(0.2)


def classifier_online(url: str, deadline: float, proc: subprocess.Popen[Any]) -> None:
    """Wait for the classifier's retained status to say online."""
    from facewire.bus import topics
    from facewire.bus.client import BusClient
    from facewire.bus.messages import ClassifierStatus
    from facewire.config.schema import BrokerConfig

    online = threading.Event()

    def on_status(m: Any) -> None:
        if m.payload and ClassifierStatus.decode(m.payload).as_dict().get("state") == "online":
            online.set()

    bus = BusClient(BrokerConfig(url=url), "bench-screen")
    bus.subscribe(topics.CLASSIFIER_STATUS, on_status, qos=1)
    bus.connect()
    try:
        while not online.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the classifier did not come online")
    finally:
        bus.close(timeout=0)


@contextmanager
def processes(procs: list[subprocess.Popen[Any]]) -> Iterator[list[subprocess.Popen[Any]]]:
    try:
        yield procs
    finally:
        for p in reversed(procs):
            stop_process(p)


def monitor_rows(db: Path) -> dict[tuple[str, int], dict[str, Any]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        got = conn.execute("SELECT id, node, seq, received_at FROM detections").fetchall()
    finally:
        conn.close()
    return {(n, s): {"id": i, "received_at": r} for i, n, s, r in got}


def prefill(db: Path, count: int) -> None:
    """``count`` earlier detections in the monitor's log: the page opens with the rows a
    running monitor shows (it loads up to 200), not an empty table."""
    from facewire.monitor.store import Store

    people = sorted(p.name for p in (ROOT / "dataset" / "gallery").iterdir() if p.is_dir())
    store = Store(db)
    try:
        now = time.time() - count
        for i in range(count):
            store.add(
                {
                    "seq": i,
                    "name": people[i % len(people)],
                    "score": 0.8,
                    "threshold": 0.4,
                    "model": "earlier",
                    "captured_at": now + i,
                    "timings": {"detect_ms": 5.0, "embed_ms": 15.0},
                },
                node="earlier",
                received_at=now + i,
            )
        store.flush(30)
    finally:
        store.close()


def write_standing(path: Path, count: int) -> Path:
    """A video of ``count`` frames: one gallery person's probe photo swaying in place,
    a loop the edge replays as one continuous take."""
    from facewire.bench.edge import pick_photos

    return write_video(path, moving_frames(pick_photos(1), count), fps=10)


def run_one(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    frames = work / "frames"
    if args.people:
        frames.mkdir()
        write_frames(frames, args.frames)
    else:
        frames = write_standing(work / "standing.avi", args.frames)
    db = work / "monitor.sqlite3"
    prefill(db, args.prefill)
    port = free_port()
    # metrics on any free port: another classifier may hold the default one
    env = child_env(FACEWIRE_LOG="WARNING", FACEWIRE_METRICS_PORT="0")
    deadline = time.monotonic() + args.ready_timeout
    with Broker() as broker, processes([]) as procs:
        common = ["--broker", broker.url]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "facewire",
                    "classifier",
                    "--dataset",
                    args.gallery,
                    "--model",
                    args.model,
                    *common,
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "facewire",
                    "monitor",
                    *common,
                    "--port",
                    str(port),
                    "--db",
                    str(db),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        classifier_online(broker.url, deadline, procs[0])
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", deadline, procs[1])

        profile = work / "chromium"
        driver = chromium_driver(profile, args.chromium, args.chromedriver)
        try:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            driver.get(f"{base}/log/html")
            WebDriverWait(driver, 30).until(
                lambda d: d.find_element(By.ID, "stream-state").text == "live"
            )
            css = " ".join(c for c in (NO_FLASH_CSS if args.no_flash else "", args.css) if c)
            driver.execute_script(PAGE_JS, css, args.keep_rows)
            skew_ms = driver.execute_script(OBSERVER_JS)
            shown = [driver.execute_script(ROWS_JS)]
            note(f"{args.model}: page live; starting the edge at {args.fps} fps")

            edge_cmd = [
                sys.executable,
                "-m",
                "facewire",
                "edge",
                "--node",
                args.node,
                "--source",
                str(frames),
                "--fps",
                str(args.fps),
                "--loop",
                "--dedup-distance",
                "0",
                "--model",
                args.model,
                "--print-results",
                *common,
            ]
            # every frame's face is sent, even a person already named
            edge_env = {**env, "FACEWIRE_REEMBED_NAMED_S": "0"}
            edge = subprocess.Popen(
                edge_cmd, cwd=ROOT, env=edge_env, stdout=subprocess.PIPE, text=True
            )
            procs.append(edge)
            results = EdgeResults(edge)
            while not len(results):  # model loading, first connection: not timed
                if edge.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("no result from the edge")
                time.sleep(0.1)
            time.sleep(args.warmup)
            start = len(results)
            time.sleep(args.seconds)
            stop_process(edge)
            results.join(5)
            got = results.since(start)
            time.sleep(args.settle)  # the last rows reach the page and are painted
            paints = driver.execute_script("return window.__screen")
            shown.append(driver.execute_script(ROWS_JS))
            skew_after = driver.execute_script(
                "return performance.timeOrigin + performance.now() - Date.now()"
            )
        finally:
            driver.quit()
        stop_process(procs[1])  # the monitor writes what it has, then the rows are read
    rows = monitor_rows(db)
    return {**summarise(args, got, paints, rows, [skew_ms, skew_after]), "rows_shown": shown}


def summarise(
    args: argparse.Namespace,
    got: list[dict[str, Any]],
    paints: list[dict[str, Any]],
    rows: dict[tuple[str, int], dict[str, Any]],
    skews: list[float],
) -> dict[str, Any]:
    painted = {(p["node"], int(p["seq"])): p for p in paints}
    total, edge, classified, received, stream, rendered, paint = [], [], [], [], [], [], []
    seen = 0
    for r in got:
        key = (r["node"], int(r["seq"]))
        p, row = painted.get(key), rows.get(key)
        # captured_at is stamped once the frame is read and decoded: add that back
        read_ms = (r.get("timings") or {}).get("capture") or 0.0
        t0 = r["captured_at"] * 1000.0 - read_ms
        if r.get("edge_latency_ms") is not None:
            edge.append(r["edge_latency_ms"])
        if r.get("classified_at"):
            classified.append(r["classified_at"] * 1000.0 - t0)
        if row is not None:
            received.append(row["received_at"] * 1000.0 - t0)
        if p is None:
            continue
        seen += 1
        total.append(p["painted"] - t0)
        paint.append(p["painted"] - p["inserted"])
        if p.get("rendered") is not None:
            rendered.append(p["rendered"] - p["inserted"])
        if row is not None:
            stream.append(p["inserted"] - row["received_at"] * 1000.0)

    def p50(values: list[float]) -> float | None:
        return percentiles(values, [50])[0]

    def p99(values: list[float]) -> float | None:
        return percentiles(values, [99])[0]

    return {
        "bench": "screen",
        "model": args.model,
        "fps": args.fps,
        "flash": not args.no_flash,
        "prefill": args.prefill,
        "css": args.css,
        "keep_rows": args.keep_rows,
        "scene": "people" if args.people else "standing",
        "seconds": args.seconds,
        "frames": round(args.fps * args.seconds),  # at --fps; an edge behind skips some
        "results": len(got),
        "painted": seen,
        "named": round(sum(r.get("name") != "unknown" for r in got) / max(len(got), 1), 3),
        **summary(total),
        "edge_p50_ms": p50(edge),
        "classified_p50_ms": p50(classified),
        "received_p50_ms": p50(received),
        "stream_p50_ms": p50(stream),
        "stream_p99_ms": p99(stream),
        "rendered_p50_ms": p50(rendered),
        "paint_p50_ms": p50(paint),
        "paint_p99_ms": p99(paint),
        # the page's clock minus Date.now() at the start and the end (ms resolution)
        "clock_skew_ms": [round(s, 1) for s in skews],
        "target_p50_ms": TARGET_P50_MS,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench screen",
        description="Frame → name on screen: own mosquitto, facewire classifier, monitor "
        "and edge processes, headless Chromium on /log/html; capture → row painted.",
    )
    p.add_argument("--model", default="sface", help="embedder (default: sface)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time (default 20)")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="untimed seconds after the first result"
    )
    p.add_argument(
        "--settle", type=float, default=1.0, help="seconds for the last rows to be painted"
    )
    p.add_argument("--frames", type=int, default=30, help="distinct frames replayed (default 30)")
    p.add_argument(
        "--people",
        action="store_true",
        help="a different person's photo in every frame (default: one person standing, "
        "swaying a few pixels a frame)",
    )
    p.add_argument("--node", default="door", help="the edge's node id (default door)")
    p.add_argument("--gallery", default=str(ROOT / "dataset" / "gallery"), help="gallery folder")
    p.add_argument(
        "--prefill",
        type=int,
        default=200,
        help="earlier detections in the log, so the page opens with rows (default 200: "
        "what it loads; the time to paint a row grows with the rows shown)",
    )
    p.add_argument(
        "--no-flash",
        action="store_true",
        help="turn the page's new-row highlight animation off (to see what it costs)",
    )
    p.add_argument("--css", default="", help="extra CSS for the page (to try a change)")
    p.add_argument(
        "--keep-rows",
        type=int,
        default=0,
        help="trim the table to this many rows after each insertion, as a smaller "
        "MAX_ROWS in log.js would (0: the page's own limit)",
    )
    p.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    p.add_argument("--chromedriver", default=None, help="driver (default: chromedriver on PATH)")
    p.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to wait for start-up"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    from facewire.models.embedders import model_path

    args = build_parser().parse_args(argv)
    if not model_path(args.model).exists():
        raise SystemExit(f"{args.model}: no model file (facewire models --help)")
    with tempfile.TemporaryDirectory(prefix="facewire-screen-") as tmp:
        row = run_one(args, Path(tmp))
    met = row["p50_ms"] is not None and row["p50_ms"] <= TARGET_P50_MS
    notes = [
        "capture → painted: the edge reads the frame → the page's second animation frame "
        "after the row was inserted (same machine, same clock)",
        f"target p50 ≤ {TARGET_P50_MS:g} ms: {'met' if met else 'not met'} "
        f"(p50 {row['p50_ms']} ms)",
    ]
    emit("screen", [row], COLUMNS, args.json, params=vars(args), notes=notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
