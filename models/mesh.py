"""MediaPipe Face Mesh on a face box: landmarks, face-oval mask, eye-level alignment.

``FaceMesher`` (the default) runs MediaPipe's whole graph; ``LandmarkMesher``
(``mesh_runtime: landmarks``) runs only FaceMesh's landmark model, on a region placed
from the detector's box and eyes.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

# FaceMesh's face-oval contour, in drawing order (from mediapipe's FACEMESH_FACE_OVAL).
FACE_OVAL = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
    377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
]  # fmt: skip
# Five anchor points, ordered like the ArcFace template: the eye on the image's left,
# the other eye, nose tip, mouth corner on the left, mouth corner on the right.
LEFT_EYE = (33, 133)
RIGHT_EYE = (362, 263)
NOSE_TIP = 1
MOUTH_LEFT, MOUTH_RIGHT = 61, 291

# Where those five points sit in a 112×112 crop (the ArcFace/SFace template).
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from the 468 FaceMesh points."""
    return np.stack(
        [
            landmarks[list(LEFT_EYE)].mean(axis=0),
            landmarks[list(RIGHT_EYE)].mean(axis=0),
            landmarks[NOSE_TIP],
            landmarks[MOUTH_LEFT],
            landmarks[MOUTH_RIGHT],
        ]
    ).astype(np.float32)


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2×3 similarity transform that puts the five points on the template at ``size``.

    Rotation, uniform scale and shift only, so the eyes come out level at a fixed place.
    """
    src = five_points(landmarks)
    dst = TEMPLATE_112 * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:  # degenerate points: fall back to an exact least-squares fit
        matrix = _umeyama(src, dst)
    return matrix.astype(np.float32)


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        vt[-1] *= -1
        rot = u @ vt
    scale = sigma.sum() / max(s.var(0).sum(), 1e-9)
    shift = dst_mean - scale * rot @ src_mean
    return np.hstack([scale * rot, shift[:, None]])


def oval_mask(shape: tuple[int, ...], landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """uint8 mask (255 inside the face oval, grown ``scale`` × about its centroid) of
    ``shape[:2]``.

    >>> pts = np.zeros((468, 2), np.float32)
    >>> angles = np.linspace(0, 2 * np.pi, len(FACE_OVAL), endpoint=False)
    >>> pts[FACE_OVAL] = 50 + 20 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    >>> oval_mask((100, 100), pts)[50, [50, 75]].tolist(), oval_mask((100, 100), pts, 1.5)[50, 75]
    ([255, 0], 255)
    """
    oval = landmarks[FACE_OVAL]
    if scale != 1.0:
        centre = oval.mean(axis=0)
        oval = centre + (oval - centre) * scale
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(oval).astype(np.int32)], (255,))
    return mask


def blurred(crop: np.ndarray) -> np.ndarray:
    """A strong blur of ``crop``: shrunk to 1/16 of its side and stretched back, which
    keeps its colours and light and none of its detail, at a fraction of a Gaussian's
    cost at the same width."""
    h, w = crop.shape[:2]
    small = cv2.resize(crop, (max(2, w // 16), max(2, h // 16)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class FaceMesher:
    """Runs Face Mesh on one face at a time: the box grown by ``margin`` per side.

    FaceMesh's own face finder often misses a tight Haar box, so it gets context
    around the face; the crop is padded with edge pixels where the box meets the
    frame border. Returns 468 landmarks in frame pixels, or ``None``.

    ``static_image_mode`` stays on: with tracking, a face's landmarks would depend on
    the face processed before it (in a frame or in the gallery). ``refine_landmarks``
    (the iris model) stays off: alignment uses eye corners.
    """

    def __init__(self, margin: float = 0.35, max_side: int = 256) -> None:
        import mediapipe as mp  # heavy import: only when FaceMesh is actually used

        self.margin = margin
        self.max_side = max_side
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=0.5,
        )

    def landmarks(
        self,
        bgr: np.ndarray,
        box: tuple[int, int, int, int],
        points: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """468 landmarks of the face in ``box`` of the BGR frame, or ``None``.

        ``points`` (the detector's) are not used: MediaPipe finds the face again."""
        del points
        x, y, w, h = box
        m = round(max(w, h) * self.margin)
        x0, y0, x1, y1 = x - m, y - m, x + w + m, y + h + m
        fh, fw = bgr.shape[:2]
        pad = (max(0, -y0), max(0, y1 - fh), max(0, -x0), max(0, x1 - fw))
        crop = bgr[max(y0, 0) : min(y1, fh), max(x0, 0) : min(x1, fw)]
        if any(pad):
            crop = cv2.copyMakeBorder(crop, *pad, cv2.BORDER_REPLICATE)
        ch, cw = crop.shape[:2]
        scale = min(1.0, self.max_side / float(max(ch, cw)))
        if scale < 1.0:
            crop = cv2.resize(
                crop, (round(cw * scale), round(ch * scale)), interpolation=cv2.INTER_AREA
            )
        # colour conversion on the small crop only, not on the whole frame
        result = self._mesh.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
        if not result.multi_face_landmarks:
            return None
        pts = result.multi_face_landmarks[0].landmark
        sh, sw = crop.shape[:2]
        xy = np.array([(p.x * sw, p.y * sh) for p in pts], dtype=np.float32)
        xy /= scale
        xy += np.array([x0, y0], dtype=np.float32)
        return xy

    def close(self) -> None:
        self._mesh.close()


LANDMARK_INPUT = 192  # the landmark model's input side, pixels


def roi_matrix(
    box: tuple[int, int, int, int], points: np.ndarray | None, scale: float, shift: float
) -> np.ndarray:
    """2×3 affine: frame → the landmark model's 192×192 input, MediaPipe's way.

    MediaPipe's FaceMesh turns its face detection into a square region: rotated so the
    eyes are level (the vector from the eye on the image's left to the other one), the
    longer box side × 1.5, around the box centre. Here the box and the eyes are the
    detector's: ``scale`` × the longer box side, the centre moved by ``shift`` × that
    side along the face's downward axis (YuNet's box sits higher and tighter on the
    face than MediaPipe's detector's). Without ``points`` (Haar) the region is upright.
    Coordinates are continuous (a pixel's centre at +0.5), as MediaPipe's.
    """
    x, y, w, h = box
    angle = 0.0
    if points is not None:
        dx, dy = points[1] - points[0]
        angle = float(np.arctan2(dy, dx))
    c, s = np.cos(angle), np.sin(angle)
    side = scale * max(w, h)
    centre = np.array([x + w / 2.0, y + h / 2.0]) + shift * side * np.array([-s, c])
    k = LANDMARK_INPUT / side
    rot = np.array([[c, s], [-s, c]]) * k  # frame axes → face axes, scaled
    # continuous coordinates on both sides: q + 0.5 = rot @ (p + 0.5 - centre) + 96
    offset = LANDMARK_INPUT / 2.0 - 0.5 - rot @ (centre - 0.5)
    return np.hstack([rot, offset[:, None]]).astype(np.float32)


def landmarks_roi_matrix(landmarks: np.ndarray) -> np.ndarray:
    """``roi_matrix`` of MediaPipe's region from a face's landmarks (its tracking step):
    the landmarks' bounding box × 1.5 around its centre, eyes (33, 263) level."""
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    eyes = landmarks[[33, 263]]
    box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    return roi_matrix(box, eyes, 1.5, 0.0)  # type: ignore[arg-type]


class LandmarkMesher:
    """MediaPipe's face landmark model alone, on a region placed from the detector's box
    and eyes: the 468 FaceMesh points without FaceMesh's own face detector.

    ``FaceMesher`` runs MediaPipe's whole graph, which first looks for the face again
    (its detector on a 128×128 input) and only then runs the landmark model on a
    region made from that detection. Here the region comes from what the detector
    already found (``roi_matrix``), and the landmark model (``face_landmark.onnx``,
    converted once from the .tflite file mediapipe ships, ``facewire models prepare
    all``) runs in ONNX Runtime on one thread. Its face score (sigmoid of the
    ``face_flag`` logit, MediaPipe's own threshold 0.5) below ``min_score`` means no
    face: ``None``, as FaceMesh does.

    ``scale`` 1.3 and ``shift`` 0.05 were fitted against FaceMesh's landmarks on the
    sample's faces (YuNet's box is tighter than MediaPipe's detector's, whose factor is
    1.5); the fit is in docs/benchmarks.md.
    """

    def __init__(
        self,
        model: str | None = None,
        scale: float = 1.3,
        shift: float = 0.05,
        min_score: float = 0.5,
    ) -> None:
        import onnxruntime as ort

        from facewire.models.files import models_dir

        path = model or str(landmark_model_path(models_dir()))
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing; make it with: facewire models prepare all")
        opts = ort.SessionOptions()
        # one thread: a 192×192 input is too small to share between threads
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.scale = scale
        self.shift = shift
        self.min_logit = float(np.log(min_score / (1.0 - min_score)))
        self.last_score = 0.0

    def landmarks(
        self,
        bgr: np.ndarray,
        box: tuple[int, int, int, int],
        points: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """468 landmarks of the face in ``box`` (eyes from ``points``) or ``None``.

        Without ``points`` (Haar: an upright box only) the model runs twice: the second
        time on the region MediaPipe itself places from landmarks (eyes 33 → 263 level,
        their bounding box × 1.5), so that a loose box does not shift the points."""
        first = self._run(bgr, roi_matrix(box, points, self.scale, self.shift))
        if first is None or points is not None:
            return first
        return self._run(bgr, landmarks_roi_matrix(first))

    def _run(self, bgr: np.ndarray, m: np.ndarray) -> np.ndarray | None:
        size = (LANDMARK_INPUT, LANDMARK_INPUT)
        patch = cv2.warpAffine(
            bgr, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        rgb = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)
        x = (rgb.astype(np.float32) * np.float32(1.0 / 255.0))[None]
        raw, flag = self._session.run(None, {"input": x})
        logit = float(flag.reshape(-1)[0])
        self.last_score = float(1.0 / (1.0 + np.exp(-logit)))
        if logit < self.min_logit:
            return None
        q = raw.reshape(-1, 3)[:, :2]  # continuous input pixels
        inv = cv2.invertAffineTransform(m)
        # the matrix maps pixel centres; continuous points are 0.5 off on both sides
        xy = (q - 0.5) @ inv[:, :2].T + inv[:, 2] + 0.5
        return xy.astype(np.float32)

    def close(self) -> None:
        pass


def landmark_model_path(directory: Path) -> Path:
    """``face_landmark.onnx`` in ``directory``, else in this install's models folder."""
    from facewire.models.files import PACKAGE_DIR

    configured = directory / "face_landmark.onnx"
    bundled = PACKAGE_DIR / "face_landmark.onnx"
    return bundled if not configured.exists() and bundled.exists() else configured
