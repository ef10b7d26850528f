"""Embedders: an aligned face crop in, an L2-normalised float32 vector out.

``get_embedder(name)`` routes a model name to its wrapper (like a model zoo); each
wrapper owns its preprocessing so the edge and the gallery can't disagree on it.

>>> from models.embedders import available
>>> sorted(available())
['clip-vit-b32', 'clip-vit-b32-int8', 'sface']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from models.files import models_dir, read_sidecar, weights_hash

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


class ModelFileMissing(FileNotFoundError):
    """A model file is not there; the message says which command makes it."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def session_options(threads: int = 0):  # -> onnxruntime.SessionOptions
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about the graph are not the user's business
    return opts


class OnnxEmbedder:
    """Runs one ONNX face model; subclasses say how crops become its input tensor."""

    name = "onnx"
    input_size = 112
    dim = 0

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        self.path = path
        self.session = ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self._input = self.session.get_inputs()[0].name
        info = read_sidecar(path)
        self.info = info
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        tag = "-random" if info.get("random_init") else ""
        self.model_id = f"{self.name}{tag}-{weights_hash(path)[:8]}"
        self.last_ms = 0.0

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of BGR crops in one call: ``(n, dim)`` unit-norm float32."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        t0 = time.perf_counter()
        batch = self.preprocess(crops)
        out = self.session.run(None, {self._input: batch})[0]
        vecs = l2_normalise(out.reshape(len(crops), -1))
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return vecs


class SFaceEmbedder(OnnxEmbedder):
    """OpenCV Zoo's SFace (128-d); the graph scales pixels itself, it wants RGB 0..255."""

    name = "sface"
    input_size = 112

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        size = self.input_size
        batch = np.empty((len(crops), 3, size, size), np.float32)
        for i, crop in enumerate(crops):
            if crop.shape[:2] != (size, size):
                crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
            batch[i] = crop[:, :, ::-1].transpose(2, 0, 1)  # BGR → RGB, HWC → CHW
        return batch


def clip_preprocess(crops: Sequence[np.ndarray], size: int = 224) -> np.ndarray:
    """CLIP's own preprocessing without transformers: shortest side → ``size`` (bicubic),
    centre crop, BGR → RGB, scale to 0..1, normalise with CLIP's mean/std. NCHW float32.
    """
    batch = np.empty((len(crops), 3, size, size), np.float32)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        if (nh, nw) != (h, w):
            crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_CUBIC)
        top, left = (nh - size) // 2, (nw - size) // 2
        crop = crop[top : top + size, left : left + size, ::-1]
        pixels = crop.astype(np.float32) * (1.0 / 255.0)
        batch[i] = ((pixels - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    return batch


class ClipEmbedder(OnnxEmbedder):
    """CLIP ViT-B/32 image tower + projection (512-d), exported to ONNX."""

    name = "clip-vit-b32"
    input_size = 224

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return clip_preprocess(crops, self.input_size)


# name → (file under models/, wrapper, how to make the file)
_REGISTRY: dict[str, tuple[str, Callable[[Path, int], OnnxEmbedder], str]] = {
    "sface": ("sface.onnx", SFaceEmbedder, "facewire models prepare sface"),
    "clip-vit-b32": (
        "clip-vit-b32.onnx",
        ClipEmbedder,
        "facewire models export clip  (needs `pip install .[export]` and the model hub "
        "once; `--random-init` builds an untrained one offline)",
    ),
    "clip-vit-b32-int8": (
        "clip-vit-b32-int8.onnx",
        ClipEmbedder,
        "facewire models export clip  (writes the int8 file beside the fp32 one)",
    ),
}


def available() -> list[str]:
    return list(_REGISTRY)


def model_path(name: str, directory: str = "") -> Path:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}")
    return models_dir(directory) / _REGISTRY[name][0]


def get_embedder(name: str, directory: str = "", threads: int = 0) -> OnnxEmbedder:
    """The embedder for ``name``, loading its ONNX file from the models folder."""
    path = model_path(name, directory)
    filename, factory, how = _REGISTRY[name]
    if not path.exists():
        raise ModelFileMissing(f"model file {path} for {name!r} is missing; make it with: {how}")
    return factory(path, threads)
