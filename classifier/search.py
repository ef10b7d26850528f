"""k-NN identification over a gallery with FAISS (inner product on unit vectors = cosine).

>>> import numpy as np
>>> from facewire.classifier.search import Matcher
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

from facewire.bus.messages import UNKNOWN
from facewire.config.schema import SearchConfig
from facewire.models.embedders import GENERIC_THRESHOLD

__all__ = ["UNKNOWN", "Matcher"]  # UNKNOWN: the wire contract's, re-exported here


@dataclass(frozen=True)
class Match:
    """The answer for one query: ``name`` is ``unknown`` when ``score < threshold``."""

    name: str
    score: float  # best cosine similarity of the winning identity
    nearest: str  # identity of the single nearest vector (rank-1, ignoring the threshold)
    neighbours: tuple[tuple[str, float], ...]  # top-k (identity, similarity)


@dataclass(frozen=True)
class BatchMatch:
    """The answers for a batch of queries as arrays: what the classifier's hot path
    reads, so no per-neighbour Python objects are built for a result.

    Identities are codes into ``Matcher.names``; -1 means "no such neighbour".
    """

    codes: np.ndarray  # (n, k) int64: identity of each neighbour, nearest first
    sims: np.ndarray  # (n, k) float32: its similarity
    winner: np.ndarray  # (n,) int64: identity that won the vote (-1: empty gallery)
    scores: np.ndarray  # (n,) float: best similarity of the winner (-1 when none)
    known: np.ndarray  # (n,) bool: scores >= threshold


def ivf_lists(n: int) -> int:
    """Inverted lists for ``n`` vectors: ~4√n, with at least 39 training points per
    list (FAISS's own minimum for k-means to be meaningful)."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def ivf_probes(lists: int) -> int:
    """Cells a query scans by default: 8, more for many cells, where one person's
    photos spread over more of them (recall against exact search: docs/benchmarks.md)."""
    return max(8, lists // 64)


def index_kind(n: int, cfg: SearchConfig) -> str:
    """Which index ``auto`` means for ``n`` vectors: exact while that is cheap enough,
    inverted lists (IVF) in the middle, HNSW for large galleries."""
    if cfg.index != "auto":
        return cfg.index
    if n > cfg.hnsw_above:
        return "hnsw"
    if n > cfg.ivf_above:
        return "ivf"
    return "flat"


def make_index(vectors: np.ndarray, cfg: SearchConfig | None = None) -> faiss.Index:
    """A FAISS inner-product index over ``vectors`` (unit norm), as ``cfg`` says.

    - ``flat``: exact; cost grows with the gallery (10k × 512-d ≈ 5 M multiply-adds
      per query).
    - ``ivf``: k-means cells, a query scans its ``nprobe`` nearest cells only. A known
      face sits in its person's cell, so it is found; strangers may get slightly lower
      neighbours than exact search, which changes nothing: they are below threshold.
    - ``hnsw``: graph search, no training, for the largest galleries.
    """
    cfg = cfg or SearchConfig()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    kind = index_kind(n, cfg)
    index: faiss.Index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    elif kind == "ivf" and n >= 39:
        # vectors kept as float16 in the cells: half the memory, faster per query, the
        # same recall (similarities within ~1e-3; docs/benchmarks.md)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer,
            dim,
            ivf_lists(n),
            faiss.ScalarQuantizer.QT_fp16,
            faiss.METRIC_INNER_PRODUCT,
        )
        index.cp.seed = 1234  # the same gallery gives the same cells on every start
        index.train(vectors)
    else:  # flat, or too few vectors to train cells
        index = faiss.IndexFlatIP(dim)
    if n:
        index.add(vectors)
    return tune(index, cfg)


def describe(index: faiss.Index) -> str:
    """A short name for ``index`` and its search knobs: ``flat``, ``ivf256-fp16/8``
    (cells, storage, cells scanned), ``hnsw32/64`` (links, candidates)."""
    if isinstance(index, faiss.IndexIVF):
        storage = "fp16" if isinstance(index, faiss.IndexIVFScalarQuantizer) else "f32"
        return f"ivf{index.nlist}-{storage}/{index.nprobe}"
    if isinstance(index, faiss.IndexHNSW):
        return f"hnsw{index.hnsw.nb_neighbors(1)}/{index.hnsw.efSearch}"  # type: ignore[attr-defined]
    return "flat"


def tune(index: faiss.Index, cfg: SearchConfig) -> faiss.Index:
    """Set the search-time knobs of ``cfg`` on ``index`` (also one read from disk)."""
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(cfg.nprobe or ivf_probes(index.nlist), index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = cfg.ef_search
    return index


class Matcher:
    """Votes among the ``k`` nearest gallery vectors, weighted by similarity."""

    def __init__(
        self,
        vectors: np.ndarray,
        labels: Sequence[str],
        k: int | None = None,
        threshold: float | str | None = None,
        search: SearchConfig | None = None,
        index: faiss.Index | None = None,
        negatives: tuple[np.ndarray, Sequence[str]] | None = None,
    ) -> None:
        """``k`` and ``threshold`` default to ``search``'s (else the schema's defaults).
        ``index``: an index already holding ``vectors`` (e.g. read from disk);
        otherwise one is built as ``search`` says (default: ``auto``).

        ``negatives``: vectors an operator said were *not* the person given with each
        (corrections). A query at least as close to such a vector as to its winner's
        nearest gallery vector is not named as that person (``known`` false)."""
        search = search or SearchConfig()
        k = search.k if k is None else k
        threshold = search.threshold if threshold is None else threshold
        if threshold == "auto":  # not calibrated by the caller: the generic default
            threshold = GENERIC_THRESHOLD
        if len(vectors) != len(labels):
            raise ValueError("one label per gallery vector")
        # identities as small ints: the vote is then numpy work, not Python per neighbour
        self.names, codes = np.unique(
            np.asarray(labels, dtype=object).astype(str), return_inverse=True
        )
        self._codes = np.append(codes.astype(np.int64), -1)  # index -1 (no neighbour) → -1
        self.k = max(1, min(k, len(labels))) if len(labels) else 0
        self.threshold = float(threshold)
        self.dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        self.index = index if index is not None else make_index(vectors, search)
        if self.index.ntotal != len(labels):
            raise ValueError(f"index holds {self.index.ntotal} vectors for {len(labels)} labels")
        self._neg = np.zeros((0, self.dim), np.float32)
        self._neg_owner = np.zeros(0, np.int64)
        if negatives is not None and len(negatives[1]):
            lookup = {str(n): i for i, n in enumerate(self.names)}
            owners = [lookup.get(str(n), -1) for n in negatives[1]]
            keep = [i for i, o in enumerate(owners) if o >= 0]  # of people still here
            self._neg = np.ascontiguousarray(negatives[0][keep], dtype=np.float32)
            self._neg_owner = np.asarray([owners[i] for i in keep], np.int64)

    @property
    def corrections(self) -> int:
        """Negative vectors in force."""
        return len(self._neg_owner)

    @classmethod
    def from_config(cls, vectors: np.ndarray, labels: Sequence[str], cfg: SearchConfig) -> Matcher:
        return cls(vectors, labels, cfg.k, cfg.threshold, cfg)

    def match(self, queries: np.ndarray) -> BatchMatch:
        """Search all rows of ``queries`` (float32, unit norm) in one FAISS call and vote."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        n = len(q)
        if self.k == 0:
            none = np.full((n, 1), -1, np.int64)
            no_sims = np.full((n, 1), -1.0, np.float32)
            return BatchMatch(none, no_sims, none[:, 0], np.full(n, -1.0), np.zeros(n, bool))
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
        rows = np.arange(n)
        scores = np.where(same[rows, winner], sims, -np.inf).max(axis=1).astype(np.float64)
        empty = ~valid[:, 0]
        scores[empty] = -1.0
        winner_codes = np.where(empty, -1, codes[rows, winner])
        known = scores >= self.threshold
        if len(self._neg_owner) and known.any():
            # the best negative of each query's winner, as close as the winner itself?
            neg = q @ self._neg.T
            neg = np.where(self._neg_owner[None, :] == winner_codes[:, None], neg, -np.inf)
            known &= neg.max(axis=1) < scores
        return BatchMatch(codes, sims, winner_codes, scores, known)

    def search(self, queries: np.ndarray) -> list[Match]:
        """One ``Match`` per row of ``queries``, with names (for tools and tests)."""
        m = self.match(queries)
        names = self.names
        out = []
        for r in range(len(m.codes)):
            if m.winner[r] < 0:
                out.append(Match(UNKNOWN, -1.0, UNKNOWN, ()))
                continue
            pairs = zip(m.codes[r], m.sims[r], strict=True)
            neighbours = tuple((str(names[c]), float(s)) for c, s in pairs if c >= 0)
            name = str(names[m.winner[r]]) if m.known[r] else UNKNOWN
            out.append(Match(name, float(m.scores[r]), neighbours[0][0], neighbours))
        return out
