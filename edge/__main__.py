"""``facewire edge``: run the face pipeline on a camera, video or folder; publish embeddings."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from facewire import config
from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.messages import Result
from facewire.config.cli import PIPELINE_FLAGS, add_setting_flag, overrides_from
from facewire.config.schema import EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.sources import open_source

log = logging.getLogger("facewire.edge")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire edge",
        description="Detect, align and embed faces on this device and publish only the vectors "
        "to faces/<node>/embedding. Settings: config/edge.yaml < FACEWIRE_* env < flags.",
        epilog="facewire edge install-service --help: run it as a systemd service "
        "(docs/raspberry-pi.md).",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: config/edge.yaml)"
    )
    for key in ("node", "source", "fps", "loop"):
        add_setting_flag(p, key, cls=EdgeConfig)
    p.add_argument("--frames", type=int, default=0, help="stop after this many frames (0: never)")
    for key in ("broker.url", *PIPELINE_FLAGS, "dedup_distance", "dedup_seconds", "detect_every"):
        add_setting_flag(p, key, cls=EdgeConfig)
    p.add_argument(
        "--print-results", action="store_true", help="print each result as a JSON line on stdout"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["install-service"]:
        from facewire.edge.service_unit import main as install_service

        return install_service(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(
            EdgeConfig,
            args.config or config.default_path("edge"),
            overrides=overrides_from(args),
        )
        transport = BusClient(cfg.broker, f"edge-{topics.check_node_id(cfg.node)}")
        node = EdgeNode(cfg, transport)
    except (config.ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"facewire edge: {exc}", file=sys.stderr)
        return 2
    if args.print_results:
        import json

        def print_result(result: Result, latency_ms: float | None) -> None:
            line = result.as_dict()
            if latency_ms is not None:  # capture → result on this edge's clock
                line["edge_latency_ms"] = round(latency_ms, 3)
            print(json.dumps(line), flush=True)

        node.on_result = print_result
    signal.signal(signal.SIGTERM, node.request_stop)
    signal.signal(signal.SIGINT, node.request_stop)
    # A refused password or a failed TLS check won't mend by retrying: stop, exit non-zero.
    transport.on_refused(lambda _reason: node.request_stop())
    node.start()
    if transport.refused is not None:
        return _refused(node, transport)
    log.info(
        "edge %s: %s at %s fps → %s (model %s)",
        node.node,
        cfg.source,
        cfg.fps,
        node.bus.address,
        node.pipeline.model_id,
    )
    try:
        node.run(open_source(cfg.source, cfg.fps, cfg.loop), max_frames=args.frames)
    except (RuntimeError, FileNotFoundError) as exc:
        log.error("source %s: %s", cfg.source, exc)
        node.close(drain_s=1.0)
        return 1
    if transport.refused is not None:
        return _refused(node, transport)
    node.close()
    log.info(
        "edge %s stopped: %d sent, %d results, latency %s",
        node.node,
        node.sent,
        node.results,
        node.status().latency_ms,
    )
    return 0


def _refused(node: EdgeNode, transport: BusClient) -> int:
    """Say why the broker would not have us, and give up (exit status 3)."""
    print(
        f"facewire edge: {transport.address} would not let node {node.node!r} in: "
        f"{transport.refused}. Check broker.username (the node id), broker.password "
        "(facewire nodes passwd) and, for mqtts://, broker.ca_certs.",
        file=sys.stderr,
    )
    node.close(drain_s=0.0)
    return 3


if __name__ == "__main__":
    raise SystemExit(main())
