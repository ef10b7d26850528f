"""The classifier under test for ``bench pipeline``: a child process (``facewire
classifier``, or a synthetic gallery via ``python -m facewire.bench.pipeline
_classifier``) or a service in this process; and a watcher of its status and errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from facewire.bench.common import (
    ROOT,
    broker_config,
    child_env,
    note,
    stop_process,
    synthetic_gallery,
)

log = logging.getLogger("facewire.bench")


# -- the synthetic classifier (a child process) -------------------------------------------


def synthetic_index(n: int, dim: int, cfg: Any) -> Any:
    """A ``GalleryIndex`` on ``synthetic_gallery(n, dim)`` (10 vectors per identity)."""
    from facewire.classifier.search import Matcher
    from facewire.classifier.service import GalleryIndex

    vectors, labels = synthetic_gallery(n, dim)
    matcher = Matcher.from_config(vectors, labels, cfg.search)
    return GalleryIndex(
        matcher,
        synthetic_model_id(dim),
        len(set(labels)),
        n,
        f"synthetic-{n}x{dim}",
        None,
    )


def synthetic_model_id(dim: int) -> str:
    return f"synthetic-{dim}d"


def serve(argv: list[str]) -> int:
    """``python -m facewire.bench.pipeline _classifier``: ClassifierService on a synthetic gallery.

    The same service object and start/stop sequence as ``facewire classifier``; only
    the gallery is made up instead of read from a folder.
    """
    from facewire import config
    from facewire.bus.client import BusClient
    from facewire.classifier.service import GIL_SWITCH_INTERVAL_S, ClassifierService
    from facewire.config.schema import ClassifierConfig

    p = argparse.ArgumentParser(prog="bench.pipeline _classifier")
    p.add_argument("--broker", required=True)
    p.add_argument("--synthetic", type=int, required=True)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch-max", type=int, default=64)
    p.add_argument("--client-id", default="bench-classifier")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = config.load(
        ClassifierConfig,
        overrides={"broker.url": args.broker, "batch_max": args.batch_max},
        env={},
    )
    index = synthetic_index(args.synthetic, args.dim, cfg)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)  # as the classifier's main does
    transport = BusClient(cfg.broker, args.client_id)
    service = ClassifierService(cfg, index, transport).start()
    signal.signal(signal.SIGTERM, service.request_stop)
    signal.signal(signal.SIGINT, service.request_stop)
    service.wait()
    service.stop()
    return 0


# -- the classifier: child process or in-process -----------------------------------------------


class Watcher:
    """Follows the classifier's retained status and every ``…/error`` notice."""

    def __init__(self, url: str) -> None:
        from facewire.bus import topics
        from facewire.bus.client import BusClient

        self.status: dict[str, Any] = {}
        self.errors: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.bus = BusClient(broker_config(url), "bench-watch")
        self.bus.subscribe(topics.CLASSIFIER_STATUS, self._on_status, qos=1)
        self.bus.subscribe(topics.ERRORS, self._on_error, qos=0)
        self.bus.connect()

    def _on_status(self, m: Any) -> None:
        from facewire.bus.errors import WireError
        from facewire.bus.messages import ClassifierStatus

        try:
            status = ClassifierStatus.decode(m.payload).as_dict()
        except WireError:
            return
        with self.changed:
            self.status = status
            self.changed.notify_all()

    def _on_error(self, m: Any) -> None:
        from facewire.bus.messages import ErrorReport

        with contextlib.suppress(ValueError):
            self.errors.append(ErrorReport.decode(m.payload).as_dict())

    def wait_status(self, cond: Any, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (self.status and cond(self.status)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(min(remaining, 0.5))
            return dict(self.status)

    def close(self) -> None:
        self.bus.close()


@dataclass
class Classifier:
    proc: subprocess.Popen[bytes] | None = None
    service: Any = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.service is not None:
            self.service.stop()


def start_classifier(args: argparse.Namespace, url: str) -> Classifier:
    if args.inprocess:
        from facewire import config
        from facewire.bus.client import BusClient
        from facewire.classifier.service import ClassifierService
        from facewire.config.schema import ClassifierConfig

        cfg = config.load(
            ClassifierConfig,
            overrides={
                "broker.url": url,
                "batch_max": args.batch_max,
                "dataset": args.gallery,
                "pipeline.model": args.model,
            },
            env={},
        )
        if args.synthetic:
            index = synthetic_index(args.synthetic, args.dim, cfg)
        else:
            from facewire.classifier.__main__ import load_index

            index = load_index(cfg, progress=False)
        transport = BusClient(cfg.broker, "bench-classifier")
        return Classifier(service=ClassifierService(cfg, index, transport).start())
    if args.synthetic:
        cmd = [
            sys.executable,
            "-m",
            "facewire.bench.pipeline",
            "_classifier",
            "--broker",
            url,
            "--synthetic",
            str(args.synthetic),
            "--dim",
            str(args.dim),
            "--batch-max",
            str(args.batch_max),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "facewire",
            "classifier",
            "--broker",
            url,
            "--dataset",
            str(args.gallery),
            "--model",
            args.model,
            "--client-id",
            "bench-classifier",
        ]
    env = child_env(FACEWIRE_BATCH_MAX=str(args.batch_max), FACEWIRE_LOG="WARNING")
    if args.faiss_threads > 0:
        env["OMP_NUM_THREADS"] = str(args.faiss_threads)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return Classifier(proc=proc)


def start_profiler(args: argparse.Namespace, classifier: Classifier) -> Any:
    """``--profile FILE``: py-spy samples the classifier for the measured seconds."""
    if not args.profile:
        return None
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    pid = classifier.proc.pid if classifier.proc is not None else os.getpid()
    fmt = "speedscope" if args.profile.endswith(".json") else "raw"
    if args.profile.endswith(".svg"):
        fmt = "flamegraph"
    cmd = [exe, "record", "--pid", str(pid), "--rate", "250", "--duration"]
    cmd += [str(max(1, round(args.seconds))), "--format", fmt, "-o", args.profile]
    note(f"profiling pid {pid} → {args.profile}")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
