"""Edge pieces: frame sources and dedup, on real photos."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest

from facewire import config
from facewire.bench.frames import compose_frame
from facewire.bus import topics
from facewire.bus.codec import decode
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, EdgeStatus, Result, TrackEvent
from facewire.config.schema import EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.dedup import Dedup
from facewire.edge.named import MIN_IOU
from facewire.edge.sources import open_source
from facewire.models.face import box_iou
from tests.conftest import DATASET

PROBES = DATASET / "probes"


def test_folder_source_replays_in_order_and_skips_bad_files(tmp_path):
    for f in sorted((PROBES / "ORL_s01").glob("*.jpg"))[:3]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    frames = list(open_source(str(tmp_path), fps=0))
    assert [f.label for f in frames] == sorted(p.name for p in (PROBES / "ORL_s01").glob("*.jpg"))[
        :3
    ]
    assert [f.frame_id for f in frames] == [0, 1, 2]
    assert all(f.image.shape[2] == 3 and f.capture_ms >= 0 for f in frames)


def test_folder_source_loops_and_paces(tmp_path):
    shutil.copy(PROBES / "ORL_s01" / "ORL_s01_0007.jpg", tmp_path)
    source = open_source(str(tmp_path), fps=20, loop=True)
    t0 = time.perf_counter()
    frames = [next(source) for _ in range(6)]
    elapsed = time.perf_counter() - t0
    assert len(frames) == 6 and frames[-1].frame_id == 5
    assert elapsed >= 5 / 20 * 0.9  # paced: six frames at 20 fps take at least 5 periods


def test_video_file_source(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    frame = compose_frame([PROBES / "ORL_s02" / "ORL_s02_0008.jpg"])
    for _ in range(5):
        writer.write(frame)
    writer.release()
    frames = list(open_source(str(path), fps=0))
    assert len(frames) == 5 and frames[0].image.shape == (480, 640, 3)
    # a video continues from frame to frame: only its first frame is a cut...
    assert [f.cut for f in frames] == [True, False, False, False, False]
    # ...and the first after each loop
    looped = open_source(str(path), fps=0, loop=True)
    assert [next(looped).cut for _ in range(7)] == [True, False, False, False, False, True, False]


def test_every_photo_of_a_folder_is_a_cut(tmp_path):
    for f in sorted((PROBES / "ORL_s01").glob("*.jpg"))[:3]:
        shutil.copy(f, tmp_path / f.name)
    assert [f.cut for f in open_source(str(tmp_path), fps=0)] == [True, True, True]


def test_the_edge_searches_a_cut_whole_and_follows_a_video():
    broker = MemoryBroker()
    cfg = config.load(EdgeConfig, overrides={"node": "cam", "dedup_distance": 0}, env={})
    node = EdgeNode(cfg, broker.transport("edge-cam")).start(timeout=1)
    try:
        frame = next(open_source(str(PROBES / "ORL_s04"), fps=0))
        video = replace(frame, cut=False)
        searched = []
        for f in (frame, video, video, frame, video):
            assert len(node.process(f)) == 1
            searched.append(node.follower.detected)
        # a photo is searched whole (another person may stand where the last one did);
        # the frames of a video that follow it are followed
        assert searched == [True, False, False, True, False]
    finally:
        node.close(drain_s=0.1)


def test_missing_source_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot open video source"):
        next(open_source("/nonexistent/video.mp4", fps=0))


def test_dedup_skips_the_same_face_in_the_same_place_until_it_is_old():
    d = Dedup(max_distance=0.15, max_age_s=3.0, first=1)
    a = np.array([1.0, 0.0, 0.0], np.float32)
    b = np.array([0.0, 1.0, 0.0], np.float32)
    box = (100, 100, 80, 80)
    assert d.should_send(a, box, 0.0)
    assert not d.should_send(a, (110, 95, 80, 80), 1.0)  # same face, moved a little
    assert d.should_send(b, box, 1.5)  # someone else stepped in
    assert d.should_send(a, (400, 100, 80, 80), 1.6)  # same vector far away: another face
    assert d.should_send(a, box, 5.0)  # old enough to be sent again
    assert d.skipped == 1


def test_dedup_sends_a_new_faces_first_frames_and_keeps_a_standing_track_going():
    d = Dedup(max_distance=0.15, max_age_s=1.5, first=3)
    a = np.array([1.0, 0.0, 0.0], np.float32)
    box = (100, 100, 80, 80)
    at = [t / 10 for t in range(60)]  # 10 fps for 6 s: someone standing still
    sent = [t for t in at if d.should_send(a, box, t)]
    # the first three frames (a track's decision needs three), then one every 1.5 s:
    # never a gap of 2 s (the classifier's track.gap_s) between two
    assert sent[:3] == [0.0, 0.1, 0.2]
    assert all(later - earlier < 2.0 for earlier, later in zip(sent, sent[1:], strict=False))
    assert len(sent) == 3 + 3  # 1.7 s, 3.2 s, 4.7 s
    # gone for a while and back: a new face, its first frames sent again
    assert [d.should_send(a, box, t) for t in (20.0, 20.1, 20.2, 20.3)] == [True] * 3 + [False]


def test_edge_node_dedups_a_face_that_stays():
    broker = MemoryBroker()
    sent_payloads: list[bytes] = []
    watcher = broker.transport("watcher")
    watcher.subscribe(topics.EMBEDDINGS, lambda m: sent_payloads.append(m.payload))
    watcher.connect()
    cfg = config.load(EdgeConfig, overrides={"node": "cam"}, env={})
    node = EdgeNode(cfg, broker.transport("edge-cam")).start(timeout=1)
    try:
        frame = next(open_source(str(PROBES / "ORL_s04"), fps=0))
        sent = [len(node.process(frame)) for _ in range(6)]
        # its first dedup_first frames (3), for the classifier's track decision
        assert sent == [1, 1, 1, 0, 0, 0]
        assert node.status().dropped_dedup == 3
        assert broker.settle()
        assert len(sent_payloads) == 3
        assert decode(sent_payloads[0]).node == "cam"
    finally:
        node.close(drain_s=0.1)
    # a clean stop leaves an offline status, retained, published after the last online one
    status = EdgeStatus.decode(broker.retained(topics.status("cam")) or b"")
    assert status.state == "offline" and status.sent == 3


def test_edge_says_at_start_when_its_model_is_not_the_classifiers(caplog):
    broker = MemoryBroker()
    classifier = broker.transport("classifier")
    classifier.connect()
    other = ClassifierStatus(state="online", model="sface-00000000+mp", ts=1.0)
    classifier.publish(topics.CLASSIFIER_STATUS, other.encode(), qos=1, retain=True)
    cfg = config.load(EdgeConfig, overrides={"node": "cam"}, env={})
    with caplog.at_level(logging.ERROR, logger="facewire.edge"):
        node = EdgeNode(cfg, broker.transport("edge-cam")).start(timeout=1)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert node.pipeline.model_id in errors[0] and "sface-00000000+mp" in errors[0]
        assert node.classifier_model == "sface-00000000+mp"
    finally:
        node.close(drain_s=0.1)


def test_bad_node_id_is_refused():
    cfg = config.load(EdgeConfig, overrides={"node": "faces/evil"}, env={})
    with pytest.raises(ValueError):
        EdgeNode(cfg, MemoryBroker().transport("edge"))


def named_by_a_stand_in(
    name: str, **overrides: object
) -> tuple[MemoryBroker, EdgeNode, list[float]]:
    """An edge node ``cam`` (in-memory transport) and a stand-in classifier that answers
    every face as ``name`` on one track and names that track after 3 frames; the list
    gets the time of each embedding received."""
    broker = MemoryBroker()
    classifier = broker.transport("classifier")
    classifier.connect()
    received: list[float] = []

    def answer(m) -> None:
        msg = decode(m.payload)
        received.append(time.monotonic())
        result = Result("cam", msg.seq, name, 0.9, msg.model_id, 0.45, bbox=msg.bbox, track=1)
        classifier.publish(topics.result("cam"), result.encode())
        if len(received) == 3:
            event = TrackEvent("cam", 1, "arrived", name, 0.9, 3)
            classifier.publish(topics.event("cam"), event.encode(), qos=1)

    classifier.subscribe(topics.EMBEDDINGS, answer)
    cfg = config.load(EdgeConfig, overrides={"node": "cam", **overrides}, env={})
    return broker, EdgeNode(cfg, broker.transport("edge-cam")).start(timeout=1), received


def test_a_named_face_is_still_sent_every_dedup_seconds_so_its_track_goes_on():
    """Skipping a named face must not starve its track: the classifier ends a track with
    no frame for track.gap_s, so the face is embedded whenever de-duplication would send
    it again (dedup_seconds), however long reembed_named_s is."""
    broker, node, received = named_by_a_stand_in("ORL_s01", dedup_seconds=0.3, reembed_named_s=60)
    frame = replace(next(open_source(str(PROBES / "ORL_s01"), fps=0)), cut=False)
    try:
        end = time.monotonic() + 1.6
        while time.monotonic() < end:
            node.process(frame)
            assert broker.settle()
            time.sleep(0.02)
        assert node.status().skipped_named > 0  # named: skipped between sends …
        gaps = [b - a for a, b in zip(received[2:], received[3:], strict=False)]
        assert len(gaps) >= 3 and max(gaps) < 0.3 + 0.5  # … but sent every dedup_seconds
    finally:
        node.close(drain_s=0.1)


def test_someone_who_takes_a_named_persons_place_is_embedded_at_once():
    """One camera, no cuts: Ann stands at the door and is named; she steps away (a frame
    with nobody) and Bob steps into the same place. Bob's first frame is embedded: he
    was not followed there, so he may be someone new, whatever Ann's track says."""
    from facewire.edge.sources import Frame

    broker, node, _ = named_by_a_stand_in("ORL_s01", dedup_distance=0, reembed_named_s=60)
    ann = compose_frame([PROBES / "ORL_s01" / "ORL_s01_0008.jpg"])
    bob = compose_frame([PROBES / "ORL_s03" / "ORL_s03_0008.jpg"])
    nobody = compose_frame([])
    n = iter(range(1000))

    def show(image: np.ndarray) -> int:
        frame = Frame(next(n), image, time.time(), time.perf_counter(), 0.0)
        sent = len(node.process(frame))
        assert broker.settle()
        return sent

    try:
        # the test means something only if Bob's box would continue Ann's track
        (ann_face,), (bob_face,) = node.pipeline.detect(ann), node.pipeline.detect(bob)
        assert box_iou(ann_face.box, bob_face.box) >= MIN_IOU
        assert [show(ann) for _ in range(4)] == [1, 1, 1, 1]  # named after 3, once more
        assert [show(ann) for _ in range(3)] == [0, 0, 0]  # named: not embedded again
        assert show(nobody) == 0
        assert show(bob) == 1
        assert node.status().skipped_named == 3
    finally:
        node.close(drain_s=0.1)


