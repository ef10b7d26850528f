"""Offline evaluation (``facewire eval``): gallery + probes through the pipeline, no broker.

The gallery is embedded and calibrated exactly as the classifier does it (the
threshold in force is ``search.threshold``: ``auto`` = chosen on the gallery alone,
see ``classifier.calibrate``); then every probe photo's largest face is matched.
Known probes are photos of enrolled people; stranger probes are photos of people who
are not enrolled (``--unknown``, and the people ``--strangers N`` holds out).

What the report counts, on the probes that hold a face:

- **rank-1**: the single nearest gallery vector is the probe's person (no threshold).
- **open set** at a threshold t (the one in force, and any compared): a known probe
  is *named right* when the k-NN vote's winner is its person and the winner's best
  score ≥ t, *named wrongly* when the winner is someone else and scores ≥ t (else it
  is called unknown); a stranger is *rejected* when the winner scores < t. Exactly
  what the classifier would answer.
- **verification scores** (TAR at FAR, EER), vote-free: a *genuine* score is a known
  probe's best similarity to any gallery vector of its own person (probes whose
  person has no gallery vector give none); the *impostor* scores are each known
  probe's best similarity to any *other* person, and each stranger probe's best
  similarity to anyone: the score at which that probe would be named as someone it
  is not. FAR(t) = share of impostor scores ≥ t, TAR(t) = share of genuine scores ≥ t;
  "TAR at FAR x" is TAR at the lowest threshold (4 decimals) whose FAR ≤ x, so with
  fewer than 1/x impostor scores it means "above every impostor". The EER is where
  FAR and 1 − TAR cross, over every score as a threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from facewire import config
from facewire.classifier.calibrate import choose_threshold
from facewire.classifier.gallery import Gallery, build_gallery, iter_people, read_image
from facewire.classifier.search import UNKNOWN, Matcher
from facewire.classifier.tracks import Tracker
from facewire.config.cli import add_setting_flags, overrides_from
from facewire.config.schema import (
    EdgeConfig,
    PipelineConfig,
    QualityConfig,
    SearchConfig,
    TrackConfig,
)
from facewire.evaluation.alone import alone_rates, format_alone
from facewire.evaluation.clips import ClipOutcome, ClipSpec, enrol_clip, format_clips, run_clip
from facewire.models import FacePipeline
from facewire.models.embedders import GENERIC_THRESHOLD
from facewire.models.pipeline import pipeline_fallback_threshold

#: FARs that TAR is reported at
FARS = (0.01, 0.001)
#: The open-set target (docs/benchmarks.md, "Accuracy"): at the default threshold,
#: knowns named right ≥ 99 %, knowns named wrongly ≤ 0.5 %, strangers rejected ≥ 97 %.
TARGET = {"named_right_min": 0.99, "named_wrongly_max": 0.005, "strangers_rejected_min": 0.97}


@dataclass
class ProbeOutcome:
    person: str
    path: str
    found: bool
    nearest: str = ""  # identity of the nearest gallery vector (rank-1)
    name: str = ""  # the answer at the threshold in force (``unknown`` below it)
    score: float = float("nan")  # the vote winner's best similarity
    ms: float = 0.0
    winner: str = ""  # the vote's identity, whatever the threshold
    own: float = float("nan")  # best similarity to its own person (nan: not enrolled)
    other: float = float("nan")  # best similarity to anyone else (nan: nobody else)
    quality: tuple[float, float, float] = (0.0, 0.0, 0.0)  # area, blur, brightness


@dataclass(frozen=True)
class Compared:
    """A threshold the open-set figures are also given at."""

    label: str
    threshold: float
    source: str  # fixed | auto | default
    target_fpir: float | None = None


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
    target_fpir: float | None = None
    strangers: list[str] = field(default_factory=list)  # held out by --strangers
    compared: list[Compared] = field(default_factory=list)
    clips_enrolled: list[dict[str, Any]] = field(default_factory=list)
    clips: list[ClipOutcome] = field(default_factory=list)
    alone: list[dict[str, Any]] = field(default_factory=list)  # --alone: alone_rates
    default_threshold: float | None = None  # the model's, for a gallery too small

    def open_set(self, threshold: float) -> dict[str, Any]:
        """Knowns named right / wrongly / called unknown, strangers rejected, at ``threshold``."""
        knowns = [o for o in self.outcomes if o.found]
        strangers = [o for o in self.unknown if o.found]
        named = [o for o in knowns if o.score >= threshold]
        right = sum(o.winner == o.person for o in named)
        rejected = sum(o.score < threshold for o in strangers)
        row: dict[str, Any] = {
            "threshold": round(threshold, 4),
            "knowns": len(knowns),
            "named_right": _frac(right, len(knowns)),
            "named_wrongly": _frac(len(named) - right, len(knowns)),
            "called_unknown": _frac(len(knowns) - len(named), len(knowns)),
            "strangers": len(strangers),
            "strangers_rejected": _frac(rejected, len(strangers)),
        }
        row["meets_target"] = meets_target(row)
        return row

    def open_set_tracks(self, threshold: float) -> dict[str, Any]:
        """The open-set figures per *track*: each person's probe photos, in file order,
        taken as the frames of one track and decided on by the classifier's own rule
        (:class:`~facewire.classifier.tracks.Tracker`: weighted by quality, a name must
        hold most of the weight)."""

        def decided(probes: list[ProbeOutcome]) -> dict[str, str]:
            # one track per person by construction: its frames carry no vectors
            tracker = Tracker(gap_s=math.inf, min_frames=1, min_overlap_similarity=-1.0)
            by_person: dict[str, list[ProbeOutcome]] = {}
            for o in probes:
                if o.found:
                    by_person.setdefault(o.person, []).append(o)
            out = {}
            for person, frames in by_person.items():
                for i, o in enumerate(frames):
                    name = o.winner if o.score >= threshold else UNKNOWN
                    seen = tracker.observe(
                        person, (0, 0, 100, 100), np.zeros(1, np.float32), o.quality,
                        float(i), name, o.score, float(i),
                    )  # fmt: skip
                    if seen.event is not None:
                        out[person] = seen.event.name
            return out

        knowns, strangers = decided(self.outcomes), decided(self.unknown)
        right = sum(name == person for person, name in knowns.items())
        wrong = sum(name not in (person, UNKNOWN) for person, name in knowns.items())
        rejected = sum(name == UNKNOWN for name in strangers.values())
        row: dict[str, Any] = {
            "threshold": round(threshold, 4),
            "knowns": len(knowns),
            "named_right": _frac(right, len(knowns)),
            "named_wrongly": _frac(wrong, len(knowns)),
            "called_unknown": _frac(len(knowns) - right - wrong, len(knowns)),
            "strangers": len(strangers),
            "strangers_rejected": _frac(rejected, len(strangers)),
            "missed": sorted(p for p, name in knowns.items() if name != p),
        }
        row["meets_target"] = meets_target(row)
        return row

    def scores(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Genuine and impostor scores (module doc), and how many impostor scores are
        of known probes (the rest, strangers')."""
        knowns = [o for o in self.outcomes if o.found]
        genuine = np.array([o.own for o in knowns if math.isfinite(o.own)])
        of_knowns = [o.other for o in knowns if math.isfinite(o.other)]
        of_strangers = [o.other for o in self.unknown if o.found and math.isfinite(o.other)]
        return genuine, np.array(of_knowns + of_strangers), len(of_knowns)

    def as_dict(self) -> dict[str, Any]:
        found = [o for o in self.outcomes if o.found]
        unknown_found = [o for o in self.unknown if o.found]
        times = [o.ms for o in self.outcomes + self.unknown if o.found]
        genuine, impostor, of_knowns = self.scores()
        tars = [tar_at_far(genuine, impostor, far) for far in FARS]
        eer = equal_error(genuine, impostor)
        in_force = self.open_set(self.threshold) | {
            "source": self.threshold_source,
            "target_fpir": self.target_fpir if self.threshold_source == "auto" else None,
        }
        return {
            "model": self.model,
            "settings": self.settings,
            "identities": self.identities,
            "gallery_images": self.gallery_images,
            "gallery_skipped": self.gallery_skipped,
            "strangers_held_out": self.strangers,
            "probes": len(self.outcomes),
            "probes_with_face": len(found),
            "no_face": len(self.outcomes) - len(found),
            "rank1": _frac(sum(o.nearest == o.person for o in found), len(found)),
            "named_correctly": _frac(sum(o.name == o.person for o in found), len(found)),
            "named_wrongly": _frac(
                sum(o.name not in (o.person, UNKNOWN) for o in found), len(found)
            ),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "unknown_probes": len(self.unknown),
            "unknown_no_face": len(self.unknown) - len(unknown_found),
            "unknown_rejected": _frac(
                sum(o.name == UNKNOWN for o in unknown_found), len(unknown_found)
            ),
            "tar_at_far_1pct": tars[0]["tar"] if tars[0] else None,
            "tar_at_far_0_1pct": tars[1]["tar"] if tars[1] else None,
            "probe_eer": eer[0] if eer else None,
            "probe_eer_threshold": eer[1] if eer else None,
            "probe_scores": {
                "genuine": len(genuine),
                "impostor": len(impostor),
                "impostor_of_knowns": of_knowns,
                "impostor_of_strangers": len(impostor) - of_knowns,
                "tar_at_far": [t for t in tars if t],
            },
            "open_set": in_force,
            "open_set_compared": [
                self.open_set(c.threshold)
                | {"label": c.label, "source": c.source, "target_fpir": c.target_fpir}
                for c in self.compared
            ],
            "open_set_tracks": self.open_set_tracks(self.threshold),
            "clips_enrolled": self.clips_enrolled,
            "clips": [c.as_dict() for c in self.clips],
            "target": TARGET,
            "ms_per_face": round(statistics.median(times), 2) if times else None,
            "calibration": self.calibration,
            "default_threshold": self.default_threshold,
            "alone": self.alone,
        }


