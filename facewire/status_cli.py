"""``facewire status``: the nodes, the classifier and its gallery, as the monitor's
nodes page shows them, in the terminal.

It reads what the broker keeps: the retained ``faces/+/status`` of every node and
``faces/classifier/status`` (and ``faces/stats/thresholds``), through the same
:class:`facewire.monitor.state.State` the monitor fills, so the two cannot disagree.
It needs an account that may read the statuses: the monitor's (``--config`` a monitor
config, or ``FACEWIRE_BROKER_*``). Where the broker sets ``use_username_as_clientid``
(the deployment configs do), that login briefly takes the monitor's place.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import facewire.config as config
from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.errors import WireError
from facewire.bus.messages import ClassifierStatus, EdgeStatus
from facewire.bus.transport import Message
from facewire.config.schema import MonitorConfig
from facewire.monitor.state import State

#: how long to listen for the retained statuses after the subscription is acknowledged
DEFAULT_WAIT_S = 1.0


def add_broker_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PATH",
        help="YAML with the broker section to use (default: config/monitor.yaml of this "
        "install; FACEWIRE_BROKER, FACEWIRE_BROKER_USERNAME, ... override it)",
    )
    p.add_argument("--broker", default=None, metavar="URL", help="broker URL (overrides config)")


def broker_settings(args: argparse.Namespace) -> MonitorConfig:
    """The monitor's settings (its broker account reads every status)."""
    path: Any = args.config
    if path is None:
        default = config.default_path("monitor")
        path = default if default.exists() else None
    return config.load(MonitorConfig, path, overrides={"broker.url": args.broker})


def collect(cfg: MonitorConfig, wait_s: float = DEFAULT_WAIT_S, timeout: float = 5.0) -> State:
    """Subscribe, take the retained statuses for ``wait_s``, disconnect.

    ``TimeoutError`` / ``ConnectionError`` as :meth:`BusClient.connect` raises them."""
    state = State(max_nodes=cfg.max_nodes)
    lock = threading.Lock()

    def handle(msg: Message) -> None:
        with lock:
            try:
                if msg.topic == topics.CLASSIFIER_STATUS:
                    status = ClassifierStatus.decode(msg.payload) if msg.payload else None
                    state.classifier_status(status.as_dict() if status else None)
                elif msg.topic == topics.THRESHOLDS:
                    state.count("thresholds")
                elif topics.is_node_topic(msg.topic):
                    node = topics.parse(msg.topic)
                    if msg.payload:
                        state.node_status(node, EdgeStatus.decode(msg.payload).as_dict())
                    else:
                        state.forget_node_status(node)
            except WireError as exc:
                state.malformed(msg.topic, str(exc), bytes(msg.payload or b""))

    bus = BusClient(cfg.broker, f"facewire-status-{time.monotonic_ns() % 10**6}")
    bus.subscribe(topics.STATUSES, handle, qos=1)
    bus.subscribe(topics.THRESHOLDS, handle, qos=1)
    bus.connect(timeout=timeout)
    try:
        time.sleep(wait_s)  # retained messages arrive right after the SUBACK
    finally:
        bus.close()
    with lock:
        return state


def _ago(ts: Any, now: float) -> str:
    if not isinstance(ts, int | float):
        return "-"
    s = max(0.0, now - float(ts))
    if s < 120:
        return f"{s:.0f}s ago"
    return f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def _ms(p: Any) -> str:
    if not isinstance(p, dict) or p.get("p50") is None:
        return "-"
    p99 = p.get("p99")
    return f"{p['p50']:.0f}/{p99:.0f}" if isinstance(p99, int | float) else f"{p['p50']:.0f}"


def render(state: State, now: float | None = None) -> str:
    """The text ``facewire status`` prints."""
    now = time.time() if now is None else now
    lines: list[str] = []
    c = state.classifier()
    lines.append("classifier")
    if c is None:
        lines.append("  no status on the broker: the classifier never ran against it")
    else:
        g = c.get("gallery") or {}
        thr = c.get("threshold")
        lines += [
            f"  state      {c.get('state')}   (status {_ago(c.get('ts'), now)})",
            f"  model      {c.get('model') or '-'}",
            f"  gallery    {g.get('identities', '-')} people, {g.get('vectors', '-')} vectors, "
            f"version {g.get('version', '-')}, index {g.get('index', '-')}",
            f"  threshold  {thr if thr is not None else '-'} ({c.get('threshold_source') or '-'})",
            f"  processed  {c.get('processed', '-')}   rejected {c.get('rejected', '-')}   "
            f"{c.get('messages_per_s') or 0:.1f} msg/s",
        ]
    nodes = state.nodes(now)
    lines.append("")
    lines.append(f"nodes ({len(nodes)})")
    if not nodes:
        lines.append("  none has published a status")
    else:
        header = ("node", "state", "model", "fps", "capture→result p50/p99 ms", "sent", "status")
        rows = [
            (
                n["node"],
                n["state"] + (" (stale)" if n.get("stale") else ""),
                str(n.get("model") or "-"),
                "-" if n.get("fps") is None else f"{n['fps']:.1f}",
                _ms(n.get("latency_ms")),
                "-" if n.get("sent") is None else str(n["sent"]),
                _ago(n.get("ts"), now),
            )
            for n in nodes
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for r in (header, *rows):
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        if c is not None and c.get("model"):
            other = [n["node"] for n in nodes if n.get("model") and n["model"] != c["model"]]
            if other:
                lines.append(
                    f"  ! {', '.join(other)}: another model than the classifier's; their "
                    "faces are refused (wrong_model): run the same pipeline settings"
                )
    if state.malformed_total:
        lines.append(f"\n{state.malformed_total} status message(s) did not decode")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire status",
        description="Print the nodes, the classifier and its gallery as the monitor shows "
        "them, from the statuses the broker keeps (faces/+/status, faces/classifier/status). "
        "Exit status 0 when the classifier is online, 1 when it is not, 2 when the broker "
        "cannot be reached or refuses the login.",
    )
    add_broker_options(p)
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help="listen this long for the statuses (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="the nodes and classifier as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.wait < 0:
        print("facewire status: --wait must be >= 0", file=sys.stderr)
        return 2
    try:
        cfg = broker_settings(args)
        state = collect(cfg, args.wait)
    except config.ConfigError as exc:
        print(f"facewire status: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, ConnectionError, ValueError) as exc:
        print(f"facewire status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"classifier": state.classifier(), "nodes": state.nodes()}, indent=2))
    else:
        print(render(state))
    c = state.classifier()
    return 0 if c is not None and c.get("state") == "online" else 1
