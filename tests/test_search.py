"""classifier.search: which index a gallery gets, and that its answers match exact search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from facewire.bench.common import synthetic_gallery, synthetic_probes
from facewire.classifier.search import Matcher, describe, index_kind, make_index, tune
from facewire.config.schema import SearchConfig


@pytest.mark.parametrize(
    ("n", "kind"), [(100, "flat"), (5_000, "flat"), (5_001, "ivf"), (200_001, "hnsw")]
)
def test_auto_picks_the_index_by_gallery_size(n: int, kind: str) -> None:
    assert index_kind(n, SearchConfig()) == kind
    assert index_kind(n, SearchConfig(index="flat")) == "flat"


def answers(m: Matcher, queries: np.ndarray) -> np.ndarray:
    found = m.match(queries)
    return np.where(found.known, found.winner, -1)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_names_known_faces_like_exact_search(kind: str) -> None:
    dim, n = 128, 20_000
    vectors, labels = synthetic_gallery(n, dim)
    queries = synthetic_probes(n, dim, count=512)
    known = len(queries) // 2
    exact = Matcher(vectors, labels, search=SearchConfig(index="flat"))
    approx = Matcher(vectors, labels, search=SearchConfig(index=kind))
    assert isinstance(approx.index, faiss.IndexIVF if kind == "ivf" else faiss.IndexHNSW)
    assert describe(approx.index) == ("ivf512-fp16/8" if kind == "ivf" else "hnsw32/64")
    want, got = answers(exact, queries), answers(approx, queries)
    assert (want[:known] >= 0).mean() > 0.95  # the made-up people are recognisable
    assert (got[:known] == want[:known]).mean() >= 0.99
    a, b = approx.match(queries[:known]), exact.match(queries[:known])
    assert (a.codes[:, 0] == b.codes[:, 0]).mean() >= 0.99  # recall@1


def test_ivf_settings_survive_a_round_trip_through_a_file(tmp_path) -> None:
    vectors, labels = synthetic_gallery(6_000, 64)
    index = make_index(vectors, SearchConfig(index="ivf", nprobe=5))
    assert index.nprobe == 5 and index.ntotal == 6_000
    path = tmp_path / "gallery.faiss"
    faiss.write_index(index, str(path))
    read = tune(faiss.read_index(str(path)), SearchConfig(nprobe=0))
    assert read.nprobe == 8  # the default for few cells
    q = synthetic_probes(6_000, 64, count=64)
    m = Matcher(vectors, labels, index=read)
    same = Matcher(vectors, labels, index=tune(index, SearchConfig(nprobe=0)))
    assert np.array_equal(answers(m, q), answers(same, q))


def test_a_prebuilt_index_must_hold_the_gallery() -> None:
    vectors, labels = synthetic_gallery(100, 32)
    with pytest.raises(ValueError, match="holds 50 vectors for 100 labels"):
        Matcher(vectors, labels, index=make_index(vectors[:50]))


def test_tiny_gallery_asked_for_ivf_falls_back_to_exact() -> None:
    vectors, labels = synthetic_gallery(20, 16)  # too few points to train any cells
    m = Matcher(vectors, labels, search=SearchConfig(index="ivf"))
    assert isinstance(m.index, faiss.IndexFlatIP)
    assert m.search(vectors[:1])[0].nearest == labels[0]
