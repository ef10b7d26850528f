"""``facewire bench embed``: how long one face takes to embed, per backend, on this CPU.

Measured in one run on the same real face crops (the face pipeline's own aligned,
masked crops of the photos in ``--crops``, default the sample gallery):

- CLIP ViT-B/32 in PyTorch, the way the original system ran it: transformers'
  ``CLIPImageProcessor`` (Pillow) on the crops, then the model under
  ``torch.no_grad()``, fp32, torch's default threads;
- the same weights exported to ONNX, fp32 and int8, run by ONNX Runtime through the
  edge's own embedder (``clip_preprocess`` + ``session.run`` + L2 normalisation);
- SFace (``models/sface.onnx``), the face-specific alternative.

Each at batch 1 and batch 4 (a frame with four faces is embedded in one call). Times
are per crop (a batch-4 call's time / 4), preprocessing included; ``pre_p50_ms`` is
the preprocessing part alone. The configurations are measured round-robin — one call
of each per round — so a busy, shared machine slows them alike and the ratios stay
fair. Before that, a sweep of ONNX Runtime session options (intra-op threads 1 / 2 /
default, graph optimisation basic / extended / all, memory arena on / off) on the
int8 model at batch 1 picks the options used for every ONNX row.

CLIP files come from the models folder when they are there (real or random weights,
as their sidecar says); otherwise a random-init ViT-B/32 — same graph, same cost — is
exported into a temporary folder first (needs the ``export`` extra). PyTorch
runs the same weights: the same seed for a random-init export, the local hub cache
for real ones (random weights of the same architecture if that is not there: the cost
does not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import ROOT, emit, fmt, machine, note, summary, table
from facewire.bench.ort_sweep import SWEEP_COLUMNS, choose, ort_options, settle, sweep

COLUMNS = [
    ("model", "model"),
    ("backend", "backend"),
    ("batch", "batch"),
    ("p50_ms", "p50 ms/face"),
    ("p99_ms", "p99 ms/face"),
    ("pre_p50_ms", "of which preprocess"),
    ("speedup_vs_pytorch", "× PyTorch (p50)"),
    ("speedup_vs_pytorch_1thread", "× PyTorch 1 thread"),
    ("n", "calls"),
]


# -- the crops ---------------------------------------------------------------------------


def face_crops(folder: Path, size: int, count: int, detect: bool = True) -> list[np.ndarray]:
    """Up to ``count`` crops as the edge makes them (detect → mesh → align), one per
    photo; or, without ``detect``, the photos resized."""
    import cv2

    from facewire.models.files import spread_photos
    from facewire.models.pipeline import face_crops as edge_crops

    if detect:
        return edge_crops(folder, size, count)
    files = spread_photos(folder)[:count]
    images = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
    return [cv2.resize(i, (size, size)) for i in images if i is not None]


# -- the CLIP files and the PyTorch model -------------------------------------------------


@contextlib.contextmanager
def clip_files(models_dir: str) -> Iterator[tuple[Path, str]]:
    """(folder holding the int8 CLIP file and maybe the fp32 one, where they came from)."""
    from facewire.models.embedders import model_path

    int8 = model_path("clip-vit-b32-int8", models_dir)
    if int8.exists():  # an edge device may hold the int8 file only
        yield int8.parent, f"{int8.parent}"
        return
    from facewire.models.tools.export_clip import export_clip

    with tempfile.TemporaryDirectory(prefix="facewire-clip-") as tmp:
        note("no CLIP files in the models folder: exporting a random-init ViT-B/32 (~30 s)")
        export_clip(Path(tmp), random_init=True)
        yield Path(tmp), "random-init export made for this run"


def torch_model_for(info: dict[str, Any]) -> tuple[Any, str]:
    """The PyTorch model with the weights of the exported file, as far as available."""
    from facewire.models.tools.clip_load import HUB_NAME, ExportError, load_model, random_model

    if info.get("random_init"):
        seed = int(info.get("seed", 0))
        return random_model(seed), f"random init, seed {seed} (same weights as the ONNX files)"
    try:
        loaded = load_model(hub_name=info.get("hub_name", HUB_NAME), local_only=True)
        return loaded.model, loaded.source
    except ExportError:
        return random_model(0), "random weights, same architecture (hub files not cached here)"


# -- timing ---------------------------------------------------------------------------------


@dataclass
class Backend:
    """One row of the table: ``run(crops)`` embeds a batch, returns preprocess seconds."""

    model: str
    backend: str
    batch: int
    run: Callable[[Sequence[np.ndarray]], float]
    total_ms: list[float] = field(default_factory=list)
    pre_ms: list[float] = field(default_factory=list)

    def once(self, crops: Sequence[np.ndarray]) -> None:
        t0 = time.perf_counter()
        pre_s = self.run(crops)
        elapsed = time.perf_counter() - t0
        self.total_ms.append(elapsed * 1000.0 / len(crops))
        self.pre_ms.append(pre_s * 1000.0 / len(crops))

    def row(self) -> dict[str, Any]:
        s = summary(self.total_ms)
        return {
            "kind": "embed",
            "model": self.model,
            "backend": self.backend,
            "batch": self.batch,
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "pre_p50_ms": round(statistics.median(self.pre_ms), 3),
            "n": len(self.total_ms),
        }


def round_robin(
    backends: list[Backend], crops: dict[int, list[np.ndarray]], repeats: int, gap_s: float
) -> None:
    """Warm each up, then ``repeats`` rounds of one call each, cycling through the crops."""
    pools = [crops[112 if b.model == "sface" else 224] for b in backends]
    for b, pool in zip(backends, pools, strict=True):  # first calls allocate, page in weights
        for _ in range(2):
            b.run(pool[: b.batch])
    for r in range(repeats):
        for b, pool in zip(backends, pools, strict=True):
            start = r * b.batch
            settle(gap_s)
            b.once([pool[(start + i) % len(pool)] for i in range(b.batch)])
        if (r + 1) % 10 == 0:
            note(f"  round {r + 1}/{repeats}")


def onnx_backend(embedder: Any, batch: int, model: str, backend: str = "onnxruntime") -> Backend:
    from facewire.models.embedders import l2_normalise

    def run(crops: Sequence[np.ndarray]) -> float:
        t0 = time.perf_counter()
        x = embedder.preprocess(crops)
        pre = time.perf_counter() - t0
        out = embedder.session.run(None, {embedder._input: x})[0]
        l2_normalise(out)
        return pre

    return Backend(model, backend, batch, run)


def torch_backend(model: Any, batch: int, threads: int = 0) -> Backend:
    """``threads`` 0: torch's default (all cores), as the original system ran it."""
    import torch
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor()
    default_threads = torch.get_num_threads()

    def run(crops: Sequence[np.ndarray]) -> float:
        torch.set_num_threads(threads or default_threads)
        t0 = time.perf_counter()
        pixels = processor(images=[c[:, :, ::-1] for c in crops], return_tensors="pt")
        pre = time.perf_counter() - t0
        with torch.no_grad():
            feats = model(pixel_values=pixels["pixel_values"]).image_embeds
            feats = feats / feats.norm(dim=-1, keepdim=True)
        feats.numpy()
        torch.set_num_threads(default_threads)
        return pre

    name = "pytorch" if not threads else f"pytorch ({threads} thread{'s' if threads > 1 else ''})"
    return Backend("clip-vit-b32", name, batch, run)


