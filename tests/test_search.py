"""classifier.search: which index a gallery gets, and that its answers match exact search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from facewire.bench.common import synthetic_gallery, synthetic_probes
from facewire.classifier import search
from facewire.classifier.search import (
    PQ_MIN_VECTORS,
    Matcher,
    describe,
    index_kind,
    index_spec,
    is_people,
    make_index,
    person_means,
    pq_subvectors,
    tune,
)
from facewire.config.schema import SearchConfig


@pytest.mark.parametrize(
    ("n", "kind"),
    [(100, "flat"), (5_000, "flat"), (5_001, "ivf"), (50_000, "ivf"), (50_001, "people")],
)
def test_auto_picks_the_index_by_gallery_size(n: int, kind: str) -> None:
    assert index_kind(n, SearchConfig()) == kind
    assert index_kind(n, SearchConfig(index="flat")) == "flat"
    assert index_kind(n, SearchConfig(ivf_above=10**9, people_above=10**9)) == "flat"


def test_index_spec_names_what_make_index_builds() -> None:
    cfg = SearchConfig()
    assert index_spec(1_000, 512, cfg) == "flat"
    assert index_spec(10_000, 512, cfg) == "ivf256-fp16"
    assert index_spec(1_000_000, 512, cfg, people=100_000) == "people100000-pq32-fp16"
    assert index_spec(60_000, 512, cfg, people=100) == "people100-fp16"  # few: exact
    assert index_spec(1_000_000, 512, cfg) == "pq32x4fs-fp16"  # vectors without names
    assert index_spec(1_000_000, 100, SearchConfig(index="pq")) == "pq25x4fs-fp16"
    assert index_spec(PQ_MIN_VECTORS - 1, 512, SearchConfig(index="pq")) == "flat"
    assert index_spec(10, 512, SearchConfig(index="hnsw")) == "hnsw32-ef80"


def test_pq_sub_vectors_divide_the_vector() -> None:
    assert [pq_subvectors(d, 32) for d in (512, 128, 100, 7, 16)] == [32, 32, 25, 7, 16]


def answers(m: Matcher, queries: np.ndarray) -> np.ndarray:
    found = m.match(queries)
    return np.where(found.known, found.winner, -1)


KINDS = {
    "ivf": (faiss.IndexIVF, "ivf512-fp16/8"),
    "people": (faiss.IndexIVF, "people2000-fp16/8"),
    "pq": (faiss.IndexRefine, "pq32-fp16/8"),
    "hnsw": (faiss.IndexHNSW, "hnsw32/64"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_approximate_index_names_known_faces_like_exact_search(kind: str) -> None:
    dim, n = 128, 20_000
    vectors, labels = synthetic_gallery(n, dim)
    queries = synthetic_probes(n, dim, count=512)
    known = len(queries) // 2
    exact = Matcher(vectors, labels, search=SearchConfig(index="flat"))
    approx = Matcher(vectors, labels, search=SearchConfig(index=kind))
    assert isinstance(approx.index, KINDS[kind][0])
    assert describe(approx.index) == KINDS[kind][1]
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


def test_pq_gives_exact_neighbours_and_their_similarities() -> None:
    dim, n = 64, 8_000
    vectors, labels = synthetic_gallery(n, dim)
    queries = synthetic_probes(n, dim, count=200)
    index = make_index(vectors, SearchConfig(index="pq", pq_m=16, pq_rerank=16))
    assert describe(index) == "pq16-fp16/16" and index.ntotal == n
    sims, ids = index.search(queries, 5)
    want_sims, want_ids = faiss.knn(queries, vectors, 5, metric=faiss.METRIC_INNER_PRODUCT)
    known = len(queries) // 2
    assert (ids[:known, 0] == want_ids[:known, 0]).mean() >= 0.99
    # re-ranked on float16 copies: the similarity of each vector found is its own
    own = np.einsum("qd,qkd->qk", queries, vectors[ids])
    assert np.abs(sims - own).max() < 1e-3


def test_pq_settings_survive_a_round_trip_through_a_file(tmp_path) -> None:
    vectors, labels = synthetic_gallery(2_000, 32)
    index = make_index(vectors, SearchConfig(index="pq", pq_rerank=3))
    path = tmp_path / "gallery.faiss"
    faiss.write_index(index, str(path))
    read = tune(faiss.read_index(str(path)), SearchConfig(pq_rerank=5))
    assert describe(read) == "pq32-fp16/5"  # FAISS does not keep the re-rank count
    q = synthetic_probes(2_000, 32, count=64)
    same = tune(index, SearchConfig(pq_rerank=5))
    assert np.array_equal(read.search(q, 5)[1], same.search(q, 5)[1])


def test_tiny_gallery_asked_for_pq_falls_back_to_exact() -> None:
    vectors, labels = synthetic_gallery(PQ_MIN_VECTORS - 1, 16)
    m = Matcher(vectors, labels, search=SearchConfig(index="pq"))
    assert isinstance(m.index, faiss.IndexFlatIP)


def test_building_reports_training_and_adding() -> None:
    vectors, _ = synthetic_gallery(3_000, 16)
    seen: list[tuple[str, int, int]] = []
    make_index(vectors, SearchConfig(index="ivf"), progress=lambda *a: seen.append(a))
    assert seen[0] == ("train", 0, 0) and seen[-1] == ("add", 3_000, 3_000)
    assert [s for s, _, _ in seen[1:]] == ["add"] * (len(seen) - 1)


@pytest.mark.parametrize("grouped", [True, False])
def test_person_means_are_each_persons_mean_direction(grouped: bool, monkeypatch) -> None:
    monkeypatch.setattr(search, "ADD_CHUNK", 64)  # people whose rows span chunks
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((1_000, 8)).astype(np.float32)
    people = rng.integers(0, 37, 1_000)  # rows of one person scattered, as names come
    if grouped:  # or person by person, as a gallery folder is read
        people.sort()
    want = np.stack([vectors[people == p].sum(axis=0) for p in range(37)])
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert np.allclose(person_means(vectors, people), want, atol=1e-5)


def test_people_index_finds_exact_neighbours_with_their_similarities() -> None:
    dim, n = 64, 12_000  # 1,200 people: their means found by a fast scan of codes
    vectors, labels = synthetic_gallery(n, dim)
    order = np.random.default_rng(0).permutation(n)  # one person's photos apart
    vectors, labels = vectors[order], [labels[i] for i in order]
    queries = synthetic_probes(n, dim, count=300)
    m = Matcher(vectors, labels, search=SearchConfig(index="people", nprobe=4))
    assert is_people(m.index) and describe(m.index) == "people1200-fp16/4"
    assert faiss.downcast_index(m.index.quantizer).__class__ is faiss.IndexPQFastScan
    sims, ids = m.index.search(queries, 5)
    want_sims, want_ids = faiss.knn(queries, vectors, 5, metric=faiss.METRIC_INNER_PRODUCT)
    known = len(queries) // 2
    assert (ids[:known, 0] == want_ids[:known, 0]).mean() >= 0.99
    assert np.abs(sims[:known] - want_sims[:known]).max() < 1e-3  # float16 cells
    exact = Matcher(vectors, labels, search=SearchConfig(index="flat"))
    assert np.array_equal(answers(m, queries)[:known], answers(exact, queries)[:known])


def test_people_index_with_few_people_and_through_a_file(tmp_path) -> None:
    vectors, labels = synthetic_gallery(3_000, 32)  # 300 people: exact search of means
    m = Matcher(vectors, labels, search=SearchConfig(index="people"))
    assert describe(m.index) == "people300-fp16/8"
    assert isinstance(faiss.downcast_index(m.index.quantizer), faiss.IndexFlatIP)
    path = tmp_path / "gallery.faiss"
    faiss.write_index(m.index, str(path))
    read = tune(faiss.read_index(str(path)), SearchConfig(nprobe=0))
    assert is_people(read) and read.nprobe == 8
    q = synthetic_probes(3_000, 32, count=64)
    assert np.array_equal(answers(Matcher(vectors, labels, index=read), q), answers(m, q))


def test_people_index_without_names_is_pq() -> None:
    vectors, _ = synthetic_gallery(2_000, 32)
    index = make_index(vectors, SearchConfig(index="people"))
    assert isinstance(index, faiss.IndexRefine) and describe(index) == "pq32-fp16/8"
