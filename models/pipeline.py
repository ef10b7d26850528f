"""``FacePipeline``: a BGR frame in, a list of embedded ``Face`` records out.

The edge runs it on camera frames and the classifier on gallery photos, so both
sides detect, mesh, align and embed the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facewire.config.schema import PipelineConfig
from facewire.models.detect import make_detector
from facewire.models.embedders import (
    OnnxEmbedder,
    embedder_id,
    fallback_threshold,
    get_embedder,
)
from facewire.models.face import Face, Quality
from facewire.models.files import models_dir, spread_photos
from facewire.models.mesh import (
    FaceMesher,
    LandmarkMesher,
    alignment_matrix,
    blurred,
    landmark_model_path,
    oval_mask,
)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def square_crop(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The box made square around its centre, padded at the borders, resized to ``size``."""
    x, y, w, h = box
    side = max(w, h)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    # warpAffine with a pure scale+shift does crop, pad and resize in one pass
    s = size / float(side)
    m = np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float32)
    return cv2.warpAffine(
        frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


#: Frames smaller than this on a side hold no face worth finding (and upset detectors).
MIN_SIDE = 32


def as_bgr(frame: np.ndarray | None) -> np.ndarray | None:
    """``frame`` as 8-bit BGR, or ``None`` if it cannot hold a face (empty, tiny,
    not an image)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        return None
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or min(frame.shape[:2]) < MIN_SIDE:
        return None
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame if frame.shape[2] == 3 else None


def crop_tag(cfg: PipelineConfig) -> str:
    """How the crop is made, as far as it changes the vector: the landmark runtime
    (``lm`` the landmark model alone, ``mp`` MediaPipe's graph), the mask (``-blur1.4``:
    the background outside the oval grown 1.4 × blurred; ``-oval1.2``: blacked out;
    nothing for FaceMesh's own oval blacked out, the mask of earlier versions, whose
    vectors stay valid), ``-nomask`` / ``-noalign`` when those are off, or ``box`` for
    the plain box crop.

    >>> crop_tag(PipelineConfig()), crop_tag(PipelineConfig(mesh_runtime="mediapipe"))
    ('lm-blur1.4', 'mp-blur1.4')
    >>> black = PipelineConfig(mask_fill="black")
    >>> crop_tag(black), crop_tag(PipelineConfig(mask_fill="black", mask_scale=1))
    ('lm-oval1.4', 'lm')
    >>> crop_tag(PipelineConfig(mesh=False)), crop_tag(PipelineConfig(mesh=False, align=False))
    ('lm-nomask', 'box')
    """
    if not (cfg.mesh or cfg.align):
        return "box"
    tag = "lm" if cfg.mesh_runtime == "landmarks" else "mp"
    if not cfg.mesh:
        tag += "-nomask"
    elif cfg.mask_fill == "blur":
        tag += f"-blur{cfg.mask_scale:g}"
    elif cfg.mask_scale != 1.0:
        tag += f"-oval{cfg.mask_scale:g}"
    if not cfg.align:
        tag += "-noalign"
    return tag


def pipeline_model_id(cfg: PipelineConfig) -> str:
    """``FacePipeline(cfg).model_id`` without loading any model."""
    return f"{embedder_id(cfg.model, cfg.models_dir)}+{crop_tag(cfg)}"


def pipeline_fallback_threshold(cfg: PipelineConfig) -> float:
    """The threshold for a gallery too small to calibrate: the model's own, or the one
    measured for it on this crop (``embedders.fallback_threshold``); loads no model."""
    return fallback_threshold(cfg.model, cfg.models_dir, crop_tag(cfg))


def vector_settings(cfg: PipelineConfig) -> dict[str, object]:
    """What decides the vector a photo gets: the model id and the settings that choose
    the face and its crop; not threads, spinning or the models folder. A cache of
    gallery vectors is valid for as long as this is the same."""
    d = cfg.detector
    return {
        "model": pipeline_model_id(cfg),
        "detector": [d.kind, d.cascade, d.scale_factor, d.min_neighbors, d.min_size,
                     d.detect_width, d.pad, d.score_threshold],
        "mesh_margin": cfg.mesh_margin if cfg.mesh_runtime == "mediapipe" else None,
        "on_mesh_miss": cfg.on_mesh_miss,
    }  # fmt: skip


class FacePipeline:
    """Detect → FaceMesh (landmarks + oval mask) → align → embed, per ``PipelineConfig``.

    ``mesh`` replaces what lies outside FaceMesh's face oval (grown by ``mask_scale``)
    with a blur of itself or black (``mask_fill``); ``align`` warps the face
    so the eyes sit level at fixed positions. Either needs FaceMesh's landmarks
    (``mesh_runtime``: the landmark model alone on a region from the detector's box and
    eyes, or MediaPipe's whole graph); a face that cannot be meshed (the landmark
    model's face score < 0.5, or FaceMesh finds no face) is kept unaligned or dropped
    (``on_mesh_miss``).
    """

    def __init__(
        self, cfg: PipelineConfig | None = None, embedder: OnnxEmbedder | None = None
    ) -> None:
        self.cfg = cfg or PipelineConfig()
        self.detector = make_detector(self.cfg.detector, self.cfg.models_dir)
        self.embedder = embedder or get_embedder(
            self.cfg.model, self.cfg.models_dir, self.cfg.threads, self.cfg.ort_spinning
        )
        self.mesher: FaceMesher | LandmarkMesher | None = None
        if self.cfg.mesh or self.cfg.align:
            if self.cfg.mesh_runtime == "mediapipe":
                self.mesher = FaceMesher(self.cfg.mesh_margin)
            else:
                directory = models_dir(self.cfg.models_dir)
                self.mesher = LandmarkMesher(str(landmark_model_path(directory)))

    @property
    def model_id(self) -> str:
        """The embedder's id (name + weights hash) and ``crop_tag``, e.g.
        ``sface-338578e8+lm-blur1.4``: what a vector is comparable with. An edge and a
        classifier that disagree on the crop get a ``wrong_model`` error, not quietly
        worse answers (docs/protocol.md)."""
        return f"{self.embedder.model_id}+{crop_tag(self.cfg)}"

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces with boxes and quality only (no crops, no vectors); none in a frame that
        cannot hold one (``as_bgr``)."""
        image = as_bgr(frame)
        if image is None:
            return []
        frame = image
        t0 = time.perf_counter()
        found = self.detector.detect_points(frame)
        quality = [Quality.measure(frame, box) for box, _ in found]
        detect_ms = _ms(t0)
        return [
            Face(box=b, index=i, points=p, quality=q, stages={"detect": detect_ms})
            for i, ((b, p), q) in enumerate(zip(found, quality, strict=True))
        ]

    def prepare(self, frame: np.ndarray, face: Face) -> bool:
        """Fill ``face.crop`` (and landmarks/mask); ``False`` if the face is to be dropped."""
        size = self.embedder.input_size
        landmarks = face.landmarks  # a followed face comes meshed (models.follow)
        if self.mesher is not None:
            if not face.meshed:
                t0 = time.perf_counter()
                landmarks = self.mesher.landmarks(frame, face.box, face.points)
                face.stages["mesh"] = _ms(t0)
            if landmarks is None and self.cfg.on_mesh_miss == "drop":
                return False
        t0 = time.perf_counter()
        face.landmarks = landmarks
        if landmarks is not None and self.cfg.align:
            m = alignment_matrix(landmarks, size)
            crop = cv2.warpAffine(
                frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            face.aligned = True
            warped_points = landmarks @ m[:, :2].T + m[:, 2]
        else:
            crop = square_crop(frame, face.box, size)
            side = max(face.box[2], face.box[3])
            s = size / float(side)
            x0 = face.box[0] + face.box[2] / 2.0 - side / 2.0
            y0 = face.box[1] + face.box[3] / 2.0 - side / 2.0
            warped_points = (
                (landmarks - np.array([x0, y0], np.float32)) * s if landmarks is not None else None
            )
        if self.cfg.mesh and warped_points is not None:
            mask = oval_mask(crop.shape, warped_points, self.cfg.mask_scale)
            if self.cfg.mask_fill == "blur":
                background = blurred(crop)
                cv2.copyTo(crop, mask, background)
                crop = background
            else:
                crop = cv2.bitwise_and(crop, crop, mask=mask)
            face.mask = mask
        face.crop = crop
        face.stages["align"] = _ms(t0)
        return True

    def get(
        self,
        frame: np.ndarray,
        keep: Callable[[Face], bool] | None = None,
        find: Callable[[np.ndarray], list[Face]] | None = None,
    ) -> list[Face]:
        """All faces of ``frame`` with crops and embeddings (one embedder call per frame);
        with ``keep``, only the detected faces it says are worth meshing and embedding.
        ``find`` (default ``detect``) finds them in the BGR frame (``models.follow``)."""
        image = as_bgr(frame)
        if image is None:  # empty, tiny or not an image: no face in it
            return []
        frame = image
        found = (find or self.detect)(frame)
        if keep is not None:
            found = [f for f in found if keep(f)]
        faces = [f for f in found if self.prepare(frame, f)]
        self.embed(faces)
        return faces

    def embed(self, faces: list[Face]) -> None:
        if not faces:
            return
        vectors = self.embedder.embed([f.crop for f in faces if f.crop is not None])
        for face, vec in zip(faces, vectors, strict=True):
            face.embedding = vec
            face.model_id = self.model_id
            face.stages["embed"] = self.embedder.last_ms

    def close(self) -> None:
        if self.mesher is not None:
            self.mesher.close()


@dataclass
class CropsOnly:
    """Stands in for an embedder where only crops are wanted: ``FacePipeline`` makes
    crops of ``input_size`` and ``prepare`` never calls an embedder."""

    input_size: int
    model_id: str = "crops-only"
    dim: int = 0
    last_ms: float = 0.0


def face_crops(
    folder: Path, size: int, count: int, cfg: PipelineConfig | None = None
) -> list[np.ndarray]:
    """Up to ``count`` crops of ``size`` px as the edge makes them (detect → mesh →
    align), the largest face of each photo, photos spread over the people of ``folder``
    (``spread_photos``)."""
    pipeline = FacePipeline(cfg or PipelineConfig(), embedder=CropsOnly(size))
    crops: list[np.ndarray] = []
    try:
        for f in spread_photos(folder):
            frame = cv2.imread(str(f), cv2.IMREAD_COLOR)
            faces = [] if frame is None else pipeline.detect(frame)
            if faces and pipeline.prepare(frame, faces[0]) and faces[0].crop is not None:
                crops.append(faces[0].crop)
            if len(crops) == count:
                break
    finally:
        pipeline.close()
    return crops