def _frac(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def meets_target(row: dict[str, Any]) -> bool | None:
    """Whether an open-set row meets :data:`TARGET` (``None``: no strangers to judge by)."""
    if row["named_right"] is None or row["strangers_rejected"] is None:
        return None
    return bool(
        row["named_right"] >= TARGET["named_right_min"]
        and row["named_wrongly"] <= TARGET["named_wrongly_max"]
        and row["strangers_rejected"] >= TARGET["strangers_rejected_min"]
    )


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> dict[str, Any] | None:
    """TAR at the lowest 4-decimal threshold letting at most ``far`` of the impostor
    scores through (``None`` without scores of both kinds).

    >>> g, i = np.array([0.9, 0.8, 0.5]), np.array([0.1, 0.2, 0.3, 0.6])
    >>> tar_at_far(g, i, 0.25)  # one of four impostors may pass: the threshold is above 0.3
    {'far': 0.25, 'tar': 1.0, 'threshold': 0.3001, 'impostors_passing': 1, 'impostors': 4}
    >>> tar_at_far(g, i, 0.01)["threshold"], tar_at_far(g, i, 0.01)["tar"]
    (0.6001, 0.6667)
    """
    if not len(genuine) or not len(impostor):
        return None
    allowed = int(math.floor(far * len(impostor) + 1e-9))
    desc = np.sort(impostor)[::-1]
    if allowed >= len(desc):
        t = -1.0
    else:
        t = round(math.ceil(float(desc[allowed]) * 1e4) / 1e4, 4)
        if (impostor >= t).sum() > allowed:  # the ceiling landed on the score itself
            t = round(t + 1e-4, 4)
    return {
        "far": far,
        "tar": round(float((genuine >= t).mean()), 4),
        "threshold": t,
        "impostors_passing": int((impostor >= t).sum()),
        "impostors": len(impostor),
    }


def equal_error(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float] | None:
    """(EER, its threshold): where FAR(t) and FRR(t) = share of genuine < t are closest,
    every score tried as t.

    >>> equal_error(np.array([0.9, 0.8, 0.5]), np.array([0.1, 0.2, 0.6]))
    (0.3333, 0.6)
    >>> equal_error(np.array([0.9]), np.array([0.1]))  # apart: no error at the genuine score
    (0.0, 0.9)
    """
    if not len(genuine) or not len(impostor):
        return None
    ts = np.unique(np.concatenate([genuine, impostor]))
    frr = np.searchsorted(np.sort(genuine), ts, side="left") / len(genuine)
    far = 1.0 - np.searchsorted(np.sort(impostor), ts, side="left") / len(impostor)
    i = int(np.argmin(np.abs(far - frr)))
    return round(float((far[i] + frr[i]) / 2.0), 4), round(float(ts[i]), 4)


def probe_files(root: Path, subdir: str = "") -> list[tuple[str, Path]]:
    """(person, photo) below ``root/<person>/[subdir/]``: a file that is no photo is no
    probe (the gallery, by contrast, lists and reports it)."""
    return list(iter_people(root, subdir, photos_only=True))


def people(root: Path) -> list[str]:
    """The person folders of ``root``, sorted by name (as ``iter_people`` walks them)."""
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {root}")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def held_out_people(root: Path, n: int) -> list[str]:
    """The last ``n`` people of ``root`` by name (``ValueError`` unless one stays)."""
    everyone = people(root)
    if not 0 <= n < len(everyone):
        raise ValueError(
            f"--strangers {n}: the gallery folder has {len(everyone)} people, "
            "and at least one must stay enrolled"
        )
    return everyone[len(everyone) - n :] if n else []


def without(gallery: Gallery, root: Path, held_out: set[str]) -> Gallery:
    """``gallery`` minus the vectors (and skipped files) of the ``held_out`` people."""
    if not held_out:
        return gallery
    keep = [i for i, label in enumerate(gallery.labels) if label not in held_out]

    def owner(path: str) -> str:
        try:
            return Path(path).relative_to(root).parts[0]
        except (ValueError, IndexError):
            return ""

    return Gallery(
        gallery.vectors[keep],
        [gallery.labels[i] for i in keep],
        [gallery.paths[i] for i in keep],
        gallery.model_id,
        {p: r for p, r in gallery.skipped.items() if owner(p) not in held_out},
    )


def with_vectors(gallery: Gallery, person: str, vectors: list[np.ndarray], source: str) -> Gallery:
    """``gallery`` with ``vectors`` of ``person`` added (an enrolment, as the classifier
    keeps one beside the photos)."""
    if gallery.dim and vectors and len(vectors[0]) != gallery.dim:
        raise ValueError(
            f"{source}: vectors of {len(vectors[0])} values, the gallery's {gallery.dim}"
        )
    stacked = np.stack(vectors).astype(np.float32)
    return Gallery(
        np.concatenate([gallery.vectors, stacked]) if len(gallery.labels) else stacked,
        gallery.labels + [person] * len(vectors),
        gallery.paths + [f"{source}#{i}" for i in range(len(vectors))],
        gallery.model_id,
        gallery.skipped,
    )


def run_probes(
    pipeline: FacePipeline,
    matcher: Matcher,
    files: list[tuple[str, Path]],
    gallery: Gallery | None = None,
    vectors: list[np.ndarray] | None = None,
) -> list[ProbeOutcome]:
    """Embed each probe's largest face and match it; with ``gallery`` (the matcher's
    vectors), also its best scores against its own person and everyone else. The
    vectors of the probes with a face are appended to ``vectors`` if given."""
    out: list[ProbeOutcome] = []
    vectors = [] if vectors is None else vectors
    first = len(vectors)
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
        q = faces[0].quality
        out.append(
            ProbeOutcome(
                person, str(f), True, ms=ms / len(faces), quality=(q.area, q.blur, q.brightness)
            )
        )
        vectors.append(faces[0].embedding)
    found = [o for o in out if o.found]
    if not found:
        return out
    queries = np.stack(vectors[first:]).astype(np.float32)
    batch = matcher.match(queries)
    names = matcher.names
    for r, o in enumerate(found):
        code = int(batch.winner[r])
        o.winner = str(names[code]) if code >= 0 else UNKNOWN
        o.nearest = str(names[batch.codes[r, 0]]) if batch.codes[r, 0] >= 0 else UNKNOWN
        o.score = float(batch.scores[r])
        o.name = o.winner if batch.known[r] else UNKNOWN
    if gallery is not None and len(gallery.labels):
        ids, best = best_per_identity(queries, gallery.vectors, gallery.labels)
        column = {name: c for c, name in enumerate(ids)}
        for r, o in enumerate(found):
            c = column.get(o.person)
            others = best[r] if c is None else np.delete(best[r], c)
            o.own = float(best[r, c]) if c is not None else float("nan")
            o.other = float(others.max()) if len(others) else float("nan")
    return out


def best_per_identity(
    queries: np.ndarray, vectors: np.ndarray, labels: Sequence[str]
) -> tuple[list[str], np.ndarray]:
    """Identities (sorted) and each query's best similarity to each (queries × identities).

    >>> v = np.eye(3, dtype=np.float32)
    >>> ids, best = best_per_identity(v[:1], v, ["b", "a", "b"])
    >>> ids, best.tolist()
    (['a', 'b'], [[0.0, 1.0]])
    """
    ids, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(ids)))
    sims = (queries @ vectors[order].T).astype(np.float64)
    return [str(i) for i in ids], np.maximum.reduceat(sims, starts, axis=1)


