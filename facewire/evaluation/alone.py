"""Galleries too small to calibrate (``facewire eval --alone``): each enrolled person
alone as the gallery, every probe of someone else as a stranger to them.

Such a gallery (one person, or a few with a photo or two each) has too few scores for
``search.threshold: auto`` and takes the model's default for its crop
(``models.embedders.fallback_threshold``); this is how that default is measured.
Per threshold t, over every (person, probe) pair:

- *strangers named*: probes of anyone else whose best similarity to the person's
  photos is ≥ t, as a share of all such pairs;
- *own named*: the person's own probes at ≥ t, as a share of them.

>>> import numpy as np
>>> gallery = np.eye(3, dtype=np.float32)
>>> probes = np.array([[0.9, 0.1, 0], [0.5, 0.5, 0.5]], np.float32)
>>> rows = alone_rates(gallery, ["a", "b", "c"], probes, ["a", "x"], [0.3, 0.6])
>>> [(r["threshold"], r["strangers_named"], r["own_named"]) for r in rows]
[(0.3, 0.6, 1.0), (0.6, 0.0, 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def alone_rates(
    vectors: np.ndarray,
    labels: Sequence[str],
    queries: np.ndarray,
    persons: Sequence[str],
    thresholds: Sequence[float],
    photos: int = 0,
) -> list[dict[str, Any]]:
    """One row per threshold: strangers named and own probes named (module doc);
    ``photos``: only each person's first that many gallery vectors (0: all)."""
    people = sorted(set(labels))
    label_arr = np.asarray(labels, dtype=object)
    person_arr = np.asarray(persons, dtype=object)
    own_scores: list[np.ndarray] = []
    other_scores: list[np.ndarray] = []
    for person in people:
        own_vectors = vectors[label_arr == person]
        best = (queries @ (own_vectors[:photos] if photos else own_vectors).T).max(axis=1)
        own = person_arr == person
        own_scores.append(best[own])
        other_scores.append(best[~own])
    own_all = np.concatenate(own_scores) if own_scores else np.zeros(0)
    other_all = np.concatenate(other_scores) if other_scores else np.zeros(0)
    rows = []
    for t in sorted(set(thresholds)):
        rows.append(
            {
                "threshold": round(float(t), 4),
                "people": len(people),
                "photos_each": photos or None,
                "stranger_pairs": len(other_all),
                "strangers_named": _share(int((other_all >= t).sum()), len(other_all)),
                "own_probes": len(own_all),
                "own_named": _share(int((own_all >= t).sum()), len(own_all)),
            }
        )
    return rows


def _share(n: int, d: int) -> float | None:
    return round(n / d, 6) if d else None


def format_alone(rows: list[dict[str, Any]], default: float | None = None) -> str:
    """The rows as a table; ``default`` (the fallback in force) is marked."""
    if not rows:
        return ""
    first = rows[0]
    photos = f" (first {first['photos_each']} photos)" if first.get("photos_each") else ""
    lines = [
        f"each of {first['people']} people alone as the gallery{photos} "
        f"({first['stranger_pairs']} stranger pairs, {first['own_probes']} own probes)",
        f"{'threshold':>12}  {'strangers named':>16}  {'own named':>10}",
    ]
    for r in rows:
        mark = " (default)" if default is not None and r["threshold"] == round(default, 4) else ""
        lines.append(
            f"{r['threshold']:>12g}  {_pct(r['strangers_named']):>16}  "
            f"{_pct(r['own_named']):>10}{mark}"
        )
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"
