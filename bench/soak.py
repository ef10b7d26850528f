"""``facewire bench soak``: does it stay up and stay small? Broker, classifier and
monitor as real processes, simulated edge nodes sending real embeddings for
``--minutes``; the resident memory (RSS) of the classifier, the monitor and the broker
is sampled every ``--sample-s`` and drawn as an SVG line chart, with what was lost.

    facewire bench soak --minutes 60 --nodes 10 --fps 5 --out soak.svg

A node keeps sending while nothing is lost; a result that never came counts as lost.
The table has one row per sample, then one with the run's totals (sent, lost, the
range of each RSS).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from html import escape
from pathlib import Path
from typing import Any

from facewire.bench.common import ROOT, Broker, child_env, emit, note, stop_process
from facewire.bench.sim_nodes import SimNode, dataset_probes, run_nodes
from facewire.bench.under_test import Watcher
from facewire.devtools.broker import free_port

COLUMNS = [
    ("minute", "minute"),
    ("sent", "sent"),
    ("answered", "answered"),
    ("lost", "unanswered"),
    ("classifier_rss_mb", "classifier MB"),
    ("monitor_rss_mb", "monitor MB"),
    ("broker_rss_mb", "broker MB"),
    ("monitor_db_mb", "monitor DB MB"),
]
COLOURS = {"classifier": "#e78ac3", "monitor": "#66c2a5", "broker": "#8da0cb"}


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process, MB (Linux ``/proc``); ``None`` once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench soak",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=60.0, help="how long (default 60)")
    p.add_argument("--nodes", type=int, default=10, help="simulated edge nodes (default 10)")
    p.add_argument("--fps", type=float, default=5.0, help="messages/s per node (default 5)")
    p.add_argument(
        "--sample-s", type=float, default=60.0, help="seconds between samples (default 60)"
    )
    p.add_argument("--gallery", default="dataset/gallery", help="gallery folder")
    p.add_argument("--model", default="sface", help="embedder of the gallery (default sface)")
    p.add_argument("--out", type=Path, default=None, help="write the RSS chart here (SVG)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def run(args: argparse.Namespace, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    note("computing probe embeddings from dataset/probes …")
    probes, model_id = dataset_probes(args.model)
    port = free_port()
    db = work / "monitor.sqlite3"
    env = child_env(FACEWIRE_LOG="WARNING")
    with Broker() as broker:
        classifier = subprocess.Popen(
            [sys.executable, "-m", "facewire", "classifier", "--broker", broker.url,
             "--dataset", args.gallery, "--model", args.model],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        monitor = subprocess.Popen(
            [sys.executable, "-m", "facewire", "monitor", "--broker", broker.url,
             "--port", str(port), "--db", str(db)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        watcher = Watcher(broker.url)
        nodes: list[SimNode] = []
        samples: list[dict[str, Any]] = []
        try:
            if watcher.wait_status(lambda s: s.get("state") == "online", 300) is None:
                raise SystemExit("the classifier did not come online")
            nodes = [
                SimNode(f"soak{i:02d}", broker.url, model_id, probes, offset=i * 7)
                for i in range(args.nodes)
            ]
            for n in nodes:
                n.connect()
            stop = threading.Event()
            seconds = args.minutes * 60.0
            sender = threading.Thread(
                target=run_nodes, args=(nodes, args.fps, seconds, stop), daemon=True
            )
            start = time.monotonic()
            sender.start()
            next_at = start
            while True:
                now = time.monotonic()
                if now >= next_at:
                    samples.append(_sample(now - start, nodes, classifier, monitor, broker, db))
                    r = samples[-1]
                    note(
                        f"{r['minute']:6.1f} min: sent {r['sent']}, lost {r['lost']}, RSS "
                        f"classifier {r['classifier_rss_mb']} MB, monitor {r['monitor_rss_mb']} MB"
                    )
                    next_at += args.sample_s
                if not sender.is_alive():
                    break
                time.sleep(min(1.0, max(0.0, next_at - time.monotonic())))
            time.sleep(3.0)  # the last results
            samples.append(
                _sample(time.monotonic() - start, nodes, classifier, monitor, broker, db)
            )
        finally:
            for n in nodes:
                n.close()
            for proc in (classifier, monitor):
                stop_process(proc)
            watcher.close()
    last = samples[-1]
    totals = {
        "bench": "soak",
        "minutes": args.minutes,
        "nodes": args.nodes,
        "fps": args.fps,
        "sent": last["sent"],
        "answered": last["answered"],
        "lost": last["lost"],
        "errors": len(watcher.errors),
        "classifier_exit": classifier.returncode,
        "monitor_exit": monitor.returncode,
        **{
            f"{who}_rss_mb_{k}": f(s[f"{who}_rss_mb"] for s in samples if s[f"{who}_rss_mb"])
            for who in ("classifier", "monitor", "broker")
            for k, f in (("min", min), ("max", max))
        },
    }
    return samples, totals


def _sample(
    elapsed: float,
    nodes: list[SimNode],
    classifier: subprocess.Popen[bytes],
    monitor: subprocess.Popen[bytes],
    broker: Broker,
    db: Path,
) -> dict[str, Any]:
    sent = answered = 0
    for n in nodes:
        with n.lock:
            sent += len(n.sent)
            answered += len(n.latency_ms)
    return {
        "minute": round(elapsed / 60.0, 2),
        "sent": sent,
        "answered": answered,
        # at a sample, what is still under way; at the end, what never came
        "lost": sent - answered,
        "classifier_rss_mb": rss_mb(classifier.pid),
        "monitor_rss_mb": rss_mb(monitor.pid),
        "broker_rss_mb": rss_mb(broker.proc.pid) if broker.proc else None,
        "monitor_db_mb": round(db.stat().st_size / 2**20, 2) if db.exists() else None,
    }


def svg(samples: list[dict[str, Any]], title: str) -> str:
    """RSS over time, one line per process."""
    width, height, left, right, top, bottom = 900, 420, 70, 150, 50, 50
    xs = [float(s["minute"]) for s in samples]
    span_x = max(xs + [1.0])
    values = [
        float(s[f"{who}_rss_mb"])
        for s in samples
        for who in COLOURS
        if s[f"{who}_rss_mb"] is not None
    ]
    span_y = max(values + [1.0]) * 1.15
    step = next(s for s in (10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000) if span_y / s <= 10)
    span_y = step * (int(span_y // step) + 1)

    def px(minute: float, mb: float) -> tuple[float, float]:
        x = left + minute / span_x * (width - left - right)
        y = height - bottom - mb / span_y * (height - top - bottom)
        return x, y

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for i in range(int(span_y // step) + 1):
        _, y = px(0, i * step)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e6e6e6"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{i * step}</text>')
    out.append(f'<text x="{left - 50}" y="{top - 12}">RSS, MB</text>')
    for i in range(6):
        minute = span_x * i / 5
        x, _ = px(minute, 0)
        out.append(
            f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{minute:.0f}</text>'
        )
    out.append(f'<text x="{width - right + 6}" y="{height - bottom + 18}">minutes</text>')
    for k, (who, colour) in enumerate(COLOURS.items()):
        points = [
            px(float(s["minute"]), float(s[f"{who}_rss_mb"]))
            for s in samples
            if s[f"{who}_rss_mb"] is not None
        ]
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        y = top + 20 * k
        out.append(
            f'<line x1="{width - right + 10}" y1="{y}" x2="{width - right + 30}" y2="{y}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        out.append(f'<text x="{width - right + 36}" y="{y + 4}">{who}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.nodes < 1 or args.fps <= 0 or args.sample_s <= 0:
        raise SystemExit(
            "facewire bench soak: --minutes, --nodes, --fps and --sample-s must be > 0"
        )
    with tempfile.TemporaryDirectory(prefix="facewire-soak-") as tmp:
        samples, totals = run(args, Path(tmp))
    title = (
        f"soak: {args.nodes} nodes × {args.fps:g} fps for {args.minutes:g} min — "
        f"{totals['sent']} sent, {totals['lost']} lost"
    )
    if args.out is not None:
        args.out.write_text(svg(samples, title))
        note(f"wrote {args.out}")
    # the samples, then the run's totals as the last row
    emit("soak", [*samples, totals], COLUMNS, args.json, params=vars(args) | {"out": str(args.out)})
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in totals.items()))
    return 0 if totals["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
