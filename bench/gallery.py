"""``facewire bench gallery``: the search index alone, by gallery size.

For each size: the index the service picks (``search.index: auto``, or ``--index``;
each vector's person given as the classifier's ``Matcher`` gives it),
how long it takes to build (training + adding) and how much memory it holds, how
fast one query is (one query per FAISS call, as the classifier's small batches see
it, on one FAISS thread like the classifier's worker; also per query in batches of
64) and recall@1 against an exact search of the same vectors.

Vectors: ``bench.common.synthetic_gallery`` (10 "photos" per made-up person around a
centre), generated in chunks so 1M × 512-d needs its 2 GB and little more. Queries:
``bench.common.synthetic_probes``, half new photos of gallery people, half strangers.
recall@1 is the share of known faces whose nearest gallery vector is the one exact
search finds (``same_person_at_1``: one of the same person's, what the vote needs).
For strangers (nobody's photos, all far below any threshold) it is reported apart:
which of many equally distant vectors comes first changes no answer.

Non-flat indexes are kept in ``<results>/cache`` (a 1M IVF or HNSW index takes
minutes to build on 2 cores), with the time their build took; ``--no-cache`` builds
afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from facewire.bench.common import (
    RESULTS,
    SYNTHETIC_PER_ID,
    SYNTHETIC_SPREAD,
    emit,
    note,
    summary,
    synthetic_probes,
    unit_vectors,
)

COLUMNS = [
    ("gallery", "gallery"),
    ("index", "index"),
    ("build_s", "build s"),
    ("index_mb", "index MB"),
    ("rss_growth_mb", "RSS +MB"),
    ("search_p50_ms", "1-query p50 ms"),
    ("search_p99_ms", "p99 ms"),
    ("batch64_ms", "batch-64 ms/query"),
    ("recall_at_1", "recall@1"),
    ("same_person_at_1", "same person"),
    ("recall_at_1_strangers", "recall@1 strangers"),
    ("cached", "cached"),
]

CACHE_VERSION = "v1"
CHUNK = 65_536  # rows generated / added at a time: bounded temporaries, progress lines
TARGET_SIZE, TARGET_P99_MS, TARGET_RECALL = 1_000_000, 2.0, 0.99


def gallery_vectors(n: int, dim: int, chunk: int = CHUNK) -> np.ndarray:
    """``synthetic_gallery(n, dim)``'s vectors (the same numbers), without its labels
    and made chunk by chunk: at 1M × 512-d the one-shot version peaks at ~10 GB."""
    people = -(-n // SYNTHETIC_PER_ID)
    centres = unit_vectors(people, dim, seed=0)
    rng = np.random.default_rng(1)
    scale = np.float32(SYNTHETIC_SPREAD / np.sqrt(dim))
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        v = centres[np.arange(start, stop) // SYNTHETIC_PER_ID]
        v += rng.standard_normal((stop - start, dim), dtype=np.float32) * scale
        out[start:stop] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def rss_bytes() -> int | None:
    """This process's resident memory (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def index_bytes(index: Any, path: Path | None) -> int:
    """What the index holds, as FAISS writes it (a flat index: its vectors)."""
    import faiss

    if isinstance(index, faiss.IndexFlat):
        return int(index.ntotal) * int(index.code_size)
    if path is not None and path.exists():
        return path.stat().st_size
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


class Progress:
    """Progress lines on stderr for long builds: at most one every few seconds."""

    def __init__(self, label: str, every_s: float = 5.0) -> None:
        self.label, self.every_s = label, every_s
        self.t0 = self.last = time.perf_counter()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.every_s:
            return
        self.last = now
        share = f" {done:,} / {total:,} ({100 * done / max(total, 1):.0f} %)" if total else ""
        note(f"  {self.label}: {stage}{share}, {now - self.t0:.0f} s")


