"""Embedders: an aligned face crop in, an L2-normalised float32 vector out.

``get_embedder(name)`` routes a model name to its wrapper (like a model zoo); each
wrapper owns its preprocessing so the edge and the gallery can't disagree on it.

>>> from facewire.models.embedders import available
>>> sorted(available())
['clip-vit-b32', 'clip-vit-b32-int8', 'sface']
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from facewire.models.files import models_dir, read_sidecar, weights_hash

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


class ModelFileMissing(FileNotFoundError):
    """A model file is not there; the message says which command makes it."""


class ModelFileBroken(FileNotFoundError):
    """A model file is there but does not load (truncated, corrupt, not ONNX); the
    message says which file, why, and which command makes it again."""


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


SPINNING = ("off", "run", "on")


def session_options(threads: int = 0, spinning: str = "run"):  # -> onnxruntime.SessionOptions
    """ONNX Runtime options for the embedders.

    ``spinning`` is what the intra-op worker threads do while they wait for work:
    ``run`` (default) spin while a run is in progress and stop at its end; ``off``
    sleep between ops; ``on`` (ONNX Runtime's default) keep spinning for a while after
    each run, which steals the CPU the next frame's detector and mesher need on a
    2-core device.
    """
    import onnxruntime as ort

    if spinning not in SPINNING:
        raise ValueError(f"spinning must be one of {SPINNING}, not {spinning!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry(
        "session.intra_op.allow_spinning", "0" if spinning == "off" else "1"
    )
    if spinning == "run":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3  # warnings about the graph are not the user's business
    return opts


#: SFace's published cosine threshold (OpenCV Zoo), the usual one for aligned faces.
SFACE_THRESHOLD = 0.363
#: What a model without a default of its own, or a matcher not calibrated, uses.
GENERIC_THRESHOLD = SFACE_THRESHOLD
#: SFace's default on our own crops (``crop_tag``), where measured: the lowest threshold
#: (0.005 steps) at which each person of the sample alone as the gallery names at most
#: a third of the default target FPIR (1 %) of everyone else's photos, since a gallery
#: too small to calibrate still holds a few people (docs/benchmarks.md). Other crops
#: keep SFace's own.
SFACE_CROP_THRESHOLDS = {"lm-blur1.4": 0.40}


class OnnxEmbedder:
    """Runs one ONNX face model; subclasses say how crops become its input tensor.

    ``default_threshold``: the model's own cosine threshold, used when the gallery is
    too small to calibrate one (``search.threshold: auto``), unless the model file's
    sidecar carries a measured one (``default_threshold``) or ``crop_thresholds`` one
    measured on a crop of ours: ``fallback_threshold`` decides, without loading it.
    """

    name = "onnx"
    input_size = 112
    dim = 0
    default_threshold = GENERIC_THRESHOLD
    crop_thresholds: ClassVar[dict[str, float]] = {}
    #: rewrite the graph's PRelu ops without branches when loading (``rewrites``)
    rewrite_prelu: ClassVar[bool] = False
    #: off: every wrapper runs its file as shipped (``facewire bench edge --as-shipped``)
    rewrites_enabled: ClassVar[bool] = True

    def __init__(self, path: Path, threads: int = 0, spinning: str = "run") -> None:
        import onnxruntime as ort

        self.path = path
        source: str | bytes = str(path)
        self.rewritten = 0  # ops the graph runs in another, equal form (``rewrites``)
        if self.rewrite_prelu and OnnxEmbedder.rewrites_enabled:
            import onnx

            from facewire.models.rewrites import branch_free_prelu

            model = onnx.load(str(path))
            self.rewritten = branch_free_prelu(model)
            if self.rewritten:
                source = model.SerializeToString()
        self.session = ort.InferenceSession(
            source,
            sess_options=session_options(threads, spinning),
            providers=["CPUExecutionProvider"],
        )
        self._input = self.session.get_inputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.model_id = file_model_id(self.name, path)
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
    default_threshold = SFACE_THRESHOLD
    crop_thresholds = SFACE_CROP_THRESHOLDS
    rewrite_prelu = True  # 27 PRelu ops, its slowest on real faces

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        size = self.input_size
        batch = np.empty((len(crops), 3, size, size), np.float32)
        for i, crop in enumerate(crops):
            if crop.shape[:2] != (size, size):
                crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
            batch[i] = crop[:, :, ::-1].transpose(2, 0, 1)  # BGR → RGB, HWC → CHW
        return batch


# CLIP's pixel normalisation as a lookup table: LUT[c, v] is channel c's value for the
# byte v, computed the way transformers' CLIPImageProcessor does (v * 1/255 in float64,
# cast to float32, then (x - mean) / std in float32), so the result is bit-identical
# and a table lookup is cheaper than the arithmetic.
_CLIP_LUT = (
    (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)[None, :] - CLIP_MEAN[:, None]
) / CLIP_STD[:, None]

_PIL_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit resampling


def _pil_bicubic_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bicubic (a = -0.5) taps for one axis: ``(first index, int32 weights)``.

    A transcription of Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``
    (libImaging/Resample.c): the kernel is widened by the scale factor when shrinking
    (antialiasing, which OpenCV's INTER_CUBIC does not do), weights are normalised
    per output pixel and turned into 22-bit fixed point.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    # C's (int) truncates toward zero; astype(int64) does the same
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    x = (((taps[None, :] + xmin[:, None]) - center[:, None]) + 0.5) * (1.0 / filterscale)
    x = np.abs(x)
    a = -0.5
    w = np.where(
        x < 1.0,
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
        np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0),
    )
    w[taps[None, :] >= xmax[:, None]] = 0.0
    total = np.zeros(out_size)
    for j in range(ksize):  # sequential sum, as in C (keeps the last bit identical)
        total += w[:, j]
    w = np.divide(w, total[:, None], out=w, where=total[:, None] != 0.0)
    one = float(1 << _PIL_PRECISION_BITS)
    k = np.where(w < 0, -0.5 + w * one, 0.5 + w * one).astype(np.int64)  # trunc toward 0
    return xmin, k


def _pil_resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Resize uint8 ``img`` (H, W, C) along ``axis`` (1 = width, 0 = height) like Pillow."""
    in_size = img.shape[axis]
    xmin, k = _pil_bicubic_coeffs(in_size, out_size)
    src = np.moveaxis(img, axis, 0)  # the resized axis first
    acc = np.full((out_size,) + src.shape[1:], 1 << (_PIL_PRECISION_BITS - 1), np.int64)
    for j in range(k.shape[1]):
        idx = np.minimum(xmin + j, in_size - 1)  # taps past the end have weight 0
        acc += src[idx].astype(np.int64) * k[:, j].reshape((-1,) + (1,) * (src.ndim - 1))
    out = np.clip(acc >> _PIL_PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def pil_bicubic_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``PIL.Image.resize((width, height), BICUBIC)`` on a uint8 HxWxC array, without Pillow.

    Two separable passes with an 8-bit intermediate, as Pillow does, so the bytes come
    out the same as transformers' CLIPImageProcessor (which resizes with Pillow);
    OpenCV's INTER_CUBIC is another filter (a = -0.75, no antialiasing when
    shrinking). Pillow runs the horizontal pass first, except (since
    Pillow 13) when the height shrinks by more than twice as many pixels as the width;
    older Pillow differs there by a grey level or two at a few pixels.
    """
    h, w = img.shape[:2]
    vertical_first = (h - height) > 0 and (h - height) > 2 * (w - width)
    for axis in (0, 1) if vertical_first else (1, 0):
        size = height if axis == 0 else width
        if img.shape[axis] != size:
            img = _pil_resample_axis(img, size, axis)
    return img


def clip_resize_shape(h: int, w: int, size: int = 224) -> tuple[int, int]:
    """(height, width) after scaling the shortest side to ``size``, as CLIPImageProcessor
    computes it (the long side is truncated, not rounded)."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    return (new_long, size) if w <= h else (size, new_long)


def clip_preprocess(crops: Sequence[np.ndarray], size: int = 224) -> np.ndarray:
    """CLIP's own preprocessing without transformers: shortest side → ``size`` (Pillow's
    bicubic), centre crop, BGR → RGB, scale to 0..1, normalise with CLIP's mean/std.
    NCHW float32, identical to ``CLIPImageProcessor()`` on the same RGB pixels.

    Crops from the face pipeline are already ``size`` × ``size``, so only the lookup
    table runs; other sizes are resized the way Pillow does it.
    """
    batch = np.empty((len(crops), 3, size, size), np.float32)
    for i, crop in enumerate(crops):
        if crop.ndim == 2:
            crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR)
        elif crop.shape[2] == 4:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR)
        if crop.dtype != np.uint8:
            raise TypeError(f"clip_preprocess wants uint8 BGR crops, got {crop.dtype}")
        h, w = crop.shape[:2]
        nh, nw = clip_resize_shape(h, w, size)
        if (nh, nw) != (h, w):
            crop = pil_bicubic_resize(crop, nw, nh)
        top, left = (nh - size) // 2, (nw - size) // 2
        rgb = crop[top : top + size, left : left + size, ::-1]
        for c in range(3):
            batch[i, c] = _CLIP_LUT[c][rgb[:, :, c]]
    return batch


