"""Following faces on live frames (``FaceFollower``): real models, real face photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facewire.bench.frames import compose_frame, moving_frames
from facewire.config.schema import PipelineConfig
from facewire.models import FacePipeline
from facewire.models.face import box_iou
from facewire.models.files import list_photos
from facewire.models.follow import FaceFollower
from tests.conftest import DATASET

ANN = DATASET / "probes" / "ORL_s01" / "ORL_s01_0008.jpg"
BOB = DATASET / "probes" / "ORL_s02" / "ORL_s02_0008.jpg"
EVERY = 5


@pytest.fixture(scope="module")
def pipeline():
    from facewire.models.tools.face_landmark import prepare_face_landmark
    from facewire.models.tools.prepare import prepare_yunet

    prepare_yunet()
    prepare_face_landmark()
    p = FacePipeline(PipelineConfig())
    yield p
    p.close()


def webcam(frame: np.ndarray) -> np.ndarray:
    """The frame as a camera delivers it: through JPEG."""
    ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.imdecode(jpg, cv2.IMREAD_COLOR)


def with_second_face(frame: np.ndarray) -> np.ndarray:
    """``frame`` with BOB pasted at its right edge, away from the centred face."""
    out = frame.copy()
    img = cv2.imread(str(BOB))
    img = cv2.resize(img, (150, 182), interpolation=cv2.INTER_CUBIC)
    out[150:332, 480:630] = img
    return out


def nearest(faces, box):
    return max(faces, key=lambda f: box_iou(f.box, box))


@pytest.fixture(scope="module")
def gallery(pipeline):
    """Five people's gallery vectors, by name (still photos: the full path)."""
    out = {}
    for person in ("ORL_s01", "ORL_s02", "ORL_s03", "ORL_s04", "ORL_s05"):
        photos = list_photos(DATASET / "gallery" / person)
        vectors = [pipeline.get(cv2.imread(str(f))) for f in photos]
        out[person] = np.stack([v[0].embedding for v in vectors if v])
    return out


@pytest.mark.parametrize("people", [[ANN], [ANN, BOB]])
def test_followed_faces_match_the_full_path(pipeline, gallery, people):
    follower = FaceFollower(pipeline, EVERY)
    errors, cosines = [], []
    own: dict[str, list[float]] = {"followed": [], "full": []}
    for frame in map(webcam, moving_frames(people, 15)):
        fast = follower.get(frame)
        full = pipeline.get(frame)
        assert len(fast) == len(full) == len(people)
        if follower.detected:
            continue
        for face in fast:
            ref = nearest(full, face.box)
            assert face.landmarks is not None and ref.landmarks is not None
            # a few pixels on a face 100-170 px tall
            err = np.linalg.norm(face.landmarks - ref.landmarks, axis=1).mean()
            errors.append(err / max(ref.box[2:]))
            assert box_iou(face.box, ref.box) > 0.7  # the same kind of box
            assert face.aligned and face.stages["mesh"] > 0 and face.quality.area > 0
            assert face.embedding is not None and ref.embedding is not None
            cosines.append(float(face.embedding @ ref.embedding))
            # who it is: the same nearest person, as close to their photos
            scores = {}
            for key, vector in (("followed", face.embedding), ("full", ref.embedding)):
                scores[key] = {name: float((g @ vector).max()) for name, g in gallery.items()}
            best = {key: max(s, key=s.__getitem__) for key, s in scores.items()}
            assert best["followed"] == best["full"]
            person = best["full"]
            for key in own:
                own[key].append(scores[key][person])
    # detection on frames 0, 5, 10: the other 12 followed
    assert len(cosines) == 12 * len(people)
    assert np.median(errors) < 0.025 and max(errors) < 0.06
    # the full path's own vectors of one face a frame apart: median ~0.98, down to ~0.9
    assert np.median(cosines) > 0.94
    # ±0.01 between photos of the sample at ~8 px a frame (docs/benchmarks.md)
    assert np.mean(own["followed"]) > np.mean(own["full"]) - 0.02


def test_detect_every_1_is_the_full_path(pipeline):
    follower = FaceFollower(pipeline, 1)
    for n, frame in enumerate(map(webcam, moving_frames([ANN, BOB], 4))):
        fast, full = follower.get(frame), pipeline.get(frame)
        assert follower.detected
        assert [f.box for f in fast] == [f.box for f in full]
        # new in the first frame, then where they were: the same faces
        assert [f.continued for f in fast] == [n > 0] * len(fast)
        assert all(f.continued is None for f in full)  # a photo: not known
        for a, b in zip(fast, full, strict=True):
            assert a.embedding is not None and b.embedding is not None
            assert np.array_equal(a.embedding, b.embedding)


def test_a_face_that_leaves_is_dropped_and_detection_resumes(pipeline):
    follower = FaceFollower(pipeline, EVERY)
    moving = [webcam(f) for f in moving_frames([ANN], 15)[:3]]
    empty = webcam(compose_frame([]))
    got = [follower.get(f) for f in moving]
    assert [len(faces) for faces in got] == [1, 1, 1]
    # the first is someone new; then the same face, followed
    assert [faces[0].continued for faces in got] == [False, True, True]
    assert not follower.detected  # followed
    assert follower.get(empty) == []
    assert follower.detected  # lost: the same frame was searched whole
    for _ in range(3):  # nothing to follow: every frame is searched
        assert follower.get(empty) == [] and follower.detected
    back = follower.get(moving[0])
    assert len(back) == 1 and follower.detected  # back: found at once …
    assert back[0].continued is False  # … as a face that may be someone else


