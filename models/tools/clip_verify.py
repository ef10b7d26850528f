"""Checking exported CLIP files: ONNX against the transformers model (fp32) and int8
against fp32, at batch N and batch 1, on face crops as the edge makes them."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from facewire.models.embedders import l2_normalise
from facewire.models.files import spread_photos
from facewire.models.tools.clip_load import INPUT_SIZE, ExportError

log = logging.getLogger("facewire.models.export")

FP32_MIN_COSINE = 0.9999
INT8_WARN_COSINE = 0.98
REPO_ROOT = Path(__file__).resolve().parents[2]
# face photos to verify on: the gallery of the current folder, or of the checkout
DEFAULT_CHECK_IMAGES = (Path("dataset") / "gallery", REPO_ROOT / "dataset" / "gallery")


def check_images(folder: Path | None, count: int = 8) -> tuple[list[np.ndarray], str]:
    """``count`` face crops as the edge makes them (detect → mesh → align) from photos
    spread over ``folder``: the inputs the files will see. Where the detector or
    landmark files are missing, the photos themselves (``spread_photos``); noise if
    there are no photos."""
    import cv2

    if folder is not None and folder.is_dir():
        try:
            from facewire.models.pipeline import face_crops

            edge = face_crops(folder, INPUT_SIZE, count)
        except (OSError, RuntimeError, ValueError, cv2.error) as exc:
            log.info("checking on photos, not edge crops: %s", exc)
            edge = []
        if len(edge) == count:
            return edge, f"{count} face crops (detect → mesh → align) from {folder.name}/"
    files = spread_photos(folder)[:count] if folder is not None and folder.is_dir() else []
    crops = [
        img for img in (cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files) if img is not None
    ]
    if crops:
        return (
            crops,
            f"{len(crops)} photos from {folder.name}/" if folder else f"{len(crops)} photos",
        )
    rng = np.random.default_rng(0)
    noise = [
        rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8) for _ in range(count)
    ]
    return noise, f"{count} random-noise images (no photos found)"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    from facewire.models.embedders import session_options

    return ort.InferenceSession(
        str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalise(a) * l2_normalise(b), axis=1)


def _stats(cos: np.ndarray) -> dict[str, float]:
    return {
        "cosine_min": round(float(cos.min()), 7),
        "cosine_median": round(float(statistics.median(cos.tolist())), 7),
        "cosine_mean": round(float(cos.mean()), 7),
    }


def torch_embeds(model: Any, pixels: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels)).image_embeds.numpy()


def verify(
    model: Any, fp32: Path, int8: Path | None, pixels: np.ndarray, images: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """ONNX vs PyTorch (fp32) and int8 vs fp32, batch N and batch 1."""
    ref = torch_embeds(model, pixels)
    sess = _session(fp32)
    out = sess.run(None, {"pixel_values": pixels})[0]
    singles = np.concatenate(
        [sess.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(pixels))]
    )
    fp32_check: dict[str, Any] = {
        "images": images,
        "vs": "PyTorch fp32",
        "max_abs_diff": float(np.abs(out - ref).max()),
        "batch1_vs_batchN_max_abs_diff": float(np.abs(singles - out).max()),
        "batch1_vs_batchN_cosine_min": round(float(_cosines(singles, out).min()), 7),
        **_stats(_cosines(out, ref)),
    }
    if fp32_check["cosine_min"] < FP32_MIN_COSINE:
        raise ExportError(f"ONNX fp32 does not match PyTorch: {fp32_check}")
    if int8 is None:
        return fp32_check, None
    sess8 = _session(int8)
    out8 = sess8.run(None, {"pixel_values": pixels})[0]
    singles8 = np.concatenate(
        [sess8.run(None, {"pixel_values": pixels[i : i + 1]})[0] for i in range(len(pixels))]
    )
    int8_check: dict[str, Any] = {
        "images": images,
        "vs": "ONNX fp32",
        "max_abs_diff_normalised": float(np.abs(l2_normalise(out8) - l2_normalise(out)).max()),
        # activations are quantised per tensor, i.e. per batch: a face's int8 vector
        # depends slightly on the other faces in its batch
        "batch1_vs_batchN_max_abs_diff": float(np.abs(singles8 - out8).max()),
        "batch1_vs_batchN_cosine_min": round(float(_cosines(singles8, out8).min()), 7),
        **_stats(_cosines(out8, out)),
        "vs_pytorch": _stats(_cosines(out8, ref)),
    }
    if int8_check["cosine_min"] < INT8_WARN_COSINE:
        log.warning(
            "int8 is far from fp32 (min cosine %.4f): check the quantised ops",
            int8_check["cosine_min"],
        )
    return fp32_check, int8_check
