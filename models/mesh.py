"""MediaPipe Face Mesh on a face box: landmarks, face-oval mask, eye-level alignment."""

from __future__ import annotations

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


def oval_mask(shape: tuple[int, ...], landmarks: np.ndarray) -> np.ndarray:
    """uint8 mask (255 inside the face oval) of ``shape[:2]``."""
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[FACE_OVAL]).astype(np.int32)], (255,))
    return mask


class FaceMesher:
    """Runs Face Mesh on one face at a time: the box grown by ``margin`` per side.

    FaceMesh's own face finder often misses a tight Haar box, so it gets context
    around the face; the crop is padded with edge pixels where the box meets the
    frame border. Returns 468 landmarks in frame pixels, or ``None``.

    Measured on 2 cores, one ~95×130 px face: ~5 ms per face, almost all inside
    MediaPipe's graph (its face detector on a 128×128 input, then the landmark model
    on 192×192), so the crop size changes nothing (``max_side`` 256, 192, 160, 128 all
    4.7–5.3 ms). ``static_image_mode=False`` (tracking: the previous face's landmarks
    place the next one, skipping the detector) took 3.0–3.5 ms, but each face's
    landmarks would then depend on the face processed before it, in a frame or in the
    gallery, so it stays off. ``refine_landmarks`` (iris model) stays off: alignment
    uses eye corners.
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

    def landmarks(self, bgr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """468 landmarks of the face in ``box`` of the BGR frame, or ``None``."""
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