# -- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facewire bench embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="one JSON object per line (sweep rows too)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per row (default 30)")
    p.add_argument(
        "--sweep-repeats", type=int, default=15, help="calls per ORT option set (default 15)"
    )
    p.add_argument(
        "--no-sweep", action="store_true", help="skip the option sweep, use the embedders' defaults"
    )
    p.add_argument(
        "--crops",
        type=Path,
        default=ROOT / "dataset" / "gallery",
        help="photos to take the face crops from (default: the sample gallery)",
    )
    p.add_argument("--count", type=int, default=16, help="how many crops (default 16)")
    p.add_argument(
        "--no-detect", action="store_true", help="use the photos as crops, no face pipeline"
    )
    p.add_argument("--batches", default="1,4", help="batch sizes (default 1,4)")
    p.add_argument("--models-dir", default="", help="where the model files are (default: models/)")
    p.add_argument(
        "--no-torch", action="store_true", help="skip PyTorch (no export extra installed)"
    )
    p.add_argument(
        "--gap-ms",
        type=float,
        default=50.0,
        help="pause before each timed call so the previous call's threads stop spinning "
        "(default 50)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from facewire.models.embedders import get_embedder, model_path
    from facewire.models.files import read_sidecar

    batches = [int(b) for b in args.batches.split(",")]
    note(f"face crops from {args.crops} ...")
    crops = {
        224: face_crops(args.crops, 224, args.count, not args.no_detect),
        112: face_crops(args.crops, 112, args.count, not args.no_detect),
    }
    if not crops[224] or not crops[112]:
        raise SystemExit(f"no face crops from {args.crops} (try --no-detect)")
    notes = [f"{len(crops[224])} face crops from {args.crops.name}/ (detect → mesh → align)"]

    with clip_files(args.models_dir) as (clip_dir, clip_source):
        clip_info = read_sidecar(clip_dir / "clip-vit-b32-int8.onnx")  # same weights
        kind = "RANDOM-init" if clip_info.get("random_init") else "real"
        notes.append(f"CLIP files: {kind} weights ({clip_source})")

        chosen: dict[str, Any] = {"threads": "default", "graph_opt": "all", "arena": "on"}
        sweep_rows: list[dict[str, Any]] = []
        if not args.no_sweep:
            note(f"ONNX Runtime options sweep: 18 option sets × {args.sweep_repeats} calls ...")
            from facewire.models.embedders import clip_preprocess

            sweep_rows = sweep(
                clip_dir / "clip-vit-b32-int8.onnx",
                clip_preprocess(crops[224][:1]),
                args.sweep_repeats,
                args.gap_ms / 1000.0,
            )
            chosen = choose(sweep_rows)
            if not args.json:
                print("ONNX Runtime session options, clip-vit-b32-int8, batch 1 (model only):")
                print(table(sweep_rows, SWEEP_COLUMNS))
                print(
                    f"chosen: threads {chosen['threads']}, graph optimisation "
                    f"{chosen['graph_opt']}, arena {chosen['arena']} "
                    f"(mean {fmt(chosen['mean_ms'])} ms, p50 {fmt(chosen['p50_ms'])} ms)\n"
                )
            notes.append(
                f"ONNX options (chosen by the sweep): intra-op threads {chosen['threads']}, "
                f"graph optimisation {chosen['graph_opt']}, memory arena {chosen['arena']}"
            )
        opts = ort_options(
            0 if chosen["threads"] == "default" else int(chosen["threads"]),
            chosen["graph_opt"],
            chosen["arena"] == "on",
        )

        import onnxruntime as ort

        backends: list[Backend] = []
        if not args.no_torch:
            import torch

            model, torch_source = torch_model_for(clip_info)
            notes.append(
                f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
                f"weights: {torch_source}"
            )
            backends += [torch_backend(model, b) for b in batches]
            if torch.get_num_threads() > 1:  # the fair baseline on a busy machine
                backends += [torch_backend(model, b, threads=1) for b in batches]
        for name in ("clip-vit-b32", "clip-vit-b32-int8", "sface"):
            directory = str(clip_dir) if name.startswith("clip") else args.models_dir
            if name == "clip-vit-b32" and not model_path(name, directory).exists():
                notes.append("clip-vit-b32 (fp32) not in the models folder, skipped")
                continue
            if name == "sface" and not model_path(name, directory).exists():
                directory = ""  # the default models folder
            if name == "sface" and not model_path(name, directory).exists():
                notes.append(
                    "sface: models/sface.onnx missing (facewire models prepare sface), skipped"
                )
                continue
            emb = get_embedder(name, directory)
            emb.session = ort.InferenceSession(
                str(emb.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
            backends += [onnx_backend(emb, b, name) for b in batches]
            if name == "clip-vit-b32-int8" and chosen["threads"] != 1 and not args.no_torch:
                # like for like with "pytorch (1 thread)": the gain per core
                one = get_embedder(name, directory)
                one.session = ort.InferenceSession(
                    str(one.path),
                    sess_options=ort_options(1, chosen["graph_opt"], chosen["arena"] == "on"),
                    providers=["CPUExecutionProvider"],
                )
                backends += [onnx_backend(one, b, name, "onnxruntime (1 thread)") for b in batches]
        note(f"timing {len(backends)} configurations, {args.repeats} rounds ...")
        round_robin(backends, crops, args.repeats, args.gap_ms / 1000.0)

    rows = [b.row() for b in backends]
    base = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "pytorch"}
    for r in rows:
        if r["model"].startswith("clip") and r["batch"] in base and r["p50_ms"]:
            r["speedup_vs_pytorch"] = round(base[r["batch"]] / r["p50_ms"], 2)
    one = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "pytorch (1 thread)"}
    single = "onnxruntime" if chosen["threads"] == 1 else "onnxruntime (1 thread)"
    for r in rows:
        like_for_like = r["backend"] == single and r["model"].startswith("clip")
        if like_for_like and r["batch"] in one and r["p50_ms"]:
            r["speedup_vs_pytorch_1thread"] = round(one[r["batch"]] / r["p50_ms"], 2)
            notes.append(
                f"{r['model']} vs PyTorch, both on 1 thread, batch {r['batch']}: "
                f"{r['speedup_vs_pytorch_1thread']}×"
            )
    for r in rows:
        if r["backend"] == "onnxruntime" and "speedup_vs_pytorch" in r and "int8" in r["model"]:
            verdict = "meets" if r["speedup_vs_pytorch"] >= 4 else "MISSES"
            notes.append(
                f"int8 vs PyTorch at batch {r['batch']}: {r['speedup_vs_pytorch']}× "
                f"({verdict} the 4× target)"
            )
    notes.append(
        f"machine: {machine()['cpu']}, {machine()['cores']} cores, load {machine()['loadavg']}"
    )
    if args.json:
        import json

        for r in sweep_rows:
            print(json.dumps(r))
    params = {
        "repeats": args.repeats,
        "gap_ms": args.gap_ms,
        "sweep_repeats": args.sweep_repeats,
        "crops": len(crops[224]),
        "batches": batches,
        "ort_options": {k: chosen[k] for k in ("threads", "graph_opt", "arena")},
        "clip_random_init": bool(clip_info.get("random_init")),
        "sweep": sweep_rows,
    }
    path = emit("embed", rows, COLUMNS, args.json, params=params, notes=notes)
    note(f"wrote {path}")
    return 0