def test_a_face_the_landmark_model_misses_stops_no_face_from_continuing(pipeline):
    """Nothing is followed while a face in view has no landmarks (detection on every
    frame), but the faces found where they were a frame ago still continue."""
    follower = FaceFollower(pipeline, EVERY)
    mesher = follower._mesher
    assert mesher is not None
    real = mesher.landmarks

    def misses_the_right_hand_face(frame, box, points=None):
        return None if box[0] > 400 else real(frame, box, points)

    both = webcam(with_second_face(compose_frame([ANN])))
    try:
        mesher.landmarks = misses_the_right_hand_face  # type: ignore[method-assign]
        got = [follower.get(both) for _ in range(3)]
    finally:
        mesher.landmarks = real  # type: ignore[method-assign]
    assert [len(faces) for faces in got] == [2, 2, 2] and follower.detected
    assert [[f.continued for f in faces] for faces in got] == [
        [False, False],
        [True, True],
        [True, True],
    ]


def test_a_face_moving_out_of_the_frame_is_dropped(pipeline):
    follower = FaceFollower(pipeline, 100)
    centre = cv2.imread(str(ANN))
    centre = cv2.resize(centre, (164, 200))
    seen = []
    for x in range(240, 640, 40):  # walks out on the right
        frame = compose_frame([])
        part = centre[:, : max(0, min(164, 640 - x))]
        frame[140:340, x : x + part.shape[1]] = part
        seen.append(len(follower.get(webcam(frame))))
    assert seen[0] == 1 and seen[-1] == 0
    assert 0 not in seen[: seen.index(0)] and set(seen[seen.index(0) :]) == {0}


def test_a_new_face_is_found_within_detect_every_frames(pipeline):
    follower = FaceFollower(pipeline, EVERY)
    alone = webcam(compose_frame([ANN]))
    both = webcam(with_second_face(compose_frame([ANN])))
    assert len(follower.get(alone)) == 1
    assert len(follower.get(alone)) == 1 and not follower.detected
    got = [follower.get(both) for _ in range(EVERY)]
    counts = [len(faces) for faces in got]
    assert counts[-1] == 2  # found by the next full-frame detection …
    assert counts[0] == 1  # … not before: the followed face alone until then
    # at that detection, the face followed all along (left) continues; the other is new
    found = got[counts.index(2)]
    assert [f.continued for f in sorted(found, key=lambda f: f.box[0])] == [True, False]
    again = follower.get(both)
    assert len(again) == 2 and not follower.detected  # then both followed
    assert all(f.continued for f in again)


@pytest.mark.parametrize(
    "frame",
    [
        None,
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((480, 5, 3), np.uint8),
        np.zeros((480, 640, 3), np.float32),
        np.zeros((2, 480, 640, 3), np.uint8),
        np.zeros((480, 640, 2), np.uint8),
    ],
    ids=["none", "empty", "1x1", "sliver", "float", "4d", "2-channel"],
)
def test_bad_frames_hold_no_face_and_break_nothing(pipeline, frame):
    follower = FaceFollower(pipeline, EVERY)
    face = webcam(compose_frame([ANN]))
    assert len(follower.get(face)) == 1
    assert follower.get(frame) == []
    assert len(follower.get(face)) == 1 and follower.detected  # searched whole again


@pytest.mark.parametrize("convert", [cv2.COLOR_BGR2GRAY, cv2.COLOR_BGR2BGRA])
def test_grey_and_bgra_frames_are_followed_too(pipeline, convert):
    follower = FaceFollower(pipeline, EVERY)
    frames = [cv2.cvtColor(webcam(f), convert) for f in moving_frames([ANN], 15)[:3]]
    assert [len(follower.get(f)) for f in frames] == [1, 1, 1]
    assert not follower.detected


def test_another_frame_size_is_searched_whole(pipeline):
    follower = FaceFollower(pipeline, EVERY)
    frame = webcam(compose_frame([ANN]))
    assert len(follower.get(frame)) == 1
    assert len(follower.get(cv2.resize(frame, (320, 240)))) == 1 and follower.detected


def test_mediapipe_graph_detects_on_every_frame():
    cfg = PipelineConfig(mesh=False, align=False)
    p = FacePipeline(cfg)
    follower = FaceFollower(p, EVERY)
    assert follower.detect_every == 1
    frame = webcam(compose_frame([ANN]))
    assert len(follower.get(frame)) == 1 and len(follower.get(frame)) == 1
    assert follower.detected


def test_a_face_that_jumps_is_found_by_the_detector(pipeline):
    follower = FaceFollower(pipeline, EVERY)
    here = webcam(compose_frame([ANN]))
    there = webcam(compose_frame([ANN], offset=(90, 0)))  # half the face's width
    assert len(follower.get(here)) == 1 and len(follower.get(here)) == 1
    assert not follower.detected
    (face,) = follower.get(there)
    assert follower.detected  # not followed to a wrong place: searched whole
    (ref,) = pipeline.get(there)
    assert face.box == ref.box
    assert face.landmarks is not None and ref.landmarks is not None
    assert np.allclose(face.landmarks, ref.landmarks)