def build_or_load(
    vectors: np.ndarray, cfg: Any, cache_dir: Path | None, label: str
) -> tuple[Any, dict[str, Any], Path | None]:
    """The index ``cfg`` asks for over ``vectors``, from the cache when it is there;
    its build figures (seconds training and adding; a cached one's as when built)."""
    import faiss

    from facewire.classifier.search import index_spec, make_index, tune

    n, dim = vectors.shape
    people = np.arange(n, dtype=np.int64) // SYNTHETIC_PER_ID  # as the Matcher's codes
    spec = index_spec(n, dim, cfg, int(people[-1]) + 1 if n else 0)
    path = None
    if cache_dir is not None and not spec.startswith("flat"):
        path = cache_dir / f"gallery-{spec}-{n}x{dim}-{CACHE_VERSION}.faiss"
    meta_path = path.with_suffix(".json") if path is not None else None
    if path is not None and meta_path is not None and path.exists() and meta_path.exists():
        t0 = time.perf_counter()
        index = tune(faiss.read_index(str(path)), cfg)
        built = json.loads(meta_path.read_text())
        return index, {**built, "cached": True, "load_s": round(time.perf_counter() - t0, 2)}, path
    times: dict[str, float] = {}
    progress = Progress(label)

    def report(stage: str, done: int, total: int) -> None:
        times.setdefault(stage, time.perf_counter())
        progress(stage, done, total)

    t0 = time.perf_counter()
    index = make_index(vectors, cfg, progress=report, people=people)
    t_end = time.perf_counter()
    add_start = times.get("add", t0)
    built = {
        "build_s": round(t_end - t0, 2),
        "train_s": round(add_start - t0, 2),
        "add_s": round(t_end - add_start, 2),
    }
    if path is not None and meta_path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path))
        meta_path.write_text(json.dumps(built) + "\n")
    return index, {**built, "cached": False, "load_s": None}, path


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The nearest gallery row of each query by exact inner product (batched, all
    cores, no copy of the gallery)."""
    import faiss

    _, ids = faiss.knn(queries, vectors, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return ids[:, 0]


def time_search(index: Any, queries: np.ndarray, k: int) -> dict[str, Any]:
    """One query per call (p50/p99/max) and batches of 64 (ms per query)."""
    for i in range(min(50, len(queries))):  # warm caches and FAISS's first-call paths
        index.search(queries[i : i + 1], k)
    times = np.empty(len(queries))
    top1 = np.empty(len(queries), np.int64)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        t0 = time.perf_counter()
        _, ids = index.search(q, k)
        times[i] = time.perf_counter() - t0
        top1[i] = ids[0, 0]
    t0 = time.perf_counter()
    for s in range(0, len(queries), 64):
        index.search(queries[s : s + 64], k)
    batch = (time.perf_counter() - t0) / max(len(queries), 1)
    return {
        **summary(times * 1e3, prefix="search_"),
        "batch64_ms": round(batch * 1e3, 4),
        "top1": top1,
    }


def measure(
    size: int, args: argparse.Namespace, cfg: Any, cache_dir: Path | None
) -> dict[str, Any]:
    import faiss

    from facewire.classifier.search import describe, index_kind

    cores = os.cpu_count() or 1
    faiss.omp_set_num_threads(cores)  # building and exact search: every core
    note(f"gallery {size:,} × {args.dim}: making vectors …")
    vectors = gallery_vectors(size, args.dim)
    queries = synthetic_probes(size, args.dim, count=args.queries)
    want = exact_top1(vectors, queries)
    rss0 = rss_bytes()
    index, built, path = build_or_load(vectors, cfg, cache_dir, f"gallery {size:,}")
    rss1 = rss_bytes()
    faiss.omp_set_num_threads(max(1, args.faiss_threads))
    timed = time_search(index, queries, cfg.k)
    got = timed.pop("top1")
    known = len(queries) // 2
    hit = got == want
    same = got // SYNTHETIC_PER_ID == want // SYNTHETIC_PER_ID
    size_b = index_bytes(index, path)
    row = {
        "bench": "gallery",
        "gallery": size,
        "dim": args.dim,
        "kind": index_kind(size, cfg),
        "index": describe(index),
        "params": index_params(index),
        **built,
        "index_bytes": size_b,
        "index_mb": round(size_b / 2**20, 1),
        "vectors_mb": round(vectors.nbytes / 2**20, 1),
        "rss_growth_mb": round((rss1 - rss0) / 2**20, 1) if rss0 and rss1 else None,
        **timed,
        "recall_at_1": round(float(hit[:known].mean()), 4) if known else None,
        # what the vote needs: the nearest vector is one of the right person's photos
        "same_person_at_1": round(float(same[:known].mean()), 4) if known else None,
        "recall_at_1_strangers": round(float(hit[known:].mean()), 4),
        "queries": len(queries),
        "k": cfg.k,
        "faiss_threads": max(1, args.faiss_threads),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    del index, vectors
    return row


def index_params(index: Any) -> dict[str, Any]:
    """The build and search knobs of ``index``, for the JSON rows."""
    import faiss

    if isinstance(index, faiss.IndexIVF):
        return {"nlist": index.nlist, "nprobe": index.nprobe, "by_residual": index.by_residual}
    if isinstance(index, faiss.IndexRefine):
        base = faiss.downcast_index(index.base_index)
        return {"pq_m": getattr(base, "M", None), "rerank": index.k_factor}
    if isinstance(index, faiss.IndexHNSW):
        return {
            "M": index.hnsw.nb_neighbors(1),  # type: ignore[attr-defined]
            "ef_construction": index.hnsw.efConstruction,
            "ef_search": index.hnsw.efSearch,
        }
    return {}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire bench gallery",
        description="The FAISS index alone by gallery size, on made-up clustered unit "
        "vectors: build time, memory, one-query search p50/p99 on one FAISS thread, "
        f"recall@1 against exact search. Target at {TARGET_SIZE:,}: p99 ≤ "
        f"{TARGET_P99_MS:g} ms, recall@1 ≥ {TARGET_RECALL}.",
    )
    p.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="gallery sizes (comma list; default 10k,100k,1M; 1M × 512-d needs ~4 GB)",
    )
    p.add_argument("--dim", type=int, default=512, help="vector size (default 512, like CLIP)")
    p.add_argument(
        "--queries", type=int, default=2000, help="queries, half strangers (default 2000)"
    )
    p.add_argument(
        "--index",
        choices=["auto", "flat", "ivf", "people", "pq", "hnsw"],
        default="auto",
        help="FAISS index (default auto: what the service picks for the gallery size)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a search setting, e.g. --set nprobe=16 --set ef_search=48 (see "
        "docs/configuration.md, search.*)",
    )
    p.add_argument(
        "--faiss-threads",
        type=int,
        default=1,
        help="FAISS threads while searching (default 1, as the classifier's worker)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="build indexes afresh (kept in bench/results/cache otherwise)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def search_config(index: str, pairs: list[str]) -> Any:
    """``SearchConfig`` with ``index`` and the ``--set`` overrides, checked like the
    service's own settings."""
    from facewire.config import ConfigError, load
    from facewire.config.schema import ClassifierConfig

    overrides: dict[str, Any] = {"search.index": index}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"facewire bench gallery: --set wants KEY=VALUE, not {pair!r}")
        overrides[f"search.{key.strip().removeprefix('search.')}"] = value.strip()
    try:
        return load(ClassifierConfig, overrides=overrides, env={}).search
    except ConfigError as exc:
        raise SystemExit(f"facewire bench gallery: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    cfg = search_config(args.index, args.set)
    results = Path(os.environ.get("FACEWIRE_BENCH_RESULTS") or RESULTS)
    cache_dir = None if args.no_cache else results / "cache"
    rows = []
    for size in sizes:
        row = measure(size, args, cfg, cache_dir)
        rows.append(row)
        note(
            f"  {size:,}: {row['index']}, p99 {row['search_p99_ms']} ms, "
            f"recall@1 {row['recall_at_1']}"
        )
    notes = [
        f"search on {max(1, args.faiss_threads)} FAISS thread(s), one query per call; "
        "recall@1: known faces (strangers apart)"
    ]
    for r in rows:
        if r["gallery"] == TARGET_SIZE:
            ok = r["search_p99_ms"] <= TARGET_P99_MS and (r["recall_at_1"] or 0) >= TARGET_RECALL
            notes.append(
                f"target at {TARGET_SIZE:,} (p99 ≤ {TARGET_P99_MS:g} ms, recall@1 ≥ "
                f"{TARGET_RECALL}): {'met' if ok else 'NOT met'}"
            )
    params = {**vars(args), "search": {k: v for k, v in vars(cfg).items()}}
    emit("gallery", rows, COLUMNS, args.json, params=params, notes=notes, out_dir=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
