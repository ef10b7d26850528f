"""Vectors taught under one face crop are never mixed with another crop's (a mask or
alignment change gives the same weights another model id), and the classifier says
what it leaves out: people taught from a camera have no photo to be embedded again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from facewire.classifier.enrolled import EnrolmentStore
from facewire.classifier.gallery import Gallery
from facewire.classifier.keeper import with_enrolled

NEW = "sface-338578e8+lm-blur1.4"
OLD = "sface-338578e8+lm"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return v / np.linalg.norm(v)


def test_vectors_of_another_crop_stay_out_and_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EnrolmentStore(tmp_path / "gallery.sqlite3")
    store.enrol("ann", [unit(1), unit(2)], OLD, "camera")
    store.enrol("bob", [unit(3)], NEW, "camera")
    store.correct("ann", unit(4), OLD, "door", 7)
    store.enrol("cy", [unit(5)], "clip-vit-b32-00000000+lm", "camera")  # other weights
    assert store.models() == {OLD: 3, NEW: 1, "clip-vit-b32-00000000+lm": 1}
    photos = Gallery(np.stack([unit(6)]), ["dee"], ["dee/1.jpg"], NEW)

    with caplog.at_level(logging.WARNING, logger="facewire.classifier"):
        gallery = with_enrolled(photos, store)

    assert gallery.labels == ["dee", "bob"]  # ann's vectors were made with the old crop
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1
    assert "3 enrolled vectors or corrections" in warned[0] and OLD in warned[0]
    assert "clip-vit-b32" not in warned[0]  # other weights are another model, not a crop
    store.close()


def test_no_warning_when_every_vector_matches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = EnrolmentStore(tmp_path / "gallery.sqlite3")
    store.enrol("bob", [unit(3)], NEW, "camera")
    photos = Gallery(np.stack([unit(6)]), ["dee"], ["dee/1.jpg"], NEW)
    with caplog.at_level(logging.WARNING, logger="facewire.classifier"):
        assert with_enrolled(photos, store).labels == ["dee", "bob"]
    assert not caplog.records
    store.close()
