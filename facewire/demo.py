"""``facewire demo``: broker, classifier, monitor and two edge nodes replaying sample faces.

Node ``door`` replays the probe photos of people in the gallery, node ``office`` the
photos of people who are not; the monitor shows who was seen. Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_broker(port: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    """Start mosquitto with the repo's mosquitto.conf on ``port``; None if one already runs."""
    if port_open(port):
        print(f"using the MQTT broker already listening on 127.0.0.1:{port}")
        return None
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if exe is None:
        raise SystemExit(
            "mosquitto is not installed. Install it with:  sudo apt-get install -y mosquitto\n"
            "(./dev.sh demo does that for you), or point the demo at a broker with --broker-port."
        )
    conf = (ROOT / "mosquitto.conf").read_text().replace("listener 1883 ", f"listener {port} ")
    path = workdir / "mosquitto.conf"
    path.write_text(conf)
    proc = subprocess.Popen(
        [exe, "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"mosquitto did not start on port {port}: {err}")
        time.sleep(0.1)
    print(f"started mosquitto on 127.0.0.1:{port}")
    return proc


def wait_classifier_ready(
    broker_url: str, proc: subprocess.Popen[bytes], timeout: float = 600
) -> None:
    from facewire.bus import topics
    from facewire.bus.client import BusClient, Message
    from facewire.bus.errors import WireError
    from facewire.bus.messages import ClassifierStatus
    from facewire.config.schema import BrokerConfig

    ready = threading.Event()

    def on_status(m: Message) -> None:
        try:
            if m.payload and ClassifierStatus.decode(m.payload).state == "online":
                ready.set()
        except WireError:
            pass

    client = BusClient(BrokerConfig(url=broker_url), "demo-watch")
    client.subscribe(topics.CLASSIFIER_STATUS, on_status)
    client.connect()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.5):
            if proc.poll() is not None:
                raise SystemExit("the classifier exited while building its gallery (see above)")
            if time.monotonic() > deadline:
                raise SystemExit("the classifier did not come up in time")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="facewire demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--broker-port",
        type=int,
        default=1883,
        help="MQTT port; an already running broker there is used (default: %(default)s)",
    )
    p.add_argument(
        "--monitor-port", type=int, default=6010, help="web monitor port (default: %(default)s)"
    )
    p.add_argument(
        "--fps",
        type=float,
        default=2.0,
        help="replay rate of each edge node (default: %(default)s)",
    )
    p.add_argument(
        "--dataset",
        type=Path,
        default=ROOT / "dataset",
        help="folder with gallery/, probes/, unknown/",
    )
    p.add_argument(
        "--model",
        default=None,
        help="embedder for edge and classifier (default: pipeline.model of config/pipeline.yaml)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=0,
        help="stop by itself after this long (0: run until Ctrl-C)",
    )
    args = p.parse_args(argv)

    broker_url = f"mqtt://127.0.0.1:{args.broker_port}"
    py = [sys.executable, "-m", "facewire"]
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    with tempfile.TemporaryDirectory(prefix="facewire-demo-") as tmp:
        try:
            broker = start_broker(args.broker_port, Path(tmp))
            if broker is not None:
                procs.append(("mosquitto", broker))
            common = ["--broker", broker_url, *(["--model", args.model] if args.model else [])]

            def spawn(name: str, *cmd: str) -> subprocess.Popen[bytes]:
                # own session: a terminal's Ctrl-C reaches only the demo, which then
                # stops the parts in order (edges first, broker last)
                # the edges replay photos of different people at one spot: embed each one
                env = {**os.environ, "FACEWIRE_REEMBED_NAMED_S": "0"}
                proc = subprocess.Popen([*py, *cmd], cwd=ROOT, start_new_session=True, env=env)
                procs.append((name, proc))
                return proc

            gallery = str(args.dataset / "gallery")
            classifier = spawn("classifier", "classifier", "--dataset", gallery, *common)
            print("building the gallery (first run embeds every photo; later runs use the cache) …")
            wait_classifier_ready(broker_url, classifier)
            (ROOT / "var").mkdir(exist_ok=True)
            db = str(ROOT / "var" / "demo.sqlite3")
            spawn(
                "monitor",
                "monitor",
                "--broker",
                broker_url,
                "--port",
                str(args.monitor_port),
                "--db",
                db,
            )
            for node, folder in (("door", "probes"), ("office", "unknown")):
                source = str(args.dataset / folder)
                fps = str(args.fps)
                spawn(
                    f"edge {node}",
                    "edge",
                    "--node",
                    node,
                    "--source",
                    source,
                    "--loop",
                    "--fps",
                    fps,
                    *common,
                )
            print(
                f"\n  facewire demo running — open http://127.0.0.1:{args.monitor_port}/log/html"
                "\n  (nodes: /nodes/html, thresholds: /threshold_stats/html)."
                " Ctrl-C stops everything.\n",
                flush=True,
            )
            started = time.monotonic()
            while not stopping.wait(0.5):
                dead = [(n, pr.returncode) for n, pr in procs if pr.poll() is not None]
                if dead:
                    print(
                        f"facewire demo: {dead[0][0]} exited with code {dead[0][1]}; stopping",
                        file=sys.stderr,
                    )
                    return 1
                if args.seconds and time.monotonic() - started > args.seconds:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            # edges first (they drain their results), the broker last
            for name, proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM if name == "mosquitto" else signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print("facewire demo stopped")
    return 0
