"""Offline evaluation (``facewire eval``): gallery + probes through the pipeline, no broker."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facewire import config
from facewire.classifier.calibrate import choose_threshold
from facewire.classifier.gallery import build_gallery, iter_people, read_image
from facewire.classifier.search import UNKNOWN, Matcher
from facewire.config.cli import add_setting_flags, overrides_from
from facewire.config.schema import PipelineConfig, SearchConfig
from facewire.models import FacePipeline


@dataclass
class ProbeOutcome:
    person: str
    path: str
    found: bool
    nearest: str = ""
    name: str = ""
    score: float = float("nan")
    ms: float = 0.0


@dataclass
class Report:
    model: str
    settings: dict[str, Any]
    identities: int
    gallery_images: int
    gallery_skipped: dict[str, int]
    threshold: float
    threshold_source: str = "fixed"  # auto | default | fixed: classifier.calibrate
    outcomes: list[ProbeOutcome] = field(default_factory=list)
    unknown: list[ProbeOutcome] = field(default_factory=list)
    calibration: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        found = [o for o in self.outcomes if o.found]
        unknown_found = [o for o in self.unknown if o.found]
        times = [o.ms for o in self.outcomes + self.unknown if o.found]

        def frac(n: int, d: int) -> float | None:
            return round(n / d, 4) if d else None

        return {
            "model": self.model,
            "settings": self.settings,
            "identities": self.identities,
            "gallery_images": self.gallery_images,
            "gallery_skipped": self.gallery_skipped,
            "probes": len(self.outcomes),
            "probes_with_face": len(found),
            "no_face": len(self.outcomes) - len(found),
            "rank1": frac(sum(o.nearest == o.person for o in found), len(found)),
            "named_correctly": frac(sum(o.name == o.person for o in found), len(found)),
            "named_wrongly": frac(
                sum(o.name not in (o.person, UNKNOWN) for o in found), len(found)
            ),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "unknown_probes": len(self.unknown),
            "unknown_no_face": len(self.unknown) - len(unknown_found),
            "unknown_rejected": frac(
                sum(o.name == UNKNOWN for o in unknown_found), len(unknown_found)
            ),
            "ms_per_face": round(statistics.median(times), 2) if times else None,
            "calibration": self.calibration,
        }


def probe_files(root: Path, subdir: str = "") -> list[tuple[str, Path]]:
    """(person, photo) below ``root/<person>/[subdir/]``: a file that is no photo is no
    probe (the gallery, by contrast, lists and reports it)."""
    return list(iter_people(root, subdir, photos_only=True))


def run_probes(
    pipeline: FacePipeline, matcher: Matcher, files: list[tuple[str, Path]]
) -> list[ProbeOutcome]:
    out = []
    for person, f in files:
        try:
            image = read_image(f)
        except ValueError:
            out.append(ProbeOutcome(person, str(f), False))
            continue
        t0 = time.perf_counter()
        faces = pipeline.get(image)  # largest first
        ms = (time.perf_counter() - t0) * 1000.0
        if not faces or faces[0].embedding is None:
            out.append(ProbeOutcome(person, str(f), False))
            continue
        match = matcher.search(faces[0].embedding[None, :])[0]
        out.append(
            ProbeOutcome(
                person, str(f), True, match.nearest, match.name, match.score, ms / len(faces)
            )
        )
    return out


def evaluate(
    gallery_dir: Path,
    probes_dir: Path,
    unknown_dir: Path | None,
    pipeline_cfg: PipelineConfig,
    search_cfg: SearchConfig,
    progress: bool = False,
    split: tuple[str, str] = ("", ""),
) -> Report:
    """``split`` = (gallery subdir, probe subdir) for a ``<person>/{train,test}/`` layout."""
    pipeline = FacePipeline(pipeline_cfg)
    try:
        gallery = build_gallery(gallery_dir, pipeline, progress=progress, subdir=split[0])
        chosen = choose_threshold(
            search_cfg, gallery.vectors, gallery.labels, pipeline.embedder.default_threshold
        )
        matcher = Matcher(gallery.vectors, gallery.labels, search_cfg.k, chosen.value)
        cal = chosen.calibration
        report = Report(
            model=pipeline.model_id,
            settings={
                "mesh": pipeline_cfg.mesh,
                "align": pipeline_cfg.align,
                "on_mesh_miss": pipeline_cfg.on_mesh_miss,
            },
            identities=len(gallery.names),
            gallery_images=len(gallery.labels),
            gallery_skipped=gallery.skip_counts(),
            threshold=chosen.value,
            threshold_source=chosen.source,
            calibration=cal.as_dict(points=0) if cal else None,
        )
        report.outcomes = run_probes(pipeline, matcher, probe_files(probes_dir, split[1]))
        if unknown_dir is not None:
            report.unknown = run_probes(pipeline, matcher, probe_files(unknown_dir))
        return report
    finally:
        pipeline.close()


def format_table(result: dict[str, Any]) -> str:
    rows = [
        ("model", result["model"]),
        ("mesh / align", f"{result['settings']['mesh']} / {result['settings']['align']}"),
        ("identities", result["identities"]),
        (
            "gallery images",
            f"{result['gallery_images']} (skipped: {result['gallery_skipped'] or 'none'})",
        ),
        ("probes", f"{result['probes']} ({result['no_face']} without a face)"),
        ("rank-1", _pct(result["rank1"])),
        ("named correctly", _pct(result["named_correctly"])),
        ("named wrongly", _pct(result["named_wrongly"])),
        ("threshold", f"{result['threshold']:.3f} ({result.get('threshold_source', 'fixed')})"),
        (
            "unknown rejected",
            f"{_pct(result['unknown_rejected'])} of "
            f"{result['unknown_probes'] - result['unknown_no_face']}",
        ),
        ("ms per face (median)", result["ms_per_face"]),
    ]
    cal = result.get("calibration")
    if cal:
        rows.append(
            ("gallery EER (leave-one-out)", f"{_pct(cal['eer'])} at {cal['eer_threshold']}")
        )
        target = cal.get("target_fpir", cal["target_far"])
        rows.append((f"threshold for FPIR ≤ {_pct(target)}", cal["recommended_threshold"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gallery",
        type=Path,
        default=Path("dataset/gallery"),
        help="gallery folder: <person>/[<subdir>/]<image> (default: %(default)s)",
    )
    p.add_argument(
        "--probes",
        type=Path,
        default=Path("dataset/probes"),
        help="probe folder, same layout (default: %(default)s)",
    )
    p.add_argument(
        "--unknown",
        type=Path,
        default=None,
        help="folder of people NOT in the gallery; their faces should come out 'unknown'",
    )
    add_setting_flags(p, EvalConfig)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with 'pipeline' and 'search' sections (default: config/pipeline.yaml, "
        "the pipeline the edge and the classifier share)",
    )
    p.add_argument(
        "--split",
        default="",
        metavar="GALLERY_SUB:PROBE_SUB",
        help="one folder holding both sets as <person>/<GALLERY_SUB>/ and <person>/<PROBE_SUB>/ "
        "(e.g. --gallery DIR --probes DIR --split train:test)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--progress", action="store_true", help="show a progress bar while building the gallery"
    )


@dataclass
class EvalConfig:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config.load(
        EvalConfig,
        args.config or config.default_path("pipeline"),
        overrides=overrides_from(args),
    )
    split = args.split.split(":", 1) if args.split else ["", ""]
    if len(split) != 2:
        raise SystemExit("--split takes GALLERY_SUB:PROBE_SUB, e.g. train:test")
    report = evaluate(
        args.gallery,
        args.probes,
        args.unknown,
        cfg.pipeline,
        cfg.search,
        progress=args.progress,
        split=(split[0], split[1]),
    )
    result = report.as_dict()
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facewire eval", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
