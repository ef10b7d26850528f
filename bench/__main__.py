"""``facewire bench <name> [options]`` (or ``python -m facewire.bench``): run one benchmark, or all.

Each bench prints a table (``--json``: one JSON object per line) and writes
``bench/results/<name>.json``. ``all`` runs every bench with quick settings; ``plot``
draws e2e / edge results as a picture.
"""

from __future__ import annotations

import importlib
import sys

# name → (module with main(argv), one-line help)
BENCHES: dict[str, tuple[str, str]] = {
    "embed": ("facewire.bench.embed", "embedder speed: ONNX fp32/int8 vs PyTorch"),
    "edge": ("facewire.bench.edge", "edge per-frame time per stage, capture → published"),
    "classifier": ("facewire.bench.classifier", "classifier alone: embeddings/s by gallery size"),
    "pipeline": (
        "facewire.bench.pipeline",
        "publish → result latency, N nodes through a real broker",
    ),
    "e2e": (
        "facewire.bench.endtoend",
        "capture → result with real edge, classifier and broker processes",
    ),
    "startup": ("facewire.bench.startup", "classifier ready time, cold and with a warm cache"),
    "gallery": ("facewire.bench.gallery", "search index by gallery size: build, memory, recall"),
    "edge-cpu": (
        "facewire.bench.edge_cpu",
        "edge CPU per second of video, one person, skipping named faces off / on",
    ),
    "soak": ("facewire.bench.soak", "hours of traffic: RSS of classifier, monitor, broker; lost"),
    "screen": ("facewire.bench.screen", "frame → name painted in a headless browser on /log/html"),
}

#: ``all``: each bench with quick settings (minutes, not tens of minutes)
QUICK: dict[str, list[str]] = {
    "embed": ["--repeats", "10", "--sweep-repeats", "5"],
    "edge": ["--repeats", "30"],
    "classifier": ["--sizes", "1000,10000", "--seconds", "1"],
    "pipeline": ["--nodes", "8", "--fps", "15", "--seconds", "5", "--synthetic", "10000"],
    "e2e": ["--seconds", "8"],
    "startup": ["--images", "200", "--restarts", "2"],
    "gallery": ["--sizes", "10000,100000", "--queries", "1000"],
    "edge-cpu": ["--seconds", "5", "--warmup", "3"],
    "soak": ["--minutes", "1", "--sample-s", "15"],
    "screen": ["--seconds", "8"],
}


def usage() -> str:
    width = max(map(len, [*BENCHES, "all"]))
    lines = ["usage: facewire bench <name> [options]   (facewire bench <name> --help)", ""]
    lines += [f"  {n:<{width}}  {text}" for n, (_, text) in BENCHES.items()]
    lines.append(f"  {'all':<{width}}  every bench above with quick settings ([--json])")
    lines.append(f"  {'plot':<{width}}  draw e2e / edge results as stacked bars per stage (SVG)")
    return "\n".join(lines)


def run(name: str, argv: list[str]) -> int:
    try:
        module = importlib.import_module(BENCHES[name][0])
    except ModuleNotFoundError as exc:
        if exc.name != BENCHES[name][0]:
            raise
        print(f"facewire bench: {name!r} is not available in this checkout", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "plot":  # not a bench: draws what e2e / edge wrote
        from facewire.bench.plot import main as plot

        return plot(rest)
    if name == "all":
        extra = [a for a in rest if a == "--json"]
        failed = []
        for bench in BENCHES:
            print(f"== {bench}", file=sys.stderr, flush=True)
            if run(bench, QUICK[bench] + extra) != 0:
                failed.append(bench)
        if failed:
            print(f"facewire bench all: failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0
    if name not in BENCHES:
        print(f"facewire bench: unknown bench {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    raise SystemExit(main())
