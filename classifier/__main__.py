"""``facewire classifier``: build the gallery, then name every embedding on the broker."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from facewire import config
from facewire.bus.client import BusClient
from facewire.bus.sealing import classifier_keys, key_folder
from facewire.classifier.keeper import EmptyGallery, GalleryKeeper, Reloader
from facewire.classifier.metrics import MetricsServer
from facewire.classifier.service import GIL_SWITCH_INTERVAL_S, ClassifierService, GalleryIndex
from facewire.config.cli import PIPELINE_FLAGS, SEARCH_FLAGS, add_setting_flag, overrides_from
from facewire.config.schema import ClassifierConfig

log = logging.getLogger("facewire.classifier")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire classifier",
        description="Build the gallery (same face pipeline as the edge), subscribe to "
        "faces/+/embedding and publish faces/<node>/result, faces/classifier/status and "
        "faces/stats/thresholds. Settings: config/classifier.yaml < FACEWIRE_* env < flags.",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: config/classifier.yaml)"
    )
    for key in ("dataset", "group", "queue_size"):
        add_setting_flag(p, key, cls=ClassifierConfig)
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="re-embed every gallery image instead of using the cache",
    )
    for key in ("broker.url", *PIPELINE_FLAGS, *SEARCH_FLAGS, "client_id"):
        add_setting_flag(p, key, cls=ClassifierConfig)
    return p


def load_config(args: argparse.Namespace) -> ClassifierConfig:
    return config.load(
        ClassifierConfig,
        args.config or config.default_path("classifier"),
        overrides=overrides_from(args),
    )


def load_index(
    cfg: ClassifierConfig, use_cache: bool = True, progress: bool = True
) -> GalleryIndex:
    """The gallery of ``cfg.dataset`` as it is now, searchable (no reloading)."""
    keeper = GalleryKeeper(cfg, use_cache=use_cache, progress=progress)
    try:
        return keeper.build().index
    except EmptyGallery as exc:
        raise SystemExit(str(exc)) from None
    finally:
        keeper.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except config.ConfigError as exc:
        print(f"facewire classifier: {exc}", file=sys.stderr)
        return 2
    if cfg.sealing.enabled:  # before the gallery is built: a missing key is quick to say
        try:
            classifier_keys(key_folder(cfg.sealing.keys), cfg.sealing.window_s)
        except ValueError as exc:
            print(
                f"facewire classifier: sealing.enabled, but {exc} (facewire nodes init)",
                file=sys.stderr,
            )
            return 2
    keeper = GalleryKeeper(cfg, use_cache=not args.no_cache, progress=sys.stderr.isatty())
    try:
        index = keeper.build().index
    except (EmptyGallery, FileNotFoundError) as exc:
        print(f"facewire classifier: {exc}", file=sys.stderr)
        keeper.close()
        return 1
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # process-wide: so only here, in main
    # a stable id and a persistent session: the broker keeps what arrives while it restarts
    transport = BusClient(
        cfg.broker,
        cfg.client_id,
        clean_start=cfg.session_expiry_s == 0,
        session_expiry_s=cfg.session_expiry_s,
    )
    service = ClassifierService(cfg, index, transport)
    metrics = None
    if cfg.metrics.enabled:
        try:
            metrics = MetricsServer.start(service, cfg.metrics)
        except OSError as exc:  # the port taken: say so now, not on the first scrape
            print(
                f"facewire classifier: metrics on {cfg.metrics.host}:{cfg.metrics.port}: {exc} "
                "(metrics.port, or metrics.enabled: false)",
                file=sys.stderr,
            )
            keeper.close()
            return 2
    service.start()
    reloader = Reloader(keeper, service).start()
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    service.wait()
    reloader.stop()
    service.stop()
    if metrics is not None:
        metrics.stop()
    keeper.close()
    log.info("classifier stopped after %d messages", service.processed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