def evaluate(
    gallery_dir: Path,
    probes_dir: Path,
    unknown_dir: Path | None,
    pipeline_cfg: PipelineConfig,
    search_cfg: SearchConfig,
    progress: bool = False,
    split: tuple[str, str] = ("", ""),
    strangers: int = 0,
    compare_thresholds: Sequence[float] | None = None,
    compare_fpir: Sequence[float] = (),
    enrol_clips: Sequence[ClipSpec] = (),
    probe_clips: Sequence[ClipSpec] = (),
    tracks: TrackConfig | None = None,
    gate: QualityConfig | None = None,
    enrol_count: int = 8,
    detect_every: int = 1,
    alone: bool = False,
    alone_photos: int = 0,
) -> Report:
    """``split`` = (gallery subdir, probe subdir) for a ``<person>/{train,test}/`` layout.

    ``strangers``: the last that many people of ``gallery_dir`` (by name) are not
    enrolled; their probe photos are stranger probes (with ``unknown_dir``'s).
    ``compare_thresholds`` (default: the model's for the crop) and ``compare_fpir``
    (the auto threshold for other ``search.target_fpir`` values, chosen on the
    gallery alone): more thresholds for the open-set figures.

    ``enrol_clips`` add their people to the gallery before it is calibrated (up to
    ``enrol_count`` faces each, captured as ``facewire enroll`` does); ``probe_clips``
    are played as live video (``facewire.evaluation.clips``), with ``gate`` as the edge's
    quality gate (``None``: every face is sent), ``tracks`` the classifier's and
    ``detect_every`` the edge's (faces followed between detections). ``alone``: also
    each person alone as the gallery (``facewire.evaluation.alone``), at the model's
    default, SFace's own, the one in force and ``compare_thresholds``.
    """
    held_out = held_out_people(gallery_dir, strangers)
    pipeline = FacePipeline(pipeline_cfg)
    try:
        # the held-out people's gallery photos are embedded too, then left out: the
        # gallery is built exactly as the classifier builds it
        gallery = build_gallery(gallery_dir, pipeline, progress=progress, subdir=split[0])
        gallery = without(gallery, gallery_dir, set(held_out))
        enrolled = []
        for spec in enrol_clips:
            capture = enrol_clip(pipeline, spec, gate or QualityConfig(), enrol_count)
            if not capture.kept:
                raise ValueError(
                    f"{spec.label}: no face could be enrolled ({capture.describe_refused()})"
                )
            gallery = with_vectors(gallery, spec.person, capture.vectors, spec.label)
            enrolled.append(
                {
                    "clip": spec.label,
                    "kept": len(capture.kept),
                    "frames": capture.frames,
                    "refused": dict(capture.refused),
                }
            )
        default = pipeline_fallback_threshold(pipeline_cfg)
        chosen = choose_threshold(search_cfg, gallery.vectors, gallery.labels, default)
        matcher = Matcher(gallery.vectors, gallery.labels, search_cfg.k, chosen.value)
        cal = chosen.calibration
        compared = [
            Compared(
                f"fixed {t:g}" + (" (the model's default)" if t == default else ""), t, "fixed"
            )
            for t in (compare_thresholds if compare_thresholds is not None else [default])
        ]
        for fpir in compare_fpir:
            auto = replace(search_cfg, threshold="auto", target_fpir=fpir)
            alt = choose_threshold(auto, gallery.vectors, gallery.labels, default)
            compared.append(Compared(f"auto, FPIR ≤ {_rate(fpir)}", alt.value, alt.source, fpir))
        report = Report(
            model=pipeline.model_id,
            settings={
                "mesh": pipeline_cfg.mesh,
                "mask_scale": pipeline_cfg.mask_scale,
                "mask_fill": pipeline_cfg.mask_fill,
                "align": pipeline_cfg.align,
                "on_mesh_miss": pipeline_cfg.on_mesh_miss,
                "k": matcher.k,
            },
            identities=len(gallery.names),
            gallery_images=len(gallery.labels),
            gallery_skipped=gallery.skip_counts(),
            threshold=chosen.value,
            threshold_source=chosen.source,
            calibration=cal.as_dict(points=0) if cal else None,
            target_fpir=search_cfg.target_fpir,
            strangers=held_out,
            compared=compared,
            clips_enrolled=enrolled,
            default_threshold=default,
        )
        probes = probe_files(probes_dir, split[1])
        out = set(held_out)
        known = [(p, f) for p, f in probes if p not in out]
        unknown = [(p, f) for p, f in probes if p in out]
        if unknown_dir is not None:
            unknown += probe_files(unknown_dir)
        queries: list[np.ndarray] = []
        report.outcomes = run_probes(pipeline, matcher, known, gallery, queries)
        report.unknown = run_probes(pipeline, matcher, unknown, gallery, queries)
        if alone and queries:
            found = [o.person for o in report.outcomes + report.unknown if o.found]
            ts = [default, GENERIC_THRESHOLD, chosen.value, *(compare_thresholds or ())]
            report.alone = alone_rates(
                gallery.vectors, gallery.labels, np.stack(queries), found, ts, alone_photos
            )
        report.clips = [
            run_clip(pipeline, matcher, spec, tracks or TrackConfig(), gate, detect_every)
            for spec in probe_clips
        ]
        return report
    finally:
        pipeline.close()


