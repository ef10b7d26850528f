"""Gallery building, the embedding cache, k-NN voting and calibration."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facewire.classifier.calibrate import calibrate
from facewire.classifier.gallery import build_gallery
from facewire.classifier.search import UNKNOWN, Matcher
from facewire.config.schema import PipelineConfig
from facewire.models import FacePipeline
from tests.conftest import DATASET

GALLERY = DATASET / "gallery"


@pytest.fixture(scope="module")
def pipeline():
    p = FacePipeline(PipelineConfig())
    yield p
    p.close()


@pytest.fixture
def small_gallery(tmp_path):
    """Three people copied from the sample, plus junk files among them."""
    root = tmp_path / "gallery"
    for person in ("ORL_s01", "ORL_s02", "ORL_s03"):
        shutil.copytree(GALLERY / person, root / person)
    good = next((root / "ORL_s01" / "orl").glob("*.jpg"))
    (root / "ORL_s02" / "orl" / "corrupt.jpg").write_bytes(good.read_bytes()[:300])
    (root / "ORL_s03" / "orl" / "notes.txt").write_text("not an image")
    (root / "ORL_s03" / "orl" / "text-named.jpg").write_text("plain text in a .jpg")
    (root / "ORL_s03" / "orl" / "empty.png").write_bytes(b"")
    shutil.copy(DATASET / "samples" / "coffee.jpg", root / "ORL_s01" / "orl" / "coffee.jpg")
    return root


def test_bad_files_are_skipped_and_counted(pipeline, small_gallery):
    g = build_gallery(small_gallery, pipeline, progress=False)
    assert g.names == ["ORL_s01", "ORL_s02", "ORL_s03"]
    skipped = {p.rsplit("/", 1)[-1]: why for p, why in g.skipped.items()}
    assert skipped["corrupt.jpg"].startswith("unreadable")
    assert skipped["text-named.jpg"].startswith("unreadable")
    assert skipped["empty.png"].startswith("unreadable")
    assert skipped["notes.txt"] == "not an image file"
    assert skipped["coffee.jpg"] == "no face found"
    # every good photo is still there: 18 photos minus the ones Haar misses
    assert 14 <= len(g.labels) <= 18
    assert g.vectors.shape == (len(g.labels), pipeline.embedder.dim)
    np.testing.assert_allclose(np.linalg.norm(g.vectors, axis=1), 1.0, atol=1e-5)
    assert sum(g.skip_counts().values()) == len(g.skipped)


def test_cache_reuses_vectors_and_notices_changes(pipeline, small_gallery, tmp_path):
    cache = tmp_path / "cache.npz"
    first = build_gallery(small_gallery, pipeline, cache_path=cache, progress=False)
    assert cache.exists()
    second = build_gallery(small_gallery, pipeline, cache_path=cache, progress=False)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert first.version == second.version
    assert second.skipped == first.skipped
    # a removed photo changes the gallery (and its version)
    victim = next((small_gallery / "ORL_s02" / "orl").glob("ORL_*.jpg"))
    victim.unlink()
    third = build_gallery(small_gallery, pipeline, cache_path=cache, progress=False)
    assert len(third.labels) == len(first.labels) - 1
    assert third.version != first.version


def test_cache_of_another_pipeline_is_not_used(small_gallery, tmp_path):
    cache = tmp_path / "cache.npz"
    a = FacePipeline(PipelineConfig())
    b = FacePipeline(PipelineConfig(mesh=False))
    try:
        ga = build_gallery(small_gallery, a, cache_path=cache, progress=False)
        gb = build_gallery(small_gallery, b, cache_path=cache, progress=False)
    finally:
        a.close()
        b.close()
    assert not np.array_equal(ga.vectors, gb.vectors)


def test_matcher_votes_and_rejects_below_threshold():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 32)).astype(np.float32)
    vecs = np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(12, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = [n for n in ("ann", "bob", "cy") for _ in range(4)]
    m = Matcher(vecs, labels, k=5, threshold=0.5)
    q = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    stranger = rng.normal(size=(1, 32)).astype(np.float32)
    stranger /= np.linalg.norm(stranger)
    got = m.search(np.vstack([q, stranger]))
    assert [g.name for g in got[:3]] == ["ann", "bob", "cy"]
    assert got[3].name == UNKNOWN and got[3].score < 0.5
    assert len(got[0].neighbours) == 5
    assert got[0].neighbours[0][0] == "ann"


@pytest.mark.slow  # embeds the whole sample gallery
def test_calibration_on_the_sample_gallery(pipeline):
    g = build_gallery(GALLERY, pipeline, progress=False)
    cal = calibrate(g.vectors, g.labels, target_fpir=0.01)
    assert cal is not None
    # genuine pairs score higher than impostor pairs on real faces, and the best
    # non-mated score of a person (a look-alike) higher than a random impostor pair
    assert np.median(cal.genuine) > np.median(cal.impostor) + 0.2
    assert np.median(cal.non_mated) > np.median(cal.impostor)
    assert cal.eer < 0.1
    i = int(np.searchsorted(cal.thresholds, cal.recommended_threshold))
    assert cal.fpir[i] <= 0.01 and cal.fpir_at(cal.recommended_threshold) <= 0.01
    assert i == 0 or cal.fpir[i - 1] > 0.01  # the lowest such threshold
    # FAR and FPIR only fall and FRR only rises as the threshold tightens
    assert np.all(np.diff(cal.far) <= 0) and np.all(np.diff(cal.frr) >= 0)
    assert np.all(np.diff(cal.fpir) <= 0)
    # on these faces the calibrated threshold is stricter than SFace's generic one
    assert cal.recommended_threshold > 0.363
