"""Live video: faces followed from frame to frame, full-frame detection every few frames.

``FacePipeline`` detects on every image: right for still photos (the gallery, ``facewire
eval``). On a camera's frames a face is where it was a frame ago, give or take a few
pixels, so ``FaceFollower`` does what MediaPipe's FaceMesh does in video mode: the
landmark model runs on a region placed from the face's previous landmarks, no
detector, and its face score says whether the face is still there. The region is the
one the full path places from a detection (``LandmarkMesher.landmarks``), with the box
and eyes the previous landmarks give. Full-frame detection runs every ``detect_every``
frames (new faces), at once when a followed face is lost or its answer is too far from
where it was expected to be trusted (``MAX_SHIFT`` and below), and whenever nothing is
followed.

A followed face's box is the detector's box as it sat on that face's landmarks at
its last detection, moved and scaled with the landmarks: quality, dedup and the
classifier's tracks see the same kind of box either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from facewire.models.detect import smallest_face
from facewire.models.face import Face, Quality, box_iou
from facewire.models.mesh import LandmarkMesher, five_points
from facewire.models.pipeline import FacePipeline, as_bgr

#: A followed face's landmarks this far (share of its size) from where they were
#: expected are checked once more: up to here they matched the full path's to ~1 % of
#: the face at every speed tried, beyond it the landmark model sometimes lags the face.
MAX_SHIFT = 0.05
#: … and beyond this share they are not trusted at all: the detector decides (a face
#: that jumped half its size answered ~0.2 off, consistently, on part of the face).
MAX_LOOK = 0.2
#: A face that moved more than this share of its size in a frame is detected, not
#: followed (at ~a third of it, turning, the landmark model answered off the face).
MAX_STEP = 0.3
#: Two followed faces whose boxes overlap this much have become one: detect again.
SAME_FACE_IOU = 0.5
#: A detected face continues a face of the previous frame whose box it overlaps this
#: much (the bound under which a detection carries a followed face's motion, too).
CONTINUES_IOU = 0.3


def _moved(landmarks: np.ndarray, expected: np.ndarray) -> float:
    """How far ``landmarks`` lie from ``expected``, as a share of the face's size."""
    shift = np.linalg.norm(landmarks.mean(axis=0) - expected.mean(axis=0))
    _, _, w, h = _bounds(expected)
    return float(shift) / max(w, h)


