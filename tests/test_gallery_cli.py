"""``facewire gallery list | add | remove | forget`` on a copy of a few sample people:
photos in, photos out, and every trace of a person gone on ``forget`` (the folder,
the embedding cache entries, the enrolment store rows with an audit line, the
monitor's log rows)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.messages import GalleryReload, GalleryReply
from facewire.bus.transport import Message
from facewire.classifier import gallery_cli
from facewire.classifier.enrolled import EnrolmentStore
from facewire.classifier.gallery import EmbeddingCache, LazyPipeline, _pipeline_key, build_gallery
from facewire.config.schema import BrokerConfig, PipelineConfig
from facewire.models.files import list_photos
from facewire.monitor.store import Store
from tests.conftest import DATASET

PEOPLE = ("ORL_s01", "ORL_s02", "ORL_s03")
MODEL = "sface-test+lm"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "gallery"
    for person in PEOPLE:
        shutil.copytree(DATASET / "gallery" / person, root / person)
    return root


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = gallery_cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cache_of(root: Path) -> Path:
    return root / ".facewire-cache" / "sface.npz"


@pytest.fixture
def built(root: Path) -> Path:
    """The gallery embedded once, as the classifier does: its cache is written."""
    pipeline = LazyPipeline(PipelineConfig())
    try:
        gallery = build_gallery(root, pipeline, cache_of(root), progress=False)
    finally:
        pipeline.close()
    assert len(gallery.labels) == 18
    return root


def enrol_some(root: Path) -> EnrolmentStore:
    store = EnrolmentStore(root / ".facewire-cache" / "gallery.sqlite3")
    vec = np.ones(4, np.float32) / 2
    store.enrol("ORL_s01", [vec, vec], MODEL, source="camera")
    store.enrol("ORL_s01", [vec], MODEL, source="sighting", sightings=[("door", 7)])
    store.enrol("walker", [vec, vec, vec], MODEL, source="camera")  # no photos at all
    store.correct("ORL_s01", vec, MODEL, "door", 9)
    store.correct("ORL_s02", vec, MODEL, "door", 10)
    return store


def monitor_log(path: Path, names: list[str | tuple[str, str]]) -> None:
    """Rows of these names; a (name, track's decision) pair sets both."""
    store = Store(path)
    for seq, entry in enumerate(names):
        name, track_name = entry if isinstance(entry, tuple) else (entry, None)
        result = {"node": "door", "seq": seq, "name": name, "score": 0.7, "threshold": 0.4,
                  "model": MODEL, "neighbours": [{"name": name, "score": 0.7}],
                  "track_name": track_name}  # fmt: skip
        store.add(result, node="door", received_at=1000.0 + seq)
    store.close()


def cache_stamps(root: Path, path: Path | None = None) -> list[str]:
    cache = EmbeddingCache(path or cache_of(root), _pipeline_key(LazyPipeline(PipelineConfig())))
    return list(cache.entries)


def test_list_shows_photos_enrolments_and_corrections(root: Path, capsys) -> None:
    code, out, _ = run(capsys, "list", "--dataset", str(root))
    assert code == 0 and "3 people, 18 photos, 0 enrolled vectors" in out
    assert not (root / ".facewire-cache").exists()  # listing creates nothing
    enrol_some(root).close()
    code, out, _ = run(capsys, "list", "--dataset", str(root))
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert lines["ORL_s01"][:4] == ["ORL_s01", "6", "3", "1"]
    assert "camera 2, sighting 1" in out
    assert lines["walker"][:4] == ["walker", "0", "3", "0"]
    code, out, _ = run(capsys, "list", "--json", "--dataset", str(root))
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ORL_s01"] == {
        "name": "ORL_s01",
        "photos": 6,
        "enrolled": {"camera": 2, "sighting": 1},
        "corrections": 1,
    }
    assert rows["ORL_s02"]["corrections"] == 1 and rows["ORL_s03"]["enrolled"] == {}
    # --cache-dir: the store is looked for there
    code, out, _ = run(capsys, "list", "--json", "--dataset", str(root), "--cache-dir", "nowhere")
    assert all(r["enrolled"] == {} for r in json.loads(out))


