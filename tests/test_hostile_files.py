"""Gallery folders and photo folders as someone careless or hostile leaves them: links
out of the gallery, and photos that would decode into gigabytes."""

from __future__ import annotations

import resource
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.classifier.gallery import build_gallery, iter_people
from facewire.config.schema import PipelineConfig
from facewire.edge.sources import open_source
from facewire.models import FacePipeline
from facewire.models.files import image_size, read_photo
from tests.conftest import DATASET

GALLERY = DATASET / "gallery"


def huge_jpeg(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A small real JPEG whose header says ``width``×``height``: what a decoder would
    allocate for it is what counts (20000² × 3 bytes = 1.2 GB)."""
    ok, data = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    assert ok
    raw = bytearray(data.tobytes())
    i = 2
    while raw[i + 1] != 0xC0:  # walk the markers to the baseline frame header
        i += 2 + struct.unpack(">H", raw[i + 2 : i + 4])[0]
    raw[i + 5 : i + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(raw))
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def test_the_size_is_read_from_the_header(tmp_path):
    for ext in (".jpg", ".png", ".bmp", ".webp", ".ppm"):
        ok, data = cv2.imencode(ext, np.zeros((37, 53, 3), np.uint8))
        assert ok and image_size(data.tobytes()) == (53, 37), ext
    assert image_size(huge_jpeg(tmp_path / "h.jpg").read_bytes()) == (20000, 20000)


def test_an_enormous_photo_is_refused_before_it_is_decoded(tmp_path):
    path = huge_jpeg(tmp_path / "huge.jpg")
    assert path.stat().st_size < 10_000
    before = peak_rss_mb()
    with pytest.raises(ValueError, match=r"too large: 20000×20000 pixels > 50 megapixels"):
        read_photo(path)
    assert peak_rss_mb() - before < 100  # not the 1.2 GB the decoder would have taken


def test_the_gallery_skips_an_enormous_photo_and_keeps_the_rest(tmp_path):
    root = tmp_path / "gallery"
    shutil.copytree(GALLERY / "ORL_s01", root / "ORL_s01")
    huge_jpeg(root / "ORL_s01" / "huge.jpg")
    pipeline = FacePipeline(PipelineConfig())
    try:
        g = build_gallery(root, pipeline, progress=False)
    finally:
        pipeline.close()
    (reason,) = [why for p, why in g.skipped.items() if p.endswith("huge.jpg")]
    assert "too large" in reason
    assert g.labels.count("ORL_s01") >= 5  # its six real photos, less a missed face at most


def test_the_edge_skips_an_enormous_photo_in_a_folder(tmp_path, caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(next((GALLERY / "ORL_s01").rglob("*.jpg")), folder / "a.jpg")
    huge_jpeg(folder / "b.jpg")
    shutil.copy(next((GALLERY / "ORL_s02").rglob("*.jpg")), folder / "c.jpg")
    frames = list(open_source(str(folder), fps=0))
    assert [f.label for f in frames] == ["a.jpg", "c.jpg"]
    assert "skipping" in caplog.text and "too large" in caplog.text


def test_a_person_folder_linked_out_of_the_gallery_is_not_followed(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(GALLERY / "ORL_s02", elsewhere / "photos")
    root = tmp_path / "gallery"
    shutil.copytree(GALLERY / "ORL_s01", root / "ORL_s01")
    (root / "intruder").symlink_to(elsewhere / "photos", target_is_directory=True)
    # a link that stays inside the gallery is followed
    (root / "alias").symlink_to(root / "ORL_s01", target_is_directory=True)
    people = {person for person, _ in iter_people(root)}
    assert people == {"ORL_s01", "alias"}
    assert "not following" in caplog.text and "intruder" in caplog.text


def test_a_photo_linked_out_of_its_persons_folder_is_not_followed(tmp_path):
    root = tmp_path / "gallery"
    shutil.copytree(GALLERY / "ORL_s01", root / "ORL_s01")
    shutil.copytree(GALLERY / "ORL_s02", root / "ORL_s02")
    other = next((root / "ORL_s02").rglob("*.jpg"))
    (root / "ORL_s01" / "not-me.jpg").symlink_to(other)
    files = [f.name for person, f in iter_people(root) if person == "ORL_s01"]
    assert "not-me.jpg" not in files and len(files) == 6
