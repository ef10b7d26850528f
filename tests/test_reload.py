"""The gallery that changes while the classifier runs: photos added and removed are
picked up without a restart, results say which gallery answered them, and an
unchanged gallery comes back from the cache without loading a model."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, GalleryReload, GalleryReply, Result
from facewire.classifier.gallery import LazyPipeline, build_gallery, read_image
from facewire.classifier.keeper import GalleryKeeper
from facewire.config.schema import BrokerConfig, PipelineConfig
from facewire.models import FacePipeline
from facewire.models.files import list_photos
from tests.conftest import DATASET
from tests.gallery_rig import KNOWN, NEWCOMER, Rig, classifier_cfg


@pytest.fixture(scope="module")
def probe_vectors() -> dict[str, np.ndarray]:
    """One embedded probe photo per person, as an edge would send it."""
    pipeline = FacePipeline(PipelineConfig())
    try:
        out = {}
        for person in [*KNOWN, NEWCOMER]:
            faces = pipeline.get(read_image(list_photos(DATASET / "probes" / person)[0]))
            out[person] = faces[0].embedding
        out["model"] = pipeline.model_id  # type: ignore[assignment]
        return out
    finally:
        pipeline.close()


@pytest.fixture
def memory_rig(gallery_dir: Path) -> Iterator[Rig]:
    broker = MemoryBroker()
    rig = Rig(classifier_cfg(gallery_dir), broker.transport("cls"), broker.transport("ops"))
    yield rig
    rig.close()


def test_a_new_person_is_named_once_their_photos_are_copied_in(
    memory_rig: Rig, gallery_dir: Path, probe_vectors: dict
) -> None:
    rig = memory_rig
    before = rig.ask(NEWCOMER, probe_vectors, 1)
    assert before.name != NEWCOMER
    assert rig.ask("ORL_s01", probe_vectors, 2).name == "ORL_s01"
    first_version = before.gallery
    shutil.copytree(DATASET / "gallery" / NEWCOMER, gallery_dir / NEWCOMER)
    added = len(list_photos(gallery_dir / NEWCOMER))
    # the watcher may see the copy half done (a file still empty is skipped, then taken
    # when complete): what counts is that every photo is added, in one reply or more
    deadline = time.monotonic() + 30
    while True:
        replies = [
            GalleryReply.decode(m.payload)
            for m in list(rig.got)
            if m.topic == topics.GALLERY_REPLIES and m.payload
        ]
        replies = [r for r in replies if r.ok and r.added]
        if sum(r.added for r in replies) >= added or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    reply = replies[-1]
    assert sum(r.added for r in replies) == added
    assert reply.removed == 0 and reply.request_id is None
    assert reply.identities == len(KNOWN) + 1 and reply.version != first_version
    after = rig.ask(NEWCOMER, probe_vectors, 3)
    assert after.name == NEWCOMER and after.gallery == reply.version
    status = ClassifierStatus.decode(
        rig.wait_for(
            topics.CLASSIFIER_STATUS,
            lambda s: s.gallery is not None and s.gallery.version == reply.version,
            ClassifierStatus,
        )
    )
    assert status.gallery is not None and status.gallery.identities == len(KNOWN) + 1
    # and removed again: the newcomer is a stranger once more
    shutil.rmtree(gallery_dir / NEWCOMER)
    rig.wait_for(topics.GALLERY_REPLIES, lambda r: r.ok and r.removed == added, GalleryReply)
    assert rig.ask(NEWCOMER, probe_vectors, 4).name != NEWCOMER


def test_an_emptied_gallery_keeps_the_one_in_use(
    memory_rig: Rig, gallery_dir: Path, probe_vectors: dict
) -> None:
    rig = memory_rig
    for person in KNOWN:
        shutil.rmtree(gallery_dir / person)
    reply = GalleryReply.decode(
        rig.wait_for(topics.GALLERY_REPLIES, lambda r: not r.ok, GalleryReply)
    )
    assert "no usable face" in reply.detail
    assert rig.ask("ORL_s02", probe_vectors, 1).name == "ORL_s02"  # still answered


def test_an_unchanged_gallery_comes_from_the_cache_without_a_model(gallery_dir: Path) -> None:
    cfg = classifier_cfg(gallery_dir)
    first = GalleryKeeper(cfg)
    first.build()
    assert first.pipeline.loaded  # the first time, photos were embedded
    first.close()
    again = GalleryKeeper(cfg)
    change = again.build()
    assert not again.pipeline.loaded and change.index.vectors > 0
    # settings that do not change a vector do not invalidate the cache either
    cfg.pipeline.threads, cfg.pipeline.ort_spinning = 1, "off"
    other = GalleryKeeper(cfg)
    other.build()
    assert not other.pipeline.loaded
    # one that does, does
    cfg.pipeline.detector.detect_width = 256
    lazy = LazyPipeline(cfg.pipeline)
    build_gallery(gallery_dir, lazy, cache_path=again.cache, progress=False)
    assert lazy.loaded
    lazy.close()


def test_a_gallery_too_small_to_calibrate_takes_the_models_default_for_its_crop(
    tmp_path: Path,
) -> None:
    root = tmp_path / "one-person"
    shutil.copytree(DATASET / "gallery" / KNOWN[0], root / KNOWN[0])
    cfg = classifier_cfg(root)
    first = GalleryKeeper(cfg)
    index = first.build().index
    first.close()
    # SFace on the default crop: the threshold measured for it, not OpenCV's 0.363
    assert (index.threshold_source, index.matcher.threshold) == ("default", 0.40)
    # the same from the cache, with no model loaded to ask
    again = GalleryKeeper(cfg)
    cached = again.build().index
    assert not again.pipeline.loaded
    assert (cached.threshold_source, cached.matcher.threshold) == ("default", 0.40)
    again.close()
    # a crop nobody measured keeps SFace's own
    cfg.pipeline.mask_fill, cfg.pipeline.mask_scale = "black", 1.0
    other = GalleryKeeper(cfg)
    assert other.build().index.matcher.threshold == 0.363
    other.close()


@pytest.mark.slow
def test_reload_on_request_over_the_broker_while_answering(
    mosquitto, gallery_dir: Path, probe_vectors: dict
) -> None:
    broker = BrokerConfig(url=mosquitto.url)
    cfg = classifier_cfg(gallery_dir, watch=False)
    rig = Rig(cfg, BusClient(broker, "classifier"), BusClient(broker, "ops"))
    try:
        shutil.copytree(DATASET / "gallery" / NEWCOMER, gallery_dir / NEWCOMER)
        # watch is off: nothing happens until asked
        assert rig.ask(NEWCOMER, probe_vectors, 1).name != NEWCOMER
        request = GalleryReload(request_id="ops-1").encode()
        rig.listener.publish(topics.RELOAD, request, qos=1)
        seqs = range(2, 40)
        for seq in seqs:  # answered throughout the rebuild
            rig.ask("ORL_s03", probe_vectors, seq)
        reply = GalleryReply.decode(
            rig.wait_for(topics.GALLERY_REPLIES, lambda r: r.request_id == "ops-1", GalleryReply)
        )
        assert reply.ok and reply.added and reply.identities == len(KNOWN) + 1
        assert rig.ask(NEWCOMER, probe_vectors, 100).name == NEWCOMER
        answered = {
            Result.decode(m.payload).seq for m in rig.got if m.topic == topics.result("door")
        }
        assert set(seqs) <= answered
    finally:
        rig.close()