def _bounds(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = landmarks.min(axis=0), landmarks.max(axis=0)
    return float(x0), float(y0), max(float(x1 - x0), 1.0), max(float(y1 - y0), 1.0)


@dataclass
class _Followed:
    landmarks: np.ndarray
    # the detector's box in units of the landmarks' bounding box: (x, y, w, h)
    box_in_marks: tuple[float, float, float, float]
    motion: np.ndarray | None = None  # mean shift of the landmarks over the last frame

    @classmethod
    def start(cls, box: tuple[int, int, int, int], landmarks: np.ndarray) -> _Followed:
        lx, ly, lw, lh = _bounds(landmarks)
        x, y, w, h = box
        return cls(landmarks, ((x - lx) / lw, (y - ly) / lh, w / lw, h / lh))

    def box(self, landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The box on ``landmarks``, clipped to the frame like the detector's."""
        lx, ly, lw, lh = _bounds(landmarks)
        rx, ry, rw, rh = self.box_in_marks
        fh, fw = shape[:2]
        x0, y0 = max(0, round(lx + rx * lw)), max(0, round(ly + ry * lh))
        x1, y1 = min(fw, round(lx + (rx + rw) * lw)), min(fh, round(ly + (ry + rh) * lh))
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


class FaceFollower:
    """``FacePipeline.get`` for a camera's frames, one after the other (not thread-safe:
    the frame loop owns it). ``detect_every`` 1, or a pipeline without the landmark
    model (``mesh_runtime: mediapipe``, or mesh and align off), detects on every frame,
    exactly as ``FacePipeline.get``.

    ``detected`` says whether the last frame ran full-frame detection.
    """

    def __init__(self, pipeline: FacePipeline, detect_every: int = 1) -> None:
        self.pipeline = pipeline
        mesher = getattr(pipeline, "mesher", None)
        self._mesher = mesher if isinstance(mesher, LandmarkMesher) else None
        self.detect_every = max(1, detect_every) if self._mesher is not None else 1
        self._followed: list[_Followed] = []
        # the boxes of the previous frame's faces, followed or not (``Face.continued``)
        self._seen: list[tuple[int, int, int, int]] = []
        self._seen_shape: tuple[int, ...] = ()
        self._since_detect = 0  # frames followed since the last full-frame detection
        self._shape: tuple[int, ...] = ()
        # the detector's smallest face
        self._min_side = smallest_face(pipeline.cfg.detector) if self._mesher is not None else 0
        self.detected = True

    def reset(self) -> None:
        """Forget every face: the next frame is searched whole, its faces new."""
        self._followed = []
        self._seen = []

    def get(self, frame: np.ndarray, keep: Callable[[Face], bool] | None = None) -> list[Face]:
        """The faces of ``frame`` with crops and embeddings, as ``FacePipeline.get``;
        with ``keep``, only those it says are worth embedding (all are followed)."""
        if as_bgr(frame) is None:
            self.reset()
            return []
        return self.pipeline.get(frame, keep, find=self.find)

    def find(self, frame: np.ndarray) -> list[Face]:
        """Faces of a BGR frame with boxes and quality; meshed when following is on."""
        if self.detect_every == 1:
            self.detected = True
            return self._continue(self.pipeline.detect(frame), frame.shape)
        due = self._since_detect + 1 >= self.detect_every
        if self._followed and not due and frame.shape == self._shape:
            faces = self._follow(frame)
            if faces is not None:
                self._since_detect += 1
                self.detected = False
                return self._continue(faces, frame.shape)
        return self._continue(self._detect(frame), frame.shape)

    def _continue(self, faces: list[Face], shape: tuple[int, ...]) -> list[Face]:
        """Mark which faces continue one of the previous frame: a followed face does; a
        detected one if its box overlaps one of those faces' boxes (each at most once)."""
        seen = self._seen if shape == self._seen_shape else []
        pairs = sorted(
            (
                (box_iou(face.box, box), i, j)
                for i, face in enumerate(faces)
                for j, box in enumerate(seen)
            ),
            reverse=True,
        )
        taken_faces: set[int] = set()
        taken_boxes: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < CONTINUES_IOU:
                break
            if i not in taken_faces and j not in taken_boxes:
                taken_faces.add(i)
                taken_boxes.add(j)
        for i, face in enumerate(faces):
            face.continued = face.continued or i in taken_faces
        self._seen, self._seen_shape = [f.box for f in faces], shape
        return faces

    def _detect(self, frame: np.ndarray) -> list[Face]:
        assert self._mesher is not None
        if frame.shape != self._shape:  # another camera size: old positions mean nothing
            self._followed = []
        faces = self.pipeline.detect(frame)
        followed = []
        for face in faces:
            # meshed here, not in prepare, so that faces the caller does not embed
            # (quality gate, already named) are followed too
            t0 = time.perf_counter()
            face.landmarks = self._mesher.landmarks(frame, face.box, face.points)
            face.meshed = True
            face.stages["mesh"] = (time.perf_counter() - t0) * 1000.0
            if face.landmarks is not None:
                followed.append(self._start(face, frame.shape))
        # a face the landmark model misses cannot be followed: with it in the frame,
        # detection runs on every frame, as on the full path
        self._followed = followed if len(followed) == len(faces) else []
        self._since_detect = 0
        self._shape = frame.shape
        self.detected = True
        return faces

    def _start(self, face: Face, shape: tuple[int, ...]) -> _Followed:
        """Follow a detected face, with the motion of the face followed where it was a
        frame ago, if any (a face crossing the view is looked for ahead, not behind)."""
        assert face.landmarks is not None
        new = _Followed.start(face.box, face.landmarks)
        before = [(box_iou(f.box(f.landmarks, shape), face.box), f) for f in self._followed]
        overlap, old = max(before, key=lambda b: b[0], default=(0.0, None))
        if old is not None and overlap >= CONTINUES_IOU:
            new.motion = (face.landmarks - old.landmarks).mean(axis=0)
        return new

    def _look(self, frame: np.ndarray, f: _Followed, landmarks: np.ndarray) -> np.ndarray | None:
        """The landmark model on the region the full path places from a detection, from
        the box and eyes ``landmarks`` give (its vectors match the full path's; the region
        MediaPipe places from the landmarks themselves matched them less well); ``None``
        if the face is gone or (nearly) out of the frame."""
        assert self._mesher is not None
        box = f.box(landmarks, frame.shape)
        if min(box[2], box[3]) < self._min_side:
            return None
        return self._mesher.landmarks(frame, box, five_points(landmarks))

    def _follow(self, frame: np.ndarray) -> list[Face] | None:
        """The followed faces in ``frame``, or ``None`` if one is lost."""
        assert self._mesher is not None
        faces: list[Face] = []
        for i, f in enumerate(self._followed):
            t0 = time.perf_counter()
            # where the face should be now: its landmarks moved on by the last frame's
            # motion (nearer the full path's answer for a face crossing the view)
            if f.motion is not None and _moved(f.landmarks + f.motion, f.landmarks) > MAX_STEP:
                return None  # too fast to follow: the detector finds it where it is
            prev = f.landmarks if f.motion is None else f.landmarks + f.motion
            marks = self._look(frame, f, prev)
            moved = 0.0 if marks is None else _moved(marks, prev)
            if moved > MAX_LOOK:
                return None  # far from where it was expected: the detector decides
            if marks is not None and moved > MAX_SHIFT:
                # the landmark model pulls its answer towards the region's centre: a face
                # that moved this far may be further still; the answer counts only if the
                # region it places gives it back (else: full-frame detection)
                again = self._look(frame, f, marks)
                marks = again if again is not None and _moved(again, marks) <= MAX_SHIFT else None
            t1 = time.perf_counter()
            if marks is None:
                return None
            box = f.box(marks, frame.shape)
            if min(box[2], box[3]) < self._min_side or any(
                box_iou(box, g.box) >= SAME_FACE_IOU for g in faces
            ):
                return None  # gone out of the frame, or two faces became one
            quality = Quality.measure(frame, box)
            stages = {"detect": (time.perf_counter() - t1) * 1000.0, "mesh": (t1 - t0) * 1000.0}
            faces.append(
                Face(
                    box=box,
                    index=i,
                    points=five_points(marks),
                    landmarks=marks,
                    meshed=True,
                    quality=quality,
                    stages=stages,
                    continued=True,
                )
            )
        for f, face in zip(self._followed, faces, strict=True):
            assert face.landmarks is not None
            f.motion = (face.landmarks - f.landmarks).mean(axis=0)
            f.landmarks = face.landmarks
        return faces
