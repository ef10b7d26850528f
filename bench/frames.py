"""Camera-like test frames composed from real face photos (for benchmarks and tests)."""

from __future__ import annotations

from collections.abc import Iterable
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
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """A ``size`` BGR frame: ``background`` with the face photos pasted side by side.

    ORL photos are tight 92×112 head crops; at ``face_height`` 200 px they look like a
    person about a metre from a webcam. ``offset`` moves every face by (dx, dy) pixels.
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
        x = min(max(0, i * slot + max(0, (slot - fw) // 2) + offset[0]), w - 1)
        y = min(max(0, (h - fh) // 2 + offset[1]), h - fh)
        fw = min(fw, w - x)
        frame[y : y + fh, x : x + fw] = img[:, :fw]
    return frame


def moving_frames(
    faces: list[Path], count: int = 30, reach: tuple[int, int] = (24, 12)
) -> list[np.ndarray]:
    """``count`` frames of a loop in which the faces sway together on an ellipse of
    ``reach`` pixels and lean in and out (face height 200 ± 8 px): the last frame leads
    back to the first, so the sequence can be replayed as one continuous video.
    At ``count`` 30 a face moves ~4 px from frame to frame, a person standing at a door
    seen at 15 fps."""
    out = []
    for k in range(count):
        a = 2 * np.pi * k / count
        offset = (round(reach[0] * np.cos(a)), round(reach[1] * np.sin(a)))
        out.append(compose_frame(faces, face_height=round(200 + 8 * np.sin(2 * a)), offset=offset))
    return out


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = 15.0) -> Path:
    """``frames`` as a Motion JPEG video, as a webcam sends them. The edge replays a
    video as one continuous take and follows its faces; each photo of a folder is a cut
    it searches anew."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write a Motion JPEG video to {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path
