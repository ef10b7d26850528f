"""The threshold from evidence: open-set calibration, corrections, and how the
classifier chooses (and says) the threshold it uses."""

from __future__ import annotations

import numpy as np

from facewire.bus import topics
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, ThresholdStats
from facewire.classifier.calibrate import calibrate, choose_threshold
from facewire.classifier.gallery import Gallery
from facewire.classifier.keeper import index_gallery
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService
from facewire.config.schema import ClassifierConfig, SearchConfig
from facewire.models.embedders import GENERIC_THRESHOLD


def people(n: int = 30, photos: int = 5, noise: float = 0.7, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, 64))
    vecs = np.repeat(centres, photos, axis=0) + noise * rng.normal(size=(n * photos, 64))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs.astype(np.float32), [f"p{i // photos}" for i in range(n * photos)]


def test_recommended_is_the_lowest_threshold_within_the_target_fpir() -> None:
    vecs, labels = people()
    for target in (0.01, 0.1):
        cal = calibrate(vecs, labels, target_fpir=target)
        assert cal is not None
        t = cal.recommended_threshold
        assert cal.fpir_at(t) <= target
        below = cal.thresholds[cal.thresholds < t - 1e-9]  # the grid point below
        assert len(below) and cal.fpir_at(float(below[-1])) > target
    # a looser target gives a lower threshold and fewer known people called unknown
    strict, loose = calibrate(vecs, labels, 0.01), calibrate(vecs, labels, 0.1)
    assert strict and loose and loose.recommended_threshold < strict.recommended_threshold
    assert loose.frr_at(loose.recommended_threshold) <= strict.frr_at(strict.recommended_threshold)


def test_strangers_are_rejected_at_the_calibrated_threshold() -> None:
    vecs, labels = people(seed=1)
    strangers, _ = people(n=200, photos=1, seed=2)
    chosen = choose_threshold(SearchConfig(), vecs, labels, GENERIC_THRESHOLD)
    assert chosen.source == "auto"
    best = (strangers @ vecs.T).max(axis=1)
    # look-alikes inside the gallery are the limit: real strangers do at least as well
    assert (best >= chosen.value).mean() <= 0.05


def test_a_correction_is_counted_as_impostor_evidence_and_raises_the_threshold() -> None:
    vecs, labels = people(seed=3)
    before = calibrate(vecs, labels, 0.01)
    assert before is not None
    # a stranger who scored 0.9 against someone was marked "not them", five times
    after = calibrate(vecs, labels, 0.01, corrections=[0.9] * 5)
    assert after is not None and after.corrections == 5
    assert len(after.non_mated) == len(before.non_mated) + 5
    assert after.recommended_threshold > before.recommended_threshold
    assert after.fpir_at(0.9) > 0


def test_choice_fixed_default_and_auto() -> None:
    vecs, labels = people()
    fixed = choose_threshold(SearchConfig(threshold=0.5), vecs, labels, 0.3)
    assert (fixed.value, fixed.source) == (0.5, "fixed") and fixed.calibration is not None
    tiny = choose_threshold(SearchConfig(), vecs[:3], labels[:3], 0.3)
    assert (tiny.value, tiny.source, tiny.calibration) == (0.3, "default", None)
    assert "too small" in tiny.note
    auto = choose_threshold(SearchConfig(), vecs, labels, 0.3)
    assert auto.source == "auto" and auto.calibration is not None
    assert auto.value == auto.calibration.recommended_threshold


def test_an_unresolved_auto_threshold_in_a_matcher_is_the_generic_default() -> None:
    vecs, labels = people(n=3)
    assert Matcher(vecs, labels).threshold == GENERIC_THRESHOLD


def test_the_classifier_says_which_threshold_it_uses_and_why() -> None:
    vecs, labels = people()
    gallery = Gallery(vecs, labels, [f"{i}.jpg" for i in range(len(labels))], "toy-0+lm")
    index = index_gallery(gallery, ClassifierConfig(), model_default=0.3)
    broker = MemoryBroker()
    service = ClassifierService(ClassifierConfig(), index, broker.transport("classifier"))
    service.start(timeout=1)
    try:
        assert broker.settle()
        status = ClassifierStatus.decode(broker.retained(topics.CLASSIFIER_STATUS) or b"")
        stats = ThresholdStats.decode(broker.retained(topics.THRESHOLDS) or b"")
    finally:
        service.stop()
    assert status.threshold_source == "auto" and status.threshold == index.matcher.threshold
    assert stats.source == "auto" and stats.note and "strangers" in stats.note
    cal = stats.calibration
    assert cal is not None and cal.recommended_threshold == stats.threshold
    assert cal.histograms is not None and sum(cal.histograms.genuine) == len(labels)
    assert all(c.fpir is not None for c in cal.curve)
