"""Frame sources: a webcam, a video file or stream, or a folder of images replayed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewire.models.files import list_photos, read_photo

log = logging.getLogger("facewire.edge")


@dataclass(slots=True)
class Frame:
    frame_id: int
    image: np.ndarray  # BGR
    captured_at: float  # unix seconds (edge clock), for the record
    captured_perf: float  # perf_counter at capture: latency is measured on this clock
    capture_ms: float  # time spent reading/decoding the frame
    label: str = ""  # file name when replaying a folder
    # the frame does not continue the one before it (a photo of a folder, a video's first
    # frame, opened or looped): its faces are searched for anew, not followed
    cut: bool = False


def folder_frames(folder: Path, loop: bool) -> Iterator[tuple[np.ndarray, str, bool]]:
    """Every photo below ``folder`` (``list_photos``), in order, each a cut; unreadable
    ones are logged and skipped."""
    files = list_photos(folder)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    while True:
        read = 0
        for f in files:
            try:
                image = read_photo(f)
            except (OSError, ValueError) as exc:
                log.warning("skipping %s: %s", f, exc)
                continue
            read += 1
            yield image, str(f.relative_to(folder)), True
        if not loop:
            return
        if not read:  # looping over nothing readable would spin for ever
            raise FileNotFoundError(f"no readable images in {folder}")


def capture_frames(spec: str, loop: bool) -> Iterator[tuple[np.ndarray, str, bool]]:
    """Frames from a webcam index, a video file or a stream URL; the first after each
    opening is a cut."""
    target: int | str = int(spec) if spec.isdigit() else spec
    while True:
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            raise RuntimeError(f"cannot open video source {spec!r}")
        try:
            cut = True
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                yield image, "", cut
                cut = False
        finally:
            cap.release()
        if not loop or isinstance(target, int):
            return


def open_source(spec: str, fps: float, loop: bool = False) -> Iterator[Frame]:
    """Frames from ``spec`` paced at ``fps`` (0: as fast as they come)."""
    path = Path(spec)
    raw = folder_frames(path, loop) if path.is_dir() else capture_frames(spec, loop)
    period = 1.0 / fps if fps > 0 else 0.0
    next_at = time.perf_counter()
    frame_id = 0
    while True:
        if period:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at + period, time.perf_counter() - period)
        t0 = time.perf_counter()
        try:
            image, label, cut = next(raw)
        except StopIteration:
            return
        captured_perf = time.perf_counter()
        capture_ms = (captured_perf - t0) * 1000.0
        yield Frame(frame_id, image, time.time(), t0, capture_ms, label, cut)
        frame_id += 1
