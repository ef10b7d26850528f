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
        # identities as small ints: the vote is then numpy work, not Python per neighbour
        self.names, codes = np.unique(
            np.asarray(labels, dtype=object).astype(str), return_inverse=True
        )
        self._codes = np.append(codes.astype(np.int64), -1)  # index -1 (no neighbour) → -1
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
        codes = self._codes[ids]  # (n, k); -1 where FAISS had fewer than k
        valid = codes >= 0
        weights = np.where(valid, np.maximum(sims, 0.0), 0.0)
        # same[r, j, i]: neighbour i has the identity of neighbour j
        same = (codes[:, :, None] == codes[:, None, :]) & valid[:, None, :]
        votes = (same * weights[:, None, :]).sum(axis=2)
        # neighbours come sorted by similarity, so ties go to the closer identity
        votes = np.where(valid, votes, -np.inf) - 1e-9 * np.arange(self.k)
        winner = votes.argmax(axis=1)
        rows = np.arange(len(q))
        scores = np.where(same[rows, winner], sims, -np.inf).max(axis=1)
        names, sims_l, codes_l = self.names, sims.tolist(), codes.tolist()
        out = []
        for r, (w, score) in enumerate(zip(winner.tolist(), scores.tolist(), strict=True)):
            row_codes = codes_l[r]
            if row_codes[0] < 0:
                out.append(Match(UNKNOWN, -1.0, UNKNOWN, ()))
                continue
            neighbours = tuple(
                (str(names[c]), s) for c, s in zip(row_codes, sims_l[r], strict=True) if c >= 0
            )
            name = str(names[row_codes[w]]) if score >= self.threshold else UNKNOWN
            out.append(Match(name, score, neighbours[0][0], neighbours))
        return out