def test_a_confidently_named_face_is_not_embedded_every_frame_and_bad_faces_not_at_all():
    broker, node, _ = named_by_a_stand_in("ORL_s04", dedup_distance=0, reembed_named_s=0.5)
    try:
        # a camera's frames (not cuts): the face is followed from one to the next
        frame = replace(next(open_source(str(PROBES / "ORL_s04"), fps=0)), cut=False)
        for _ in range(3):
            assert len(node.process(frame)) == 1
            assert broker.settle()
        # named with confidence: embedded once more, then not again for 0.5 s
        assert [len(node.process(frame)) for _ in range(5)] == [1, 0, 0, 0, 0]
        assert node.status().skipped_named == 4
        # a face at that place that was not there a frame ago (here: after a cut) may be
        # someone who took their place: embedded at once, then followed and skipped
        assert broker.settle()
        assert len(node.process(replace(frame, cut=True))) == 1
        assert broker.settle()
        assert len(node.process(frame)) == 0 and node.status().skipped_named == 5
        time.sleep(0.55)
        assert len(node.process(frame)) == 1  # embedded again, to see it is still them
        # a face too dark to trust is not embedded at all
        dark = replace(frame, image=(frame.image * 0.1).astype(np.uint8))
        assert node.process(dark) == [] and node.status().dropped_quality == 1
    finally:
        node.close(drain_s=0.1)
