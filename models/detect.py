"""Face detection on a downscaled frame: YuNet (default) or OpenCV's Haar cascade."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from facewire.config.schema import DetectorConfig

Box = tuple[int, int, int, int]
# A box and, from YuNet, its 5 key points in frame pixels (5×2 float32: the eye on the
# image's left, the other eye, nose tip, mouth corner on the left, on the right).
Detection = tuple[Box, np.ndarray | None]


def cascade_path(name: str) -> Path:
    """Resolve a cascade file name against OpenCV's bundled data folder."""
    p = Path(name)
    if p.is_file():
        return p
    data = getattr(cv2, "data", None)
    if data is None:  # opencv 5 dropped cv2.data and the cascades with it
        raise RuntimeError("this OpenCV has no Haar cascades: install opencv 4.x (<5)")
    bundled = Path(data.haarcascades) / name
    if not bundled.is_file():
        raise FileNotFoundError(f"Haar cascade {name!r} not found in {bundled.parent}")
    return bundled


def shrink(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """``image`` downscaled to at most ``width`` pixels wide, and the scale used."""
    h, w = image.shape[:2]
    scale = min(1.0, width / float(w))
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


def pad_border(image: np.ndarray, share: float) -> tuple[np.ndarray, int]:
    """``image`` with ``share`` of its longer side added on every side (edge pixels)."""
    pad = round(max(image.shape[:2]) * share)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return image, pad


def padding(cfg: DetectorConfig, default: float) -> float:
    """``cfg.pad``, or the detector's own ``default`` when it is not set."""
    return default if cfg.pad is None else cfg.pad


def min_size(cfg: DetectorConfig, default: int) -> int:
    """``cfg.min_size``, or the detector's own ``default`` when it is not set."""
    return default if cfg.min_size is None else cfg.min_size


def smallest_face(cfg: DetectorConfig) -> int:
    """The smallest face box ``cfg``'s detector reports, pixels of the frame.

    >>> from facewire.config.schema import DetectorConfig
    >>> smallest_face(DetectorConfig(kind="haar")), smallest_face(DetectorConfig(kind="yunet"))
    (30, 20)
    """
    return min_size(cfg, 30 if cfg.kind == "haar" else 20)


def to_frame_points(
    rects: Iterable[Iterable[float]],
    scale: float,
    pad: int,
    frame_shape: tuple[int, ...],
    min_side: int,
    largest_only: bool,
) -> list[Detection]:
    """Detections on the shrunk, padded image → frame boxes, clipped, largest first,
    each with its 5 key points in frame pixels when a detection row carries them
    (YuNet: ``x, y, w, h``, then 5 × ``x, y``, then the score)."""
    h, w = frame_shape[:2]
    found: list[Detection] = []
    for rect in rects:
        row = [float(v) for v in rect]
        x, y, bw, bh = row[:4]
        x0, y0 = max(0, round((x - pad) / scale)), max(0, round((y - pad) / scale))
        x1, y1 = min(w, round((x - pad + bw) / scale)), min(h, round((y - pad + bh) / scale))
        if x1 - x0 >= min_side and y1 - y0 >= min_side:
            points = None
            if len(row) >= 14:
                points = ((np.array(row[4:14], np.float32).reshape(5, 2) - pad) / scale).astype(
                    np.float32
                )
            found.append(((x0, y0, x1 - x0, y1 - y0), points))
    found.sort(key=lambda d: d[0][2] * d[0][3], reverse=True)
    return found[:1] if largest_only else found


class _Detector:
    """What both detectors share: ``detect`` is ``detect_points`` without the points."""

    def detect_points(self, frame: np.ndarray) -> list[Detection]:
        raise NotImplementedError

    def detect(self, frame: np.ndarray) -> list[Box]:
        """Boxes ``(x, y, w, h)`` in a BGR or grey frame, largest first."""
        return [box for box, _ in self.detect_points(frame)]


class HaarDetector(_Detector):
    """Finds frontal faces; returns boxes in the original frame's pixels.

    Frames wider than ``detect_width`` are shrunk first (detection cost grows with
    pixels, and a face that fills a useful share of a 640×480 frame is still ≥ 30 px
    at half size), and padded so faces touching the border are found; boxes are
    mapped back and clipped to the frame.
    """

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        self.cfg = cfg or DetectorConfig(kind="haar")
        path = cascade_path(self.cfg.cascade)
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(f"could not load Haar cascade {path}")

    def detect_points(self, frame: np.ndarray) -> list[Detection]:
        """Boxes, largest first, without key points (Haar finds none)."""
        cfg = self.cfg
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small, scale = shrink(grey, cfg.detect_width)
        small, pad = pad_border(cv2.equalizeHist(small), padding(cfg, 0.15))
        min_side = max(8, round(smallest_face(cfg) * scale))
        found = self._cascade.detectMultiScale(
            small,
            scaleFactor=cfg.scale_factor,
            minNeighbors=cfg.min_neighbors,
            minSize=(min_side, min_side),
        )
        rects = found if len(found) else []
        return to_frame_points(rects, scale, pad, grey.shape, 8, cfg.largest_only)


class YuNetDetector(_Detector):
    """OpenCV Zoo's YuNet through ``cv2.FaceDetectorYN``, on a frame downscaled to
    ``detect_width`` (padded only if ``pad`` says so: YuNet finds faces that touch
    the border, tight gallery crops included)."""

    def __init__(self, cfg: DetectorConfig | None = None, model: Path | None = None) -> None:
        self.cfg = cfg or DetectorConfig(kind="yunet")
        path = model or yunet_path()
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing; make it with: facewire models prepare yunet"
            )
        self._net = cv2.FaceDetectorYN.create(
            str(path), "", (320, 320), self.cfg.score_threshold, 0.3, 100
        )
        self._size = (320, 320)

    def detect_points(self, frame: np.ndarray) -> list[Detection]:
        """Boxes, largest first, each with its 5 key points in frame pixels."""
        cfg = self.cfg
        bgr = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        small, scale = shrink(bgr, cfg.detect_width)
        small, pad = pad_border(small, padding(cfg, 0.0))
        size = (small.shape[1], small.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, found = self._net.detect(small)
        rects = found if found is not None else []
        return to_frame_points(rects, scale, pad, bgr.shape, smallest_face(cfg), cfg.largest_only)


def yunet_path(models_directory: str = "") -> Path:
    """``yunet.onnx`` in the configured models folder, else in this install's: a folder
    of exported embedders (``FACEWIRE_MODELS_DIR``) need not carry the detector too."""
    from facewire.models.files import PACKAGE_DIR, models_dir

    configured = models_dir(models_directory) / "yunet.onnx"
    bundled = PACKAGE_DIR / "yunet.onnx"
    return bundled if not configured.exists() and bundled.exists() else configured


def make_detector(cfg: DetectorConfig, models_directory: str = "") -> HaarDetector | YuNetDetector:
    """The detector ``cfg.kind`` names."""
    if cfg.kind == "yunet":
        return YuNetDetector(cfg, yunet_path(models_directory))
    return HaarDetector(cfg)