def test_add_copies_photos_and_never_overwrites(root: Path, tmp_path: Path, capsys) -> None:
    probes = list_photos(DATASET / "probes" / "ORL_s04")
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not a JPEG at all")
    args = ["--dataset", str(root)]
    code, out, err = run(capsys, "add", "newbie", str(probes[0]), str(probes[1]), str(text),
                         str(fake), str(tmp_path / "gone.jpg"), *args)  # fmt: skip
    assert code == 1  # something was refused
    assert f"refused {text}: not a photo (.txt)" in err
    assert f"refused {fake}: does not decode" in err
    assert "gone.jpg: no such file" in err
    assert sorted(p.name for p in (root / "newbie").iterdir()) == sorted(p.name for p in probes[:2])
    assert "newbie: 2 photos added, 2 in all" in out
    # the same bytes again are not copied; another photo of the same name gets -2
    other = tmp_path / probes[0].name
    shutil.copyfile(probes[2], other)
    code, out, err = run(capsys, "add", "newbie", str(probes[0]), str(other), *args)
    assert code == 0 and "already there" in out
    copied = root / "newbie" / f"{probes[0].stem}-2{probes[0].suffix}"
    assert copied.read_bytes() == probes[2].read_bytes()
    assert (root / "newbie" / probes[0].name).read_bytes() == probes[0].read_bytes()
    assert not [p for p in (root / "newbie").iterdir() if p.name.startswith(".")]
    code, out, _ = run(capsys, "list", "--json", *args)
    assert {r["name"]: r["photos"] for r in json.loads(out)}["newbie"] == 3
    # only refused files: nothing made
    code, _, _ = run(capsys, "add", "nobody-else", str(text), *args)
    assert code == 1 and not (root / "nobody-else").exists()


def test_remove_needs_yes_and_keeps_the_enrolments(root: Path, capsys) -> None:
    enrol_some(root).close()
    args = ["--dataset", str(root)]
    code, _, err = run(capsys, "remove", "ORL_s01", *args)
    assert code == 2 and "add --yes" in err and (root / "ORL_s01").is_dir()
    code, out, _ = run(capsys, "remove", "ORL_s01", "--yes", *args)
    assert code == 0 and "deleted ORL_s01/ with 6 files; enrolled vectors kept" in out
    assert not (root / "ORL_s01").exists()
    code, out, _ = run(capsys, "list", "--json", *args)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ORL_s01"]["photos"] == 0 and rows["ORL_s01"]["enrolled"]["camera"] == 2
    code, _, err = run(capsys, "remove", "ORL_s01", "--yes", *args)
    assert code == 1 and "has no folder" in err


def test_remove_of_a_linked_folder_removes_the_link_alone(
    root: Path, tmp_path: Path, capsys
) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(DATASET / "gallery" / "ORL_s04", elsewhere)
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    code, _, _ = run(capsys, "remove", "linked", "--yes", "--dataset", str(root))
    assert code == 0 and not (root / "linked").exists()
    assert len(list_photos(elsewhere)) == 6


def test_forget_deletes_every_trace(built: Path, tmp_path: Path, capsys) -> None:
    root = built
    enrol_some(root).close()
    db = tmp_path / "var" / "monitor.sqlite3"
    # the last: a frame called unknown of a track decided as ORL_s01
    monitor_log(db, ["ORL_s01", "ORL_s02", "ORL_s01", "unknown", ("unknown", "ORL_s01")])
    second_cache = root / ".facewire-cache" / "clip-vit-b32.npz"  # another model's
    shutil.copyfile(cache_of(root), second_cache)
    before = cache_stamps(root)
    assert len(before) == 18
    args = ["--dataset", str(root), "--monitor-db", str(db)]

    code, _, err = run(capsys, "forget", "ORL_s01", *args)  # no --yes: what would go
    assert code == 2 and "add --yes" in err
    assert "would delete: the folder ORL_s01/ with 6 files; 12 embedding cache entries" in err
    assert "3 enrolled vectors, 1 corrections; 3 monitor log rows" in err
    assert (root / "ORL_s01").is_dir() and cache_stamps(root) == before

    code, out, _ = run(capsys, "forget", "ORL_s01", "--yes", *args)
    assert code == 0
    assert "deleted: the folder ORL_s01/ with 6 files; 12 embedding cache entries" in out
    assert "3 enrolled vectors, 1 corrections; 3 monitor log rows" in out
    assert not (root / "ORL_s01").exists()
    for cache in (cache_of(root), second_cache):
        left = cache_stamps(root, cache)
        assert len(left) == 12 and not [s for s in left if "ORL_s01" in s]
        assert set(left) == {s for s in before if "ORL_s01" not in s}
    store = EnrolmentStore(root / ".facewire-cache" / "gallery.sqlite3")
    try:
        assert "ORL_s01" not in store.people() and store.people()["walker"] == {"camera": 3}
        assert store.people()["ORL_s02"] == {"corrections": 1}
        last = store.audit()[-1]
        assert last["action"] == "forget" and last["person"] == "ORL_s01"
        assert last["detail"] == {
            "folder": True,
            "folder_link": False,
            "files": 6,
            "cache_entries": 12,
            "monitor_rows": 3,
            "enrolled": 3,
            "corrections": 1,
        }
    finally:
        store.close()
    log = Store(db)
    try:
        assert log.count() == 2
        assert [r["name"] for r in log.window()] == ["ORL_s02", "unknown"]
    finally:
        log.close()
    # the rewritten cache is the classifier's again: the rest comes from it, embedding nothing
    pipeline = LazyPipeline(PipelineConfig())
    gallery = build_gallery(root, pipeline, cache_of(root), progress=False)
    assert not pipeline.loaded and sorted(set(gallery.labels)) == ["ORL_s02", "ORL_s03"]


