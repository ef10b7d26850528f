"""k-NN identification over a gallery with FAISS (inner product on unit vectors = cosine).

>>> import numpy as np
>>> from facewire.classifier.search import Matcher
>>> vecs = np.eye(3, dtype=np.float32)
>>> m = Matcher(vecs, ["ann", "bob", "bob"], k=2, threshold=0.5)
>>> [(r.name, round(r.score, 2)) for r in m.search(np.array([[1, 0, 0], [0, 0.1, 1]], np.float32))]
[('ann', 1.0), ('bob', 1.0)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeGuard

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


def pq_subvectors(dim: int, wanted: int) -> int:
    """Sub-vectors of a ``pq`` code: ``wanted``, or the largest divisor of ``dim`` below."""
    return next(m for m in range(min(wanted, dim), 0, -1) if dim % m == 0)


#: fewer vectors than this cannot train 16 centroids per sub-vector (FAISS wants 39
#: points per centroid): a ``pq`` index for them is exact instead, and so is the
#: search for the nearest people of a ``people`` index with fewer people
PQ_MIN_VECTORS = 16 * 39
#: people whose photos a query is compared with by default (``nprobe: 0``)
PEOPLE_PROBES = 8
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80
#: rows added per ``add`` call when building: progress can be reported between them
ADD_CHUNK = 65_536

#: ``progress(stage, done, total)``: "train" once, then "add" after every chunk
Progress = Callable[[str, int, int], None]


def index_kind(n: int, cfg: SearchConfig) -> str:
    """Which index ``auto`` means for ``n`` vectors: exact while that is cheap enough,
    inverted lists (IVF) in the middle, a cell per person for large galleries."""
    if cfg.index != "auto":
        return cfg.index
    if n > cfg.people_above:
        return "people"
    if n > cfg.ivf_above:
        return "ivf"
    return "flat"


def index_spec(n: int, dim: int, cfg: SearchConfig, people: int = 0) -> str:
    """What ``make_index`` builds for ``n`` × ``dim`` vectors of ``people`` people (0:
    vectors without names), as a name fit for a file: ``flat``, ``ivf1264-fp16``,
    ``people100000-pq32-fp16``, ``pq32x4fs-fp16`` or ``hnsw32-ef80`` (build parameters
    only; search knobs are set on the built index by ``tune``)."""
    kind = index_kind(n, cfg)
    m = pq_subvectors(dim, cfg.pq_m)
    if kind == "people" and people:
        return f"people{people}-pq{m}-fp16" if people >= PQ_MIN_VECTORS else f"people{people}-fp16"
    if kind == "ivf" and n >= 39:
        return f"ivf{ivf_lists(n)}-fp16"
    if kind in ("pq", "people") and n >= PQ_MIN_VECTORS:  # people without names: pq
        return f"pq{m}x4fs-fp16"
    if kind == "hnsw":
        return f"hnsw{HNSW_M}-ef{HNSW_EF_CONSTRUCTION}"
    return "flat"


def person_means(vectors: np.ndarray, people: np.ndarray) -> np.ndarray:
    """Each person's mean direction (unit norm): row ``p`` for the vectors whose
    ``people`` code is ``p`` (codes 0 … P-1), summed a chunk at a time."""
    n, dim = vectors.shape
    sums = np.zeros((int(people.max()) + 1 if n else 0, dim), np.float32)
    grouped = bool(np.all(people[1:] >= people[:-1]))  # a gallery read person by person
    order = None if grouped else np.argsort(people, kind="stable")
    for start in range(0, n, ADD_CHUNK):
        rows = (
            slice(start, start + ADD_CHUNK) if order is None else order[start : start + ADD_CHUNK]
        )
        codes = people[rows]
        runs = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # sorted: one run each
        sums[codes[runs]] += np.add.reduceat(vectors[rows], runs, axis=0)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def make_index(
    vectors: np.ndarray,
    cfg: SearchConfig | None = None,
    progress: Progress | None = None,
    people: np.ndarray | None = None,
) -> faiss.Index:
    """A FAISS inner-product index over ``vectors`` (unit norm), as ``cfg`` says;
    ``people``: whose each vector is, as codes 0 … P-1 (for the ``people`` index).

    - ``flat``: exact; cost grows with the gallery (10k × 512-d ≈ 5 M multiply-adds
      per query).
    - ``ivf``: k-means cells, a query scans its ``nprobe`` nearest cells only. A known
      face sits in its person's cell, so it is found; strangers may get slightly lower
      neighbours than exact search, which changes nothing: they are below threshold.
    - ``people``: a cell per person, holding that person's vectors as float16. A
      query finds the ``nprobe`` people whose mean is nearest (a fast scan of one
      short code per person, exact below ``PQ_MIN_VECTORS`` people) and is compared
      with all their vectors. In a large gallery k-means cells each hold many
      unrelated people and split one person's photos, so IVF (and HNSW) lose the
      nearest vectors; a person's own cell cannot. Without ``people``: ``pq``.
    - ``pq``: every vector as a 4-bit product-quantised code (``pq_m`` sub-vectors,
      16 bytes at 32), all of them scanned with FAISS's SIMD fast scan; the best
      ``k × pq_rerank`` are re-ranked on float16 copies, so the similarities returned
      are exact to ~1e-5. Needs no names, costs a scan of every code.
    - ``hnsw``: graph search, no training (only when asked for).
    """
    cfg = cfg or SearchConfig()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    count = int(people.max()) + 1 if people is not None and n else 0
    spec = index_spec(n, dim, cfg, count)
    index: faiss.Index
    if spec.startswith("people") and people is not None:
        return tune(_people_index(vectors, np.asarray(people, np.int64), cfg, progress), cfg)
    if spec.startswith("hnsw"):
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    elif spec.startswith("ivf"):
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
    elif spec.startswith("pq"):
        m = pq_subvectors(dim, cfg.pq_m)
        index = faiss.index_factory(dim, f"PQ{m}x4fs,Refine(SQfp16)", faiss.METRIC_INNER_PRODUCT)
    else:  # flat, or too few vectors to train
        index = faiss.IndexFlatIP(dim)
    if not index.is_trained:
        if progress:
            progress("train", 0, 0)
        index.train(vectors)  # k-means samples what it needs (seeded: same codes each time)
    for start in range(0, n, ADD_CHUNK):
        if progress:
            progress("add", start, n)
        index.add(vectors[start : start + ADD_CHUNK])
    if progress:
        progress("add", n, n)
    return tune(index, cfg)


def _people_index(
    vectors: np.ndarray, people: np.ndarray, cfg: SearchConfig, progress: Progress | None
) -> faiss.Index:
    n, dim = vectors.shape
    if progress:
        progress("train", 0, 0)
    means = person_means(vectors, people)
    quantizer: faiss.Index
    if len(means) >= PQ_MIN_VECTORS:
        m = pq_subvectors(dim, cfg.pq_m)
        quantizer = faiss.index_factory(dim, f"PQ{m}x4fs", faiss.METRIC_INNER_PRODUCT)
        quantizer.train(means)
    else:
        quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(means)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, len(means), faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    # the vectors themselves in the cells, not their offset from an approximate mean:
    # the similarities found are then exact to float16
    index.by_residual = False
    index.train(vectors[:1])  # the cells are given: nothing to learn but the format
    for start in range(0, n, ADD_CHUNK):
        if progress:
            progress("add", start, n)
        x = vectors[start : start + ADD_CHUNK]
        cells = np.ascontiguousarray(people[start : start + ADD_CHUNK])
        index.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(cells))
    if progress:
        progress("add", n, n)
    return index


def is_people(index: faiss.Index) -> TypeGuard[faiss.IndexIVF]:
    """A ``people`` index: cells given by name, holding the vectors themselves."""
    return isinstance(index, faiss.IndexIVF) and not index.by_residual


def describe(index: faiss.Index) -> str:
    """A short name for ``index`` and its search knobs: ``flat``, ``ivf256-fp16/8``
    (cells, storage, cells scanned), ``people100000-fp16/8`` (people, storage, people
    compared), ``pq32-fp16/8`` (sub-vectors, re-rank storage, candidates re-ranked per
    neighbour), ``hnsw32/64`` (links, candidates)."""
    if is_people(index):
        return f"people{index.nlist}-fp16/{index.nprobe}"
    if isinstance(index, faiss.IndexIVF):
        storage = "fp16" if isinstance(index, faiss.IndexIVFScalarQuantizer) else "f32"
        return f"ivf{index.nlist}-{storage}/{index.nprobe}"
    if isinstance(index, faiss.IndexRefine):
        base = faiss.downcast_index(index.base_index)
        m = getattr(base, "M", 0)
        return f"pq{m}-fp16/{index.k_factor:g}"
    if isinstance(index, faiss.IndexHNSW):
        return f"hnsw{index.hnsw.nb_neighbors(1)}/{index.hnsw.efSearch}"  # type: ignore[attr-defined]
    return "flat"


def tune(index: faiss.Index, cfg: SearchConfig) -> faiss.Index:
    """Set the search-time knobs of ``cfg`` on ``index`` (also one read from disk)."""
    if is_people(index):
        index.nprobe = min(cfg.nprobe or PEOPLE_PROBES, index.nlist)
    elif isinstance(index, faiss.IndexIVF):
        index.nprobe = min(cfg.nprobe or ivf_probes(index.nlist), index.nlist)
    elif isinstance(index, faiss.IndexRefine):
        index.k_factor = float(cfg.pq_rerank)
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
        if index is None:  # codes as people: a large gallery gets a cell per person
            index = make_index(vectors, search, people=self._codes[:-1])
        self.index = index
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
