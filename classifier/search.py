"""k-NN identification over a gallery with FAISS (inner product on unit vectors = cosine).

>>> import numpy as np
>>> from classifier.search import Matcher
>>> vecs = np.eye(3, dtype=np.float32)
>>> m = Matcher(vecs, ["ann", "bob", "bob"], k=2, threshold=0.5)
>>> [(r.name, round(r.score, 2)) for r in m.search(np.array([[1, 0, 0], [0, 0.1, 1]], np.float32))]
[('ann', 1.0), ('bob', 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Match:
    """The answer for one query: ``name`` is ``unknown`` when ``score < threshold``."""

    name: str
    score: float  # best cosine similarity of the winning identity
    nearest: str  # identity of the single nearest vector (rank-1, ignoring the threshold)
    neighbours: tuple[tuple[str, float], ...]  # top-k (identity, similarity)


def make_index(vectors: np.ndarray, kind: str = "auto", hnsw_above: int = 50_000) -> faiss.Index:
    """Flat inner-product index for small galleries, HNSW beyond ``hnsw_above`` vectors."""
    dim = vectors.shape[1]
    index: faiss.Index
    if kind == "hnsw" or (kind == "auto" and len(vectors) > hnsw_above):
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:
        index = faiss.IndexFlatIP(dim)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class Matcher:
    """Votes among the ``k`` nearest gallery vectors, weighted by similarity."""

    def __init__(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        k: int = 5,
        threshold: float = 0.363,
        index_kind: str = "auto",
        hnsw_above: int = 50_000,
    ) -> None:
        if len(vectors) != len(labels):
            raise ValueError("one label per gallery vector")
        self.labels = np.asarray(labels, dtype=object)
        self.k = max(1, min(k, len(labels))) if len(labels) else 0
        self.threshold = threshold
        self.dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        self.index = make_index(vectors, index_kind, hnsw_above)

    def search(self, queries: np.ndarray) -> list[Match]:
        """One ``Match`` per row of ``queries`` (float32, unit norm), in one FAISS call."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self.k == 0:
            return [Match(UNKNOWN, -1.0, UNKNOWN, ()) for _ in range(len(q))]
        sims, ids = self.index.search(q, self.k)
        return [self._vote(s, i) for s, i in zip(sims, ids, strict=True)]

    def _vote(self, sims: np.ndarray, ids: np.ndarray) -> Match:
        valid = ids >= 0
        names = self.labels[ids[valid]]
        scores = sims[valid]
        neighbours = tuple((str(n), float(s)) for n, s in zip(names, scores, strict=True))
        if not neighbours:
            return Match(UNKNOWN, -1.0, UNKNOWN, ())
        weight: dict[str, float] = {}
        best: dict[str, float] = {}
        for name, s in neighbours:
            weight[name] = weight.get(name, 0.0) + max(s, 0.0)
            best[name] = max(best.get(name, -1.0), s)
        winner = max(weight, key=lambda n: (weight[n], best[n]))
        score = best[winner]
        name = winner if score >= self.threshold else UNKNOWN
        return Match(name, score, neighbours[0][0], neighbours)
