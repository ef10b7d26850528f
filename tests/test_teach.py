"""Teaching the classifier without images: naming a sighting (enrolment) and saying a
name was wrong (correction), from the vectors it still holds."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import Correction, Enrolment, GalleryReply, Sighting, ThresholdStats
from facewire.classifier.gallery import read_image
from facewire.classifier.keeper import GalleryKeeper
from facewire.config.schema import BrokerConfig, PipelineConfig
from facewire.models import FacePipeline
from facewire.models.files import list_photos
from tests.conftest import DATASET
from tests.gallery_rig import KNOWN, Rig, classifier_cfg

STRANGER = "ORL_s23"  # in dataset/unknown: nobody in the gallery


@pytest.fixture(scope="module")
def faces() -> dict[str, list[np.ndarray]]:
    """Every probe photo's vector of three known people and a stranger."""
    pipeline = FacePipeline(PipelineConfig())
    try:
        out: dict[str, list[np.ndarray]] = {}
        for person, folder in [(p, "probes") for p in KNOWN] + [(STRANGER, "unknown")]:
            for photo in list_photos(DATASET / folder / person):
                found = pipeline.get(read_image(photo))
                if found:
                    out.setdefault(person, []).append(found[0].embedding)
        out["model"] = pipeline.model_id  # type: ignore[assignment]
        return out
    finally:
        pipeline.close()


def ask(rig: Rig, faces: dict, person: str, i: int, seq: int) -> str:
    vectors = {"model": faces["model"], person: faces[person][i]}
    return rig.ask(person, vectors, seq).name


def reply_to(rig: Rig, request_id: str) -> GalleryReply:
    payload = rig.wait_for(
        topics.GALLERY_REPLIES, lambda r: r.request_id == request_id, GalleryReply
    )
    return GalleryReply.decode(payload)


def test_a_stranger_named_as_someone_is_unknown_after_one_correction(
    gallery_dir: Path, faces: dict
) -> None:
    broker = MemoryBroker()
    # a threshold so loose that anyone is named as someone: the worst case at a door
    cfg = classifier_cfg(gallery_dir, watch=False)
    cfg.search.threshold = -1.0
    rig = Rig(cfg, broker.transport("cls"), broker.transport("ops"))
    try:
        wrong = ask(rig, faces, STRANGER, 0, 1)
        assert wrong in KNOWN  # named, wrongly
        assert ask(rig, faces, STRANGER, 0, 2) == wrong  # and again
        correction = Correction("door", 2, wrong, request_id="c1")
        rig.listener.publish(topics.CORRECT, correction.encode(), qos=1)
        reply = reply_to(rig, "c1")
        assert reply.ok and reply.action == "correct" and wrong in reply.detail
        assert ask(rig, faces, STRANGER, 0, 3) == "unknown"
        # the same stranger on other photos is no longer named as that person either
        others = [ask(rig, faces, STRANGER, i, 10 + i) for i in range(1, len(faces[STRANGER]))]
        assert wrong not in others
        # while that person is still recognised
        mine = [ask(rig, faces, wrong, i, 50 + i) for i in range(len(faces[wrong]))]
        assert mine.count(wrong) >= len(mine) - 1
        # the calibration counts it as an impostor score
        stats = ThresholdStats.decode(rig.wait_for(
            topics.THRESHOLDS, lambda s: s.calibration is not None and s.calibration.corrections,
            ThresholdStats,
        ))  # fmt: skip
        assert stats.calibration is not None and stats.calibration.corrections == 1
    finally:
        rig.close()
    # and it is kept: a classifier started again still knows it
    again = GalleryKeeper(cfg)
    index = again.build().index
    assert index.matcher.corrections == 1
    vec = faces[STRANGER][0][None, :]
    assert not index.matcher.match(vec).known[0]
    again.close()


def test_an_unknown_at_the_door_is_named_from_its_sighting(gallery_dir: Path, faces: dict) -> None:
    broker = MemoryBroker()
    rig = Rig(
        classifier_cfg(gallery_dir, watch=False), broker.transport("cls"), broker.transport("ops")
    )
    try:
        assert ask(rig, faces, STRANGER, 0, 1) == "unknown"
        enrol = Enrolment(
            "Visitor",
            request_id="e1",
            sightings=(Sighting("door", 1), Sighting("door", 999), Sighting("door", 1)),
            source="sighting",
        )
        rig.listener.publish(topics.ENROLL, enrol.encode(), qos=1)
        reply = reply_to(rig, "e1")
        assert reply.ok and reply.action == "enroll" and reply.added == 1
        assert len(reply.refused) == 2
        assert any("no longer held" in r for r in reply.refused)
        assert any("near-duplicate" in r for r in reply.refused)
        assert reply.identities == len(KNOWN) + 1
        named = [ask(rig, faces, STRANGER, i, 10 + i) for i in range(1, len(faces[STRANGER]))]
        assert named.count("Visitor") >= len(named) // 2, named
        assert ask(rig, faces, KNOWN[0], 0, 100) == KNOWN[0]
    finally:
        rig.close()


