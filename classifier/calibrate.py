"""Threshold calibration by leave-one-out over the gallery.

Each gallery vector is a query against all the others: its best similarity to its
own identity is a *genuine* score, its best similarity to any other identity an
*impostor* score. Per threshold t, FAR(t) = share of impostor scores ≥ t (a stranger
named) and FRR(t) = share of genuine scores < t (a known person called unknown).
The EER is where they cross; the recommended threshold is the lowest one whose FAR
stays within the target.

>>> import numpy as np
>>> from facewire.classifier.calibrate import calibrate
>>> rng = np.random.default_rng(0)
>>> centres = rng.normal(size=(4, 16))
>>> vecs = np.repeat(centres, 3, axis=0) + 0.1 * rng.normal(size=(12, 16))
>>> vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
>>> cal = calibrate(vecs.astype(np.float32), [str(i // 3) for i in range(12)])
>>> cal.eer < 0.1
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facewire.bus import messages


@dataclass(frozen=True)
class Calibration:
    genuine: np.ndarray
    impostor: np.ndarray
    thresholds: np.ndarray
    far: np.ndarray
    frr: np.ndarray
    eer: float
    eer_threshold: float
    recommended_threshold: float
    target_far: float

    def summary(self, points: int = 41) -> messages.Calibration:
        """The wire form (``faces/stats/thresholds``' ``calibration``)."""
        return messages.Calibration.from_mapping(self.as_dict(points))

    def as_dict(self, points: int = 41) -> dict[str, object]:
        """JSON-ready summary with ``points`` samples of the FAR/FRR curve (0: none)."""
        step = max(1, len(self.thresholds) // points) if points else len(self.thresholds) + 1
        curve = (
            [
                {
                    "threshold": round(float(t), 4),
                    "far": round(float(a), 5),
                    "frr": round(float(r), 5),
                }
                for t, a, r in zip(
                    self.thresholds[::step], self.far[::step], self.frr[::step], strict=True
                )
            ]
            if points
            else []
        )
        return {
            "eer": round(self.eer, 5),
            "eer_threshold": round(self.eer_threshold, 4),
            "recommended_threshold": round(self.recommended_threshold, 4),
            "target_far": self.target_far,
            "genuine_pairs": int(len(self.genuine)),
            "impostor_pairs": int(len(self.impostor)),
            "curve": curve,
        }


def loo_scores(vectors: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor best-match similarities, leaving each vector out in turn."""
    lab = np.asarray(labels)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    same = lab[:, None] == lab[None, :]
    genuine = np.where(same, sims, -np.inf).max(axis=1)
    impostor = np.where(~same, sims, -np.inf).max(axis=1)
    return genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]


def calibrate(
    vectors: np.ndarray, labels: Sequence[str], target_far: float = 0.01, steps: int = 401
) -> Calibration:
    """FAR/FRR over a threshold grid from -1 to 1 (``steps`` points)."""
    if len(vectors) > 20_000:  # the similarity matrix is n²; sample for big galleries
        pick = np.random.default_rng(0).choice(len(vectors), 20_000, replace=False)
        vectors, labels = vectors[pick], [labels[i] for i in pick]
    genuine, impostor = loo_scores(np.asarray(vectors, np.float32), labels)
    thresholds = np.linspace(-1.0, 1.0, steps)
    far = (
        (impostor[None, :] >= thresholds[:, None]).mean(axis=1)
        if len(impostor)
        else np.zeros(steps)
    )
    frr = (genuine[None, :] < thresholds[:, None]).mean(axis=1) if len(genuine) else np.zeros(steps)
    i = int(np.argmin(np.abs(far - frr)))
    ok = np.nonzero(far <= target_far)[0]
    recommended = float(thresholds[ok[0]]) if len(ok) else float(thresholds[-1])
    return Calibration(
        genuine=genuine,
        impostor=impostor,
        thresholds=thresholds,
        far=far,
        frr=frr,
        eer=float((far[i] + frr[i]) / 2.0),
        eer_threshold=float(thresholds[i]),
        recommended_threshold=recommended,
        target_far=target_far,
    )
