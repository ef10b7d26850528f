"""One way to list photos (``facewire.models.files``), for the edge's folder source, the
gallery, ``facewire eval`` and the model tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from facewire.classifier.gallery import iter_people
from facewire.edge.sources import open_source
from facewire.evaluation.evaluate import probe_files
from facewire.models.files import IMAGE_SUFFIXES, list_files, list_photos, spread_photos
from tests.conftest import DATASET

PHOTO = DATASET / "probes" / "ORL_s01" / "ORL_s01_0007.jpg"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A folder with photos, other files, hidden things and links in and out."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".hidden").mkdir()
    outside.mkdir()
    for rel in ("a/2.jpg", "a/10.PNG", "b/1.jpeg", "b/deep/3.webp", ".hidden/4.jpg"):
        shutil.copy(PHOTO, root / rel)
    (root / "a" / "notes.txt").write_text("not a photo")
    (root / "a" / "._2.jpg").write_bytes(b"macOS metadata, not a photo")
    shutil.copy(PHOTO, outside / "elsewhere.jpg")
    os.symlink(outside / "elsewhere.jpg", root / "a" / "out.jpg")  # leads out: left out
    os.symlink(outside, root / "linked-dir")  # a folder link: not entered
    os.symlink(root / "a", root / "b" / "loop")  # a loop: not entered
    os.symlink(root / ".hidden" / "4.jpg", root / "b" / "in.jpg")  # leads inside: kept
    return root


def names(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_list_files_sorted_without_hidden_files_or_links_out(tree: Path) -> None:
    assert names(list_files(tree), tree) == [
        "a/10.PNG",
        "a/2.jpg",
        "a/notes.txt",
        "b/1.jpeg",
        "b/deep/3.webp",
        "b/in.jpg",
    ]


def test_list_photos_keeps_photo_suffixes_of_any_case(tree: Path) -> None:
    assert names(list_photos(tree), tree) == [
        "a/10.PNG",
        "a/2.jpg",
        "b/1.jpeg",
        "b/deep/3.webp",
        "b/in.jpg",
    ]
    assert {".jpg", ".jpeg", ".png", ".pgm", ".webp"} <= IMAGE_SUFFIXES
    assert list_photos(tree / "missing") == []


def test_spread_photos_takes_one_person_at_a_time(tree: Path) -> None:
    assert names(spread_photos(tree), tree) == [
        "a/10.PNG",
        "b/1.jpeg",
        "a/2.jpg",
        "b/deep/3.webp",
        "b/in.jpg",
    ]
    people = spread_photos(DATASET / "gallery")[:5]
    assert len({p.relative_to(DATASET / "gallery").parts[0] for p in people}) == 5


def test_edge_folder_source_replays_the_listed_photos(tree: Path) -> None:
    labels = [f.label for f in open_source(str(tree), fps=0)]
    assert labels == names(list_photos(tree), tree)


def test_a_looping_folder_source_of_unreadable_files_stops(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(FileNotFoundError, match="no readable images"):
        next(open_source(str(tmp_path), fps=0, loop=True))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        next(open_source(str(tmp_path / "empty"), fps=0))


def test_gallery_lists_every_file_and_eval_only_photos(tree: Path, tmp_path: Path) -> None:
    # the gallery folder may itself be a link (kept elsewhere), and a <person> folder a
    # link that stays inside it
    linked = tmp_path / "gallery"
    os.symlink(tree, linked)
    os.symlink(tree / "a", tree / "ann")
    os.symlink(tree / "b", tree / "bob")
    everything = [(p, f.name) for p, f in iter_people(linked) if p in ("ann", "bob")]
    assert everything == [
        ("ann", "10.PNG"),
        ("ann", "2.jpg"),
        ("ann", "notes.txt"),  # the gallery reports it as skipped
        ("bob", "1.jpeg"),
        ("bob", "3.webp"),  # in.jpg leads out of bob's folder (into the hidden one)
    ]
    # "linked-dir" leads out of the gallery: whoever is there is not enrolled as it
    assert {p for p, _ in iter_people(linked)} == {"a", "ann", "b", "bob"}
    people = tmp_path / "people"
    people.mkdir()
    os.symlink(tree / "a", people / "ann")
    assert list(iter_people(people)) == []
    assert [(p, f.name) for p, f in probe_files(linked) if p in ("ann", "bob")] == [
        (p, n) for p, n in everything if n != "notes.txt"
    ]
    assert [(p, f.name) for p, f in iter_people(linked, subdir="deep")] == [
        ("b", "3.webp"),
        ("bob", "3.webp"),
    ]