class ClipEmbedder(OnnxEmbedder):
    """CLIP ViT-B/32 image tower + projection (512-d), exported to ONNX."""

    name = "clip-vit-b32"
    input_size = 224

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return clip_preprocess(crops, self.input_size)


# name → (file under models/, wrapper, how to make the file)
_REGISTRY: dict[str, tuple[str, Callable[[Path, int, str], OnnxEmbedder], str]] = {
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


def file_model_id(name: str, path: Path) -> str:
    """``<name>[-random]-<sha8>``: what a model file's vectors are comparable with,
    read from the file (and its sidecar) without loading it."""
    tag = "-random" if read_sidecar(path).get("random_init") else ""
    return f"{name}{tag}-{weights_hash(path)[:8]}"


def embedder_id(name: str, directory: str = "") -> str:
    """The model id ``get_embedder(name, directory)`` would have, without loading it."""
    path = model_path(name, directory)
    if not path.exists():
        how = _REGISTRY[name][2]
        raise ModelFileMissing(f"model file {path} for {name!r} is missing; make it with: {how}")
    return file_model_id(getattr(_REGISTRY[name][1], "name", name), path)


def sidecar_threshold(info: dict[str, Any]) -> float | None:
    """A model file's measured ``default_threshold`` from its sidecar, if it has one."""
    measured = info.get("default_threshold")
    if isinstance(measured, bool) or not isinstance(measured, int | float):
        return None
    return float(measured) if -1.0 <= measured <= 1.0 else None


def fallback_threshold(name: str, directory: str = "", crop: str = "") -> float:
    """The threshold for a gallery too small to calibrate, without loading the model:
    the one its file's sidecar measured, else the one measured for the model on
    ``crop``, else the model's own.

    >>> fallback_threshold("sface", crop="lm-blur1.4"), fallback_threshold("sface", crop="box")
    (0.4, 0.363)
    """
    path = model_path(name, directory)
    measured = sidecar_threshold(read_sidecar(path)) if path.exists() else None
    if measured is not None:
        return measured
    factory = _REGISTRY[name][1]
    wrapper = factory if isinstance(factory, type) else None
    if wrapper is None or not issubclass(wrapper, OnnxEmbedder):
        return GENERIC_THRESHOLD
    return wrapper.crop_thresholds.get(crop, wrapper.default_threshold)


def get_embedder(
    name: str, directory: str = "", threads: int = 0, spinning: str = "run"
) -> OnnxEmbedder:
    """The embedder for ``name``, loading its ONNX file from the models folder
    (``threads``, ``spinning``: see ``session_options``)."""
    path = model_path(name, directory)
    filename, factory, how = _REGISTRY[name]
    if not path.exists():
        raise ModelFileMissing(f"model file {path} for {name!r} is missing; make it with: {how}")
    try:
        return factory(path, threads, spinning)
    except Exception as exc:  # the parser's or the runtime's own error, whichever came first
        raise ModelFileBroken(
            f"model file {path} for {name!r} does not load ({type(exc).__name__}: {exc}); "
            f"make it again with: {how}"
        ) from exc