def test_enrolment_refuses_vectors_of_another_model_and_a_bad_name(
    gallery_dir: Path, faces: dict
) -> None:
    broker = MemoryBroker()
    rig = Rig(
        classifier_cfg(gallery_dir, watch=False), broker.transport("cls"), broker.transport("ops")
    )
    try:
        vec = faces[STRANGER][0]
        other = Enrolment("Visitor", "e2", model="clip-vit-b32-00000000+lm", vectors=(vec,))
        rig.listener.publish(topics.ENROLL, other.encode(), qos=1)
        reply = reply_to(rig, "e2")
        assert not reply.ok and reply.added == 0 and "model" in reply.refused[0]
        bad = Enrolment("unknown", "e3", model=faces["model"], vectors=(vec,))
        rig.listener.publish(topics.ENROLL, bad.encode(), qos=1)
        assert not reply_to(rig, "e3").ok
        rig.listener.publish(
            topics.ENROLL, b'{"name": "x"}', qos=1
        )  # neither vectors nor sightings
        time.sleep(0.2)
        assert ask(rig, faces, KNOWN[1], 0, 1) == KNOWN[1]  # nothing else was disturbed
    finally:
        rig.close()


@pytest.mark.slow
def test_correction_over_the_broker(mosquitto, gallery_dir: Path, faces: dict) -> None:
    broker = BrokerConfig(url=mosquitto.url)
    cfg = classifier_cfg(gallery_dir, watch=False)
    cfg.search.threshold = -1.0
    rig = Rig(cfg, BusClient(broker, "classifier"), BusClient(broker, "ops"))
    try:
        wrong = ask(rig, faces, STRANGER, 0, 1)
        rig.listener.publish(topics.CORRECT, Correction("door", 1, wrong, "c").encode(), qos=1)
        assert reply_to(rig, "c").ok
        assert ask(rig, faces, STRANGER, 0, 2) == "unknown"
    finally:
        rig.close()


def test_opt_in_auto_enrolment_from_a_confident_sharp_track(gallery_dir: Path, faces: dict) -> None:
    broker = MemoryBroker()
    cfg = classifier_cfg(gallery_dir, watch=False)
    cfg.track.auto_enrol, cfg.track.auto_margin, cfg.track.gap_s = True, 0.05, 0.3
    rig = Rig(cfg, broker.transport("cls"), broker.transport("ops"))
    person = KNOWN[0]

    def track(first_seq: int, quality: tuple[float, float, float]) -> None:
        for i in range(3):  # one track: the same place, frames 0.1 s apart
            seq = first_seq + i
            msg = codec.EmbeddingMessage(
                "door", seq, seq, 0, (40, 40, 120, 120), faces["model"], 100.0 + seq * 0.1,
                {}, quality, faces[person][1],
            )  # fmt: skip
            rig.listener.publish(topics.embedding("door"), codec.encode(msg), qos=1)
        time.sleep(0.5)  # the track ends

    def auto_replies() -> list[GalleryReply]:
        return [
            GalleryReply.decode(m.payload)
            for m in list(rig.got)
            if m.topic == topics.GALLERY_REPLIES
            and GalleryReply.decode(m.payload).action == "enroll"
        ]

    try:
        track(1, (400.0, 20.0, 120.0))  # small and blurred: not a sample to learn from
        time.sleep(0.3)
        assert auto_replies() == []
        track(10, (20000.0, 500.0, 120.0))  # large and sharp, named far above the threshold
        deadline = time.monotonic() + 10
        while not auto_replies() and time.monotonic() < deadline:
            time.sleep(0.05)
        (reply,) = auto_replies()
        assert reply.ok and reply.added == 1
        assert rig.keeper.store.people()[person].get("auto") == 1
        track(20, (20000.0, 500.0, 120.0))  # the same view again: a near-duplicate
        deadline = time.monotonic() + 10
        while len(auto_replies()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert auto_replies()[-1].added == 0 and rig.keeper.store.people()[person]["auto"] == 1
    finally:
        rig.close()


def test_a_flood_of_bad_gallery_requests_is_answered_rate_limited_and_costs_no_good_one(
    gallery_dir: Path, faces: dict
) -> None:
    broker = MemoryBroker()
    rig = Rig(
        classifier_cfg(gallery_dir, watch=False), broker.transport("cls"), broker.transport("ops")
    )
    try:
        for _ in range(300):  # malformed enrolments and corrections
            rig.listener.publish(topics.ENROLL, b"{not json", qos=1)
            rig.listener.publish(topics.CORRECT, b'{"node": "door", "seq": -1}', qos=1)
        big = b'{"name": "x", "dim": 4, "model": "m", "vectors": ["' + b"A" * 100_000 + b'"]}'
        rig.listener.publish(topics.ENROLL, big, qos=1)
        assert broker.settle()
        time.sleep(0.3)
        refusals = [
            GalleryReply.decode(m.payload)
            for m in rig.got
            if m.topic == topics.GALLERY_REPLIES and not GalleryReply.decode(m.payload).ok
        ]
        assert 1 <= len(refusals) <= 6, len(refusals)  # once a second per kind and reason
        assert any("bad_json" in r.detail for r in refusals)
        # and a good request right after is still taken
        assert ask(rig, faces, STRANGER, 0, 1) == "unknown"
        enrol = Enrolment("Visitor", "ok-1", sightings=(Sighting("door", 1),), source="sighting")
        rig.listener.publish(topics.ENROLL, enrol.encode(), qos=1)
        assert reply_to(rig, "ok-1").added == 1
    finally:
        rig.close()
