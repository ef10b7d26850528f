"""Camera-like test frames composed from real face photos (for benchmarks and tests)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = ROOT / "dataset" / "samples" / "rocket.jpg"


def compose_frame(
    faces: list[Path],
    size: tuple[int, int] = (640, 480),
    face_height: int = 200,
    background: Path = BACKGROUND,
) -> np.ndarray:
    """A ``size`` BGR frame: ``background`` with the face photos pasted side by side.

    ORL photos are tight 92×112 head crops; at ``face_height`` 200 px they look like a
    person about a metre from a webcam.
    """
    w, h = size
    frame = cv2.resize(cv2.imread(str(background)), (w, h), interpolation=cv2.INTER_AREA)
    n = len(faces)
    if n == 0:
        return frame
    fh = min(face_height, h - 20)
    for i, path in enumerate(faces):
        img = cv2.imread(str(path))
        fw = round(img.shape[1] * fh / img.shape[0])
        img = cv2.resize(img, (fw, fh), interpolation=cv2.INTER_CUBIC)
        slot = w // n
        x = i * slot + max(0, (slot - fw) // 2)
        y = (h - fh) // 2
        fw = min(fw, w - x)
        frame[y : y + fh, x : x + fw] = img[:, :fw]
    return frame