def format_table(result: dict[str, Any]) -> str:
    held = result.get("strangers_held_out") or []
    rows = [
        ("model", result["model"]),
        ("mesh / align", f"{result['settings']['mesh']} / {result['settings']['align']}"),
        ("mask", _mask(result["settings"])),
        ("identities", result["identities"]),
        (
            "gallery images",
            f"{result['gallery_images']} (skipped: {result['gallery_skipped'] or 'none'})",
        ),
    ]
    if held:
        rows.append(("strangers held out", f"{len(held)}: {', '.join(held)}"))
    rows += [
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
    ]
    scores = result.get("probe_scores")
    if scores:
        for t in scores["tar_at_far"]:
            rows.append(
                (
                    f"TAR @ FAR ≤ {_rate(t['far'])}",
                    f"{_pct(t['tar'])} at {t['threshold']:.4f} ({t['impostors_passing']} of "
                    f"{t['impostors']} impostor scores pass)",
                )
            )
        if result["probe_eer"] is not None:
            rows.append(
                (
                    "EER (probes)",
                    f"{_pct(result['probe_eer'])} at {result['probe_eer_threshold']:.4f} "
                    f"({scores['genuine']} genuine, {scores['impostor']} impostor scores)",
                )
            )
    rows.append(("ms per face (median)", result["ms_per_face"]))
    cal = result.get("calibration")
    if cal:
        rows.append(
            ("gallery EER (leave-one-out)", f"{_pct(cal['eer'])} at {cal['eer_threshold']}")
        )
        target = cal.get("target_fpir", cal["target_far"])
        rows.append((f"threshold for FPIR ≤ {_rate(target)}", cal["recommended_threshold"]))
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    if "open_set" in result:
        text += "\n\n" + format_open_set(result)
    tracks = result.get("open_set_tracks")
    if tracks and tracks["knowns"]:
        missed = ", ".join(tracks["missed"]) or "none"
        text += (
            f"\n\nper track (each person's probe photos as one track), at "
            f"{tracks['threshold']:.4f}: named right {_pct(tracks['named_right'])} of "
            f"{tracks['knowns']}, named wrongly {_pct(tracks['named_wrongly'])}, strangers "
            f"rejected {_pct(tracks['strangers_rejected'])} of {tracks['strangers']} "
            f"(not named right: {missed})"
        )
    for e in result.get("clips_enrolled") or []:
        text += f"\nenrolled from {e['clip']}: {e['kept']} faces of {e['frames']} frames"
    if result.get("alone"):
        text += "\n\n" + format_alone(result["alone"], result.get("default_threshold"))
    if result.get("clips"):
        text += "\n\nclips (per frame: each face sent; per track: its last decision)\n"
        text += format_clips(result["clips"])
    return text