def test_forget_after_remove_still_finds_the_cache_entries(built: Path, capsys) -> None:
    args = ["--dataset", str(built)]
    assert run(capsys, "remove", "ORL_s02", "--yes", *args)[0] == 0
    code, out, _ = run(capsys, "forget", "ORL_s02", "--yes", *args)
    assert code == 0 and "deleted: 6 embedding cache entries; 0 enrolled vectors" in out
    assert len(cache_stamps(built)) == 12
    # nothing left: forgetting again deletes nothing, and says so in the audit too
    code, out, _ = run(capsys, "forget", "ORL_s02", "--yes", *args)
    assert code == 0 and "deleted: 0 embedding cache entries; 0 enrolled vectors" in out
    store = EnrolmentStore(built / ".facewire-cache" / "gallery.sqlite3")
    assert [a["action"] for a in store.audit()] == ["forget", "forget"]
    store.close()


def test_a_missing_monitor_db_stops_forget_before_anything_is_deleted(
    root: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = run(capsys, "forget", "ORL_s01", "--yes", "--dataset", str(root),
                       "--monitor-db", str(tmp_path / "none.sqlite3"))  # fmt: skip
    assert code == 2 and "no monitor database" in err
    assert (root / "ORL_s01").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "../outside", "x.jpg"], "'../outside' contains '/'"),
        (["add", "..", "x.jpg"], "'..' starts with '.'"),
        (["remove", ".facewire-cache", "--yes"], "starts with '.'"),
        (["forget", "unknown", "--yes"], "what the classifier says for nobody"),
        (["forget", "a\x1bb", "--yes"], "control character"),
    ],
)
def test_names_that_are_no_plain_folder_name_are_refused(
    root: Path, capsys, argv: list[str], message: str
) -> None:
    before = sorted(p.name for p in root.parent.iterdir())
    code, _, err = run(capsys, *argv, "--dataset", str(root))
    assert code == 2 and message in err and "NAME:" in err
    assert sorted(p.name for p in root.parent.iterdir()) == before
    assert sorted(p.name for p in root.iterdir()) == sorted(PEOPLE)


def test_add_with_broker_asks_the_classifier_to_reload(root: Path, mosquitto, capsys) -> None:
    """Over a real broker, with a stand-in classifier that answers reloads."""
    classifier = BusClient(BrokerConfig(url=mosquitto.url), "fake-classifier")
    asked = threading.Event()

    def on_reload(m: Message) -> None:
        request = GalleryReload.decode(m.payload)
        asked.set()
        reply = GalleryReply("reload", True, "6 vectors added, 0 removed", request.request_id,
                             version="v2", identities=4, vectors=24)  # fmt: skip
        classifier.publish(topics.GALLERY_REPLIES, reply.encode(), qos=1)

    classifier.subscribe(topics.RELOAD, on_reload)
    classifier.connect()
    try:
        photo = list_photos(DATASET / "probes" / "ORL_s04")[0]
        code, out, _ = run(capsys, "add", "newbie", str(photo), "--dataset", str(root),
                           "--broker", mosquitto.url)  # fmt: skip
        assert code == 0 and asked.is_set()
        assert "reload: 6 vectors added, 0 removed; gallery v2: 4 people, 24 vectors" in out
    finally:
        classifier.close()
    code, _, err = run(capsys, "remove", "newbie", "--yes", "--dataset", str(root),
                       "--broker", mosquitto.url, "--wait", "0.3")  # fmt: skip
    assert code == 1 and "no classifier answered the reload within 0.3 s" in err
    assert not (root / "newbie").exists()
