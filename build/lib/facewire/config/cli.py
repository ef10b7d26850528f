"""Command-line flags shared by the services, mapped onto config overrides.

The edge and the classifier must run the same face pipeline, so they (and ``eval``)
take the same pipeline flags from here.
"""

from __future__ import annotations

import argparse
from typing import Any

MATCH = "edge and classifier must agree"


def add_broker_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--broker",
        default=None,
        help="mqtt://[user:pass@]host:port or mqtts://… (env FACEWIRE_BROKER)",
    )


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None, help="embedder: sface | clip-vit-b32 | clip-vit-b32-int8"
    )
    p.add_argument(
        "--detector",
        choices=["haar", "yunet"],
        default=None,
        help="face detector (default: yunet, from `facewire models prepare yunet`; haar "
        "needs no model file)",
    )
    p.add_argument(
        "--no-mesh",
        action="store_true",
        help=f"do not blank the background with FaceMesh's face oval ({MATCH})",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help=f"do not align the eyes: unaligned square crop of the box ({MATCH})",
    )
    p.add_argument(
        "--on-mesh-miss",
        choices=["fallback", "drop"],
        default=None,
        help="a face FaceMesh cannot mesh: keep it unaligned (fallback) or drop it",
    )


def pipeline_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pipeline.model": args.model,
        "pipeline.detector.kind": args.detector,
        "pipeline.mesh": False if args.no_mesh else None,
        "pipeline.align": False if args.no_align else None,
        "pipeline.on_mesh_miss": args.on_mesh_miss,
    }


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity under which a face is 'unknown' (default: 0.363)",
    )
    p.add_argument("-k", type=int, default=None, help="nearest neighbours that vote (default: 5)")


def search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"search.threshold": args.threshold, "search.k": args.k}
