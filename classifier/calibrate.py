"""The threshold from evidence: leave-one-out over the gallery, and corrections.

Each gallery vector is a query against all the others:

- its best similarity to its own identity is a *genuine* score (would it be named?);
- its best similarity to any *other* identity is a *non-mated* score: a stranger who
  looks like this person would be named as that other one at that score. The scores
  between enrolled people are usually the limit, not random strangers;
- every pair of vectors of different identities is an *impostor pair* (verification).

Per threshold t: FRR(t) = share of genuine scores < t (a known person called unknown),
FAR(t) = share of impostor pairs ≥ t, and the open-set false-positive identification
rate FPIR(t) = share of non-mated scores ≥ t (a stranger named). Operator corrections
("this was not Alice") add their scores to the non-mated ones. The EER is where FAR
and FRR cross; the recommended threshold is the lowest one whose FPIR stays within
the target (``search.target_fpir``). A gallery too small for that (fewer than
:data:`MIN_SCORES` genuine or non-mated scores) gives no calibration, and the
classifier falls back to the model's default threshold for its crop
(``models.embedders.fallback_threshold``).

>>> import numpy as np
>>> from facewire.classifier.calibrate import calibrate
>>> rng = np.random.default_rng(0)
>>> centres = rng.normal(size=(8, 16))
>>> vecs = np.repeat(centres, 3, axis=0) + 0.1 * rng.normal(size=(24, 16))
>>> vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
>>> cal = calibrate(vecs.astype(np.float32), [str(i // 3) for i in range(24)])
>>> cal is not None and cal.eer < 0.1 and cal.fpir_at(cal.recommended_threshold) <= 0.01
True
>>> calibrate(vecs[:2].astype(np.float32), ["a", "b"]) is None   # too small to say
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facewire.bus import messages
from facewire.config.schema import SearchConfig

#: Fewest genuine and non-mated scores a calibration rests on.
MIN_SCORES = 10
#: Most vectors compared with each other (the similarity matrix is n²).
MAX_VECTORS = 20_000
#: Most impostor pairs kept for FAR (sampled evenly beyond that).
MAX_PAIRS = 2_000_000
#: Histogram bins of the distributions on the wire (similarity −1..1).
HIST_EDGES = np.round(np.linspace(-1.0, 1.0, 81), 3)


@dataclass(frozen=True)
class Calibration:
    genuine: np.ndarray  # best mated score of each vector
    non_mated: np.ndarray  # best non-mated score of each vector, and corrections
    impostor: np.ndarray  # impostor pair scores (sampled)
    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray
    fpir: np.ndarray
    eer: float
    eer_threshold: float
    recommended_threshold: float
    target_fpir: float
    corrections: int = 0

    def fpir_at(self, threshold: float) -> float:
        return float((self.non_mated >= threshold).mean()) if len(self.non_mated) else 0.0

    def frr_at(self, threshold: float) -> float:
        return float((self.genuine < threshold).mean()) if len(self.genuine) else 0.0

    def summary(self, points: int = 41) -> messages.Calibration:
        """The wire form (``faces/stats/thresholds``' ``calibration``)."""
        return messages.Calibration.from_mapping(self.as_dict(points))

    def as_dict(self, points: int = 41) -> dict[str, object]:
        """JSON-ready summary with ``points`` samples of the curves (0: none)."""
        step = max(1, len(self.thresholds) // points) if points else len(self.thresholds) + 1
        curve = [
            {
                "threshold": round(float(t), 4),
                "far": round(float(a), 5),
                "frr": round(float(r), 5),
                "fpir": round(float(p), 5),
            }
            for t, a, r, p in zip(
                self.thresholds[::step],
                self.far[::step],
                self.frr[::step],
                self.fpir[::step],
                strict=True,
            )
        ]
        return {
            "eer": round(self.eer, 5),
            "eer_threshold": round(self.eer_threshold, 4),
            "recommended_threshold": round(self.recommended_threshold, 4),
            "target_far": self.target_fpir,  # what earlier readers call it
            "target_fpir": self.target_fpir,
            "genuine_pairs": int(len(self.genuine)),
            "impostor_pairs": int(len(self.impostor)),
            "non_mated": int(len(self.non_mated)),
            "corrections": self.corrections,
            "curve": curve if points else [],
            "histograms": {
                "edges": [float(e) for e in HIST_EDGES],
                "genuine": _hist(self.genuine),
                "non_mated": _hist(self.non_mated),
            }
            if points
            else None,
        }


def _hist(scores: np.ndarray) -> list[int]:
    counts, _ = np.histogram(np.clip(scores, -1.0, 1.0), bins=HIST_EDGES)
    return [int(c) for c in counts]


def loo_scores(
    vectors: np.ndarray, labels: Sequence[str], block: int = 1024
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine and non-mated best scores per vector, and impostor pair scores.

    Row blocks of the similarity matrix at a time, so memory stays ``block × n``.
    """
    n = len(vectors)
    _, codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    genuine = np.full(n, -np.inf)
    non_mated = np.full(n, -np.inf)
    pairs: list[np.ndarray] = []
    keep_every = max(1, -(-(n * n // 2) // MAX_PAIRS))
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        sims = (vectors[rows] @ vectors.T).astype(np.float64)
        r = np.arange(rows.start, rows.stop)
        sims[r - start, r] = -np.inf  # a vector is not its own neighbour
        same = codes[rows, None] == codes[None, :]
        genuine[rows] = np.where(same, sims, -np.inf).max(axis=1)
        non_mated[rows] = np.where(same, -np.inf, sims).max(axis=1)
        upper = (~same) & (np.arange(n)[None, :] > r[:, None])  # each pair once
        pairs.append(sims[upper][::keep_every])
    impostor = np.concatenate(pairs) if pairs else np.zeros(0)
    return genuine[np.isfinite(genuine)], non_mated[np.isfinite(non_mated)], impostor


@dataclass(frozen=True)
class Threshold:
    """The threshold in force, how it was set, and the evidence behind it."""

    value: float
    source: str  # auto (calibrated) | default (auto, gallery too small) | fixed
    note: str
    calibration: Calibration | None


def choose_threshold(
    search: SearchConfig,
    vectors: np.ndarray,
    labels: Sequence[str],
    model_default: float,
    corrections: Sequence[float] = (),
) -> Threshold:
    """``search.threshold`` if it is a number, else the calibrated one, else (a gallery
    too small to calibrate) ``model_default``; the calibration is returned either way
    when there is one, for the statistics.

    >>> from facewire.config.schema import SearchConfig
    >>> t = choose_threshold(SearchConfig(), np.eye(2, dtype=np.float32), ["a", "b"], 0.363)
    >>> t.value, t.source, t.calibration
    (0.363, 'default', None)
    """
    cal = calibrate(vectors, labels, search.target_fpir, corrections)
    if search.threshold != "auto":
        return Threshold(float(search.threshold), "fixed", "set by search.threshold", cal)
    if cal is None:
        note = (
            f"the gallery is too small to calibrate (it needs {MIN_SCORES} genuine and "
            f"{MIN_SCORES} non-mated scores: several people with two or more photos "
            "each): the model's default for this crop"
        )
        return Threshold(model_default, "default", note, None)
    note = (
        f"the lowest threshold letting through at most {search.target_fpir:.1%} of "
        f"strangers like the gallery's people ({len(cal.non_mated)} non-mated scores"
        + (f", {cal.corrections} corrections" if cal.corrections else "")
        + ")"
    )
    return Threshold(cal.recommended_threshold, "auto", note, cal)


def calibrate(
    vectors: np.ndarray,
    labels: Sequence[str],
    target_fpir: float = 0.01,
    corrections: Sequence[float] = (),
    steps: int = 401,
) -> Calibration | None:
    """Rates over a threshold grid from −1 to 1 (``steps`` points); ``None`` when the
    gallery gives fewer than :data:`MIN_SCORES` genuine or non-mated scores.

    ``corrections``: similarities of vectors an operator said were *not* the person
    they were named as, to that person's gallery: counted as non-mated scores.
    """
    if len(vectors) > MAX_VECTORS:  # sample big galleries
        pick = np.random.default_rng(0).choice(len(vectors), MAX_VECTORS, replace=False)
        vectors, labels = vectors[pick], [labels[i] for i in pick]
    if len(vectors) < 2:
        return None
    genuine, non_mated, impostor = loo_scores(np.asarray(vectors, np.float32), labels)
    non_mated = np.concatenate([non_mated, np.asarray(corrections, np.float64)])
    if len(genuine) < MIN_SCORES or len(non_mated) < MIN_SCORES:
        return None
    thresholds = np.linspace(-1.0, 1.0, steps)
    # sorted scores: each rate is a binary search per threshold, not an n × steps matrix
    frr = np.searchsorted(np.sort(genuine), thresholds, side="left") / len(genuine)
    far = 1.0 - np.searchsorted(np.sort(impostor), thresholds, side="left") / max(len(impostor), 1)
    if not len(impostor):
        far = np.zeros(steps)
    fpir = 1.0 - np.searchsorted(np.sort(non_mated), thresholds, side="left") / len(non_mated)
    i = int(np.argmin(np.abs(far - frr)))
    ok = np.nonzero(fpir <= target_fpir)[0]
    # thresholds are 0.005 apart: rounded, the one in force is the one on the wire
    recommended = round(float(thresholds[ok[0]] if len(ok) else thresholds[-1]), 4)
    return Calibration(
        genuine=genuine,
        non_mated=non_mated,
        impostor=impostor,
        thresholds=thresholds,
        far=far,
        frr=frr,
        fpir=fpir,
        eer=float((far[i] + frr[i]) / 2.0),
        eer_threshold=round(float(thresholds[i]), 4),
        recommended_threshold=recommended,
        target_fpir=target_fpir,
        corrections=len(corrections),
    )
