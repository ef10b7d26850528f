"""``facewire <command> [...]``: one entry point that routes to each part's own ``main``.

Commands are imported only when run, so ``facewire --help`` stays instant and the
edge never imports the monitor (or the other way round).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# command → (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("facewire.demo", "run broker, classifier, monitor and two replaying edge nodes"),
    "edge": ("facewire.edge.__main__", "the edge daemon: camera/video/folder → embeddings on MQTT"),
    "enroll": ("facewire.edge.enroll", "teach the classifier a person from this edge's camera"),
    "classifier": (
        "facewire.classifier.__main__",
        "the classifier service: embeddings → names on MQTT",
    ),
    "gallery": (
        "facewire.classifier.gallery_cli",
        "the gallery's people: list, add photos, remove, forget every trace",
    ),
    "monitor": ("facewire.monitor.__main__", "the web monitor (Flask, http://127.0.0.1:6010)"),
    "eval": (
        "facewire.evaluation.evaluate",
        "offline accuracy of the pipeline on a gallery + probes",
    ),
    "models": ("facewire.models.commands", "prepare, export and list model files"),
    "bench": ("facewire.bench.__main__", "benchmarks: embed, edge, classifier, pipeline"),
    "config": ("facewire.config.cli", "every setting (reference) or what a service would run with"),
    "nodes": ("facewire.nodes_cli", "broker accounts, ACL and keys of nodes: add, remove, list"),
    "certs": ("facewire.certs_cli", "a lab CA and TLS certificates for the broker and clients"),
    "doctor": ("facewire.doctor", "check broker, login, TLS, models, gallery; say what to fix"),
    "status": ("facewire.status_cli", "the nodes, classifier and gallery, as the monitor shows"),
    "healthcheck": ("facewire.healthcheck", "container health checks (docker-compose.yml)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: facewire <command> [options]   (facewire <command> --help for its options)",
        "",
        "Distributed face recognition over MQTT.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def quiet_native_logs() -> None:
    """MediaPipe/TFLite and ONNX Runtime print C++ info lines to stderr; keep errors only."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from facewire import __version__

        print(f"facewire {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"facewire: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    quiet_native_logs()
    logging.basicConfig(
        level=os.environ.get("FACEWIRE_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # "no AVX512 module" chatter
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)