def format_open_set(result: dict[str, Any]) -> str:
    """The open-set figures at the threshold in force and the compared ones."""
    now = result["open_set"]
    label = now["source"] + (
        f", FPIR ≤ {_rate(now['target_fpir'])}" if now.get("target_fpir") is not None else ""
    )
    head = ("open set at", "threshold", "named right", "named wrongly", "strangers rejected", "")
    rows = [head]
    for name, row in [(f"in force ({label})", now)] + [
        (r["label"], r) for r in result["open_set_compared"]
    ]:
        verdict = {True: "target met", False: "target not met", None: ""}[row["meets_target"]]
        rows.append(
            (
                name,
                f"{row['threshold']:.4f}",
                _pct(row["named_right"]),
                _pct(row["named_wrongly"]),
                _pct(row["strangers_rejected"]),
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    t = result["target"]
    lines.append(
        f"(of {now['knowns']} known and {now['strangers']} stranger probes with a face; target: "
        f"named right ≥ {_rate(t['named_right_min'])}, wrongly ≤ "
        f"{_rate(t['named_wrongly_max'])}, strangers rejected ≥ "
        f"{_rate(t['strangers_rejected_min'])})"
    )
    return "\n".join(lines)


def _mask(settings: dict[str, Any]) -> str:
    if not settings["mesh"]:
        return "off"
    return f"{settings['mask_fill']} outside the face oval × {settings['mask_scale']:g}"


def _pct(x: float | None) -> str:
    """A measured share, one decimal: ``98.6 %``."""
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _rate(x: float) -> str:
    """A rate asked for, as short as it is: ``1 %``, ``0.1 %``."""
    return f"{100 * x:.4g} %"


def _numbers(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of numbers: {text!r}"
        ) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("photos")
    data.add_argument(
        "--gallery",
        type=Path,
        default=Path("dataset/gallery"),
        help="gallery folder: <person>/[<subdir>/]<image> (default: %(default)s)",
    )
    data.add_argument(
        "--probes",
        type=Path,
        default=Path("dataset/probes"),
        help="probe folder, same layout (default: %(default)s)",
    )
    data.add_argument(
        "--unknown",
        type=Path,
        default=None,
        help="folder of people NOT in the gallery; their faces should come out 'unknown'",
    )
    data.add_argument(
        "--split",
        default="",
        metavar="GALLERY_SUB:PROBE_SUB",
        help="one folder holding both sets as <person>/<GALLERY_SUB>/ and <person>/<PROBE_SUB>/ "
        "(e.g. --gallery DIR --probes DIR --split train:test)",
    )
    data.add_argument(
        "--strangers",
        type=int,
        default=0,
        metavar="N",
        help="leave the last N people of the gallery folder (by name) out of the gallery: "
        "their probe photos become stranger probes, like --unknown's (default: 0)",
    )
    clips = p.add_argument_group(
        "video clips (NAME=PATH[@FROM-TO], seconds; NAME 'stranger': not enrolled)"
    )
    clips.add_argument(
        "--enrol-clip",
        type=ClipSpec.parse,
        action="append",
        default=[],
        metavar="NAME=PATH[@FROM-TO]",
        help="enrol NAME from this clip (as facewire enroll would) before calibrating",
    )
    clips.add_argument(
        "--clip",
        type=ClipSpec.parse,
        action="append",
        default=[],
        metavar="NAME=PATH[@FROM-TO]",
        help="play this clip as live video: per-frame and per-track figures",
    )
    clips.add_argument(
        "--enrol-count",
        type=int,
        default=8,
        metavar="N",
        help="faces kept per enrolment clip at most (default: %(default)s)",
    )
    clips.add_argument(
        "--detect-every",
        type=int,
        default=EdgeConfig().detect_every,
        metavar="N",
        help="full-frame detection on every Nth frame of a probe clip, faces followed in "
        "between, as the edge does (edge.detect_every; 1: detect on every frame) "
        "(default: %(default)s)",
    )
    clips.add_argument(
        "--no-gate",
        action="store_true",
        help="send every face of a probe clip (as edge.gate_live: false); default: the "
        "edge's quality gate, the 'quality' section",
    )
    settings = p.add_argument_group("pipeline and search (as the edge and the classifier run)")
    add_setting_flags(settings, EvalConfig)
    settings.add_argument(
        "--target-fpir",
        type=float,
        default=None,
        metavar="FPIR",
        help="threshold auto: the share of strangers like the gallery's people who may be "
        "named (search.target_fpir; default: the config's, 0.01)",
    )
    settings.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with 'pipeline' and 'search' sections (default: config/pipeline.yaml, "
        "the pipeline the edge and the classifier share)",
    )
    compare = p.add_argument_group("the open-set figures at more thresholds")
    compare.add_argument(
        "--compare-threshold",
        type=_numbers,
        default=None,
        metavar="T[,T...]",
        help="fixed thresholds (default: the model's for the crop, e.g. SFace 0.40)",
    )
    compare.add_argument(
        "--compare-fpir",
        type=_numbers,
        default=[],
        metavar="F[,F...]",
        help="the auto threshold for these target FPIRs, chosen on the gallery alone "
        "(e.g. 0.005,0.001)",
    )
    compare.add_argument(
        "--alone",
        action="store_true",
        help="also each person alone as the gallery (too small to calibrate: the model's "
        "default for the crop is used), everyone else's probes as strangers: the share "
        "named at the default, SFace's own, the one in force and --compare-threshold",
    )
    compare.add_argument(
        "--alone-photos",
        type=int,
        default=0,
        metavar="N",
        help="with --alone: only each person's first N gallery photos (default: all)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    out.add_argument(
        "--progress", action="store_true", help="show a progress bar while building the gallery"
    )


@dataclass
class EvalConfig:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)


def run(args: argparse.Namespace) -> int:
    overrides = overrides_from(args)
    if args.target_fpir is not None:
        overrides["search.target_fpir"] = args.target_fpir
    cfg = config.load(
        EvalConfig, args.config or config.default_path("pipeline"), overrides=overrides
    )
    split = args.split.split(":", 1) if args.split else ["", ""]
    if len(split) != 2:
        raise SystemExit("--split takes GALLERY_SUB:PROBE_SUB, e.g. train:test")
    try:
        held_out_people(args.gallery, args.strangers)
        for spec in args.enrol_clip + args.clip:
            if not spec.path.is_file():
                raise FileNotFoundError(f"no such clip: {spec.path}")
        if args.enrol_count < 1:
            raise ValueError("--enrol-count must be at least 1")
        if args.detect_every < 1:
            raise ValueError("--detect-every must be at least 1")
        if args.alone_photos < 0:
            raise ValueError("--alone-photos must be 0 (all) or more")
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"facewire eval: {exc}") from None
    try:
        report = _evaluate(args, cfg, split)
    except (ValueError, FileNotFoundError) as exc:  # a clip with no good face, or unreadable
        raise SystemExit(f"facewire eval: {exc}") from None
    result = report.as_dict()
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    sys.stdout.flush()
    return 0


def _evaluate(args: argparse.Namespace, cfg: EvalConfig, split: list[str]) -> Report:
    return evaluate(
        args.gallery,
        args.probes,
        args.unknown,
        cfg.pipeline,
        cfg.search,
        progress=args.progress,
        split=(split[0], split[1]),
        strangers=args.strangers,
        compare_thresholds=args.compare_threshold,
        compare_fpir=args.compare_fpir,
        enrol_clips=args.enrol_clip,
        probe_clips=args.clip,
        tracks=cfg.track,
        gate=None if args.no_gate else cfg.quality,
        enrol_count=args.enrol_count,
        detect_every=args.detect_every,
        alone=args.alone or args.alone_photos > 0,
        alone_photos=args.alone_photos,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="facewire eval",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="What each figure counts: the module doc of facewire.evaluation.evaluate, "
        "and docs/benchmarks.md ('Accuracy').",
    )
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
