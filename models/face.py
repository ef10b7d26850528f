"""The one record that flows from a camera frame to the wire."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Quality:
    """How usable a face is: size, sharpness and exposure, measured on its box.

    Measured for every detected face and sent with its vector, for quality gates to
    come (enrolment taking good faces only, track decisions weighted by quality);
    nothing decides on it yet. ``blur`` depends on the face's size in pixels, so
    compare it between faces of similar ``area``.
    """

    area: float  # box area in pixels of the original frame
    blur: float  # variance of the Laplacian at frame resolution: low = blurry
    brightness: float  # mean grey level, 0..255

    @classmethod
    def measure(cls, image: np.ndarray, box: tuple[int, int, int, int]) -> Quality:
        """Quality of the face in ``box`` of a BGR or grey frame (only the box is
        converted to grey, so a frame without faces costs nothing).

        >>> import numpy as np
        >>> q = Quality.measure(np.full((10, 10), 128, np.uint8), (0, 0, 10, 10))
        >>> (q.area, q.blur, q.brightness)
        (100.0, 0.0, 128.0)
        >>> edge = np.zeros((20, 20, 3), np.uint8)
        >>> edge[:, 10:] = 255
        >>> Quality.measure(edge, (0, 0, 20, 20)).blur > Quality.measure(edge, (0, 0, 8, 20)).blur
        True
        """
        x, y, w, h = box
        patch = image[max(y, 0) : y + h, max(x, 0) : x + w]
        if patch.size == 0:
            return cls(float(w * h), 0.0, 0.0)
        if patch.ndim == 3:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
        # 16-bit Laplacian (exact for 8-bit pixels) and OpenCV's mean/std: cheaper than
        # float64 arrays and numpy
        _, std = cv2.meanStdDev(cv2.Laplacian(patch, cv2.CV_16S))
        return cls(float(w * h), float(std[0, 0]) ** 2, float(cv2.mean(patch)[0]))


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 10, 10))
    0.3333333333333333
    """
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    inter = max(0, w) * max(0, h)
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Face:
    """One face in one frame.

    ``box`` is ``(x, y, w, h)`` in frame pixels, ``points`` the detector's 5 key points
    (eyes, nose tip, mouth corners; YuNet only, else ``None``). ``landmarks`` are FaceMesh's 468
    points in frame pixels (``None`` when FaceMesh was off or found nothing).
    ``crop`` is exactly what the embedder saw (aligned and masked when those steps
    ran), ``mask`` its face-oval mask (255 = face), ``embedding`` the L2-normalised
    float32 vector. ``stages`` holds per-stage milliseconds by stage name (``detect``,
    ``mesh``, ``align``, ``embed``; the vocabulary is ``facewire.bus.messages.EDGE_STAGES``).
    ``continued``: ``True`` if the face continues one of a camera's previous frame
    (followed there, or detected where a face of that frame was), ``False`` if it may be
    someone new, ``None`` for a photo not seen as part of a video (``FaceFollower``).
    """

    box: tuple[int, int, int, int]
    index: int = 0
    points: np.ndarray | None = None  # the detector's 5 key points (YuNet), frame pixels
    landmarks: np.ndarray | None = None
    meshed: bool = False  # landmarks already looked for (``landmarks`` is the answer)
    crop: np.ndarray | None = None
    mask: np.ndarray | None = None
    aligned: bool = False
    quality: Quality = field(default_factory=lambda: Quality(0.0, 0.0, 0.0))
    embedding: np.ndarray | None = None
    model_id: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    continued: bool | None = None
