"""CLIP ViT-B/32's image tower → ONNX, fp32 and int8 (``facewire models export clip``).

Needs the ``export`` extra (torch + transformers); the files it writes run on ONNX
Runtime alone, so an edge device needs neither. The steps:

1. Load ``CLIPVisionModelWithProjection`` (``clip_load``): from the model hub, a local
   copy of the hub files (``--from DIR``), or seeded random weights
   (``--random-init``), recorded in the sidecar (``random_init: true``) so that the
   model id becomes ``clip-vit-b32-random-<sha8>`` and never matches real weights.
2. Export ``clip_tower.LeanImageTower`` (the same weights and arithmetic, written for
   a lean graph) with the TorchScript exporter, ``torch.onnx.export(dynamo=False)``:
   input ``pixel_values`` (N×3×224×224, N dynamic), output ``image_embeds`` (N×512,
   not normalised; the embedder L2-normalises).
3. Quantise dynamically to int8: weights per output channel, activations uint8 at run
   time, only ``MatMul``/``Gemm`` with constant weights (the attention products
   multiply two activations and stay fp32). ``reduce_range`` stays off: the
   saturation it guards against is on x86 with AVX2 but no VNNI, not the edge's
   aarch64 or VNNI machines.
4. Check both files against the transformers model on face crops as the edge makes
   them (``clip_verify``); fp32 cosine below 0.9999 fails the export.
5. Write ``clip-vit-b32.onnx`` and ``clip-vit-b32-int8.onnx`` with JSON sidecars
   (source, opset, preprocessing, sha256, versions, the verification figures).

The alternatives measured and not taken are in docs/benchmarks.md ("Export and
quantisation choices").
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facewire.models.embedders import CLIP_MEAN, CLIP_STD, clip_preprocess
from facewire.models.files import models_dir, read_sidecar, sha256, write_sidecar
from facewire.models.tools.clip_load import (
    DEFAULT_SEED,
    HUB_NAME,
    INPUT_SIZE,
    ExportError,
    architecture,
    load_model,
)
from facewire.models.tools.clip_verify import DEFAULT_CHECK_IMAGES, check_images, verify

log = logging.getLogger("facewire.models.export")

FP32_FILE = "clip-vit-b32.onnx"
INT8_FILE = "clip-vit-b32-int8.onnx"
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on; ORT ≥ 1.14 runs it
QUANT_OP_TYPES = ("MatMul", "Gemm")


@dataclass
class ExportResult:
    fp32: Path
    int8: Path | None
    fp32_info: dict[str, Any]
    int8_info: dict[str, Any] | None


def export_onnx(model: Any, target: Path, opset: int = DEFAULT_OPSET) -> None:
    """TorchScript-based ``torch.onnx.export`` of the lean tower, dynamic batch axis, one file."""
    import onnx
    import torch

    from facewire.models.tools.clip_tower import LeanImageTower

    dummy = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    part = target.with_name(target.name + ".part")
    with warnings.catch_warnings():
        # "legacy exporter" deprecation, and the tracer's note that the image-size check
        # in CLIP's embeddings is baked in: the size is fixed at 224, only N varies.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                LeanImageTower(model).eval(),
                (dummy,),
                str(part),
                input_names=["pixel_values"],
                output_names=["image_embeds"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    onnx.checker.check_model(str(part))  # by path: works for files over 2 GB too
    part.replace(target)


def _no_preprocess_nag(record: logging.LogRecord) -> bool:
    """The quantiser logs a line per tensor on the root logger (INFO) and suggests
    shape-inference pre-processing on every call, which does nothing for this graph:
    both are dropped."""
    if record.levelno < logging.WARNING:
        return False
    return not str(record.msg).startswith("Please consider to run pre-processing")


def quantize_int8(
    fp32: Path, target: Path, op_types: tuple[str, ...] = QUANT_OP_TYPES, per_channel: bool = True
) -> None:
    """Dynamic int8 quantisation of the weights of ``op_types`` (activations at run time).

    Saved as quantised, not pre-optimised: ONNX Runtime fuses the integer MatMuls itself
    when a session starts, so the file stays portable."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    part = target.with_name(target.name + ".part")
    root = logging.getLogger()
    root.addFilter(_no_preprocess_nag)
    try:
        quantize_dynamic(
            str(fp32),
            str(part),
            op_types_to_quantize=list(op_types),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=False,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.removeFilter(_no_preprocess_nag)
    part.replace(target)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def export_clip(
    out_dir: Path | None = None,
    source_dir: Path | None = None,
    hub_name: str = HUB_NAME,
    random_init: bool = False,
    seed: int = DEFAULT_SEED,
    opset: int = DEFAULT_OPSET,
    images_dir: Path | None = None,
    image_count: int = 8,
    int8: bool = True,
    force: bool = False,
    check_architecture: bool = True,
) -> ExportResult:
    """Export, verify and quantise; returns the written files and their sidecars."""
    out_dir = out_dir or models_dir()
    fp32_path, int8_path = out_dir / FP32_FILE, out_dir / INT8_FILE
    if random_init and not force:
        for p in (fp32_path, int8_path):
            if p.exists() and not read_sidecar(p).get("random_init", False):
                raise ExportError(
                    f"{p} holds real weights; refusing to replace it with random ones (use --force)"
                )
    loaded = load_model(
        source_dir, hub_name, random_init, seed, check_architecture=check_architecture
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to %s (opset %d)", loaded.source, fp32_path, opset)
    export_onnx(loaded.model, fp32_path, opset)
    if int8:
        log.info(
            "quantising to %s (%s, int8 weights per channel)", int8_path, "/".join(QUANT_OP_TYPES)
        )
        quantize_int8(fp32_path, int8_path)
    if images_dir is None:
        images_dir = next((d for d in DEFAULT_CHECK_IMAGES if d.is_dir()), None)
    crops, described = check_images(images_dir, image_count)
    pixels = clip_preprocess(crops, INPUT_SIZE)
    fp32_check, int8_check = verify(
        loaded.model, fp32_path, int8_path if int8 else None, pixels, described
    )

    common: dict[str, Any] = {
        "source": loaded.source,
        "hub_name": hub_name,
        "random_init": loaded.random_init,
        "opset": opset,
        "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
        "input": "pixel_values: N x 3 x 224 x 224 float32, RGB, CLIP-normalised",
        "output": "image_embeds: N x 512 float32, not normalised",
        "input_size": INPUT_SIZE,
        "dim": int(loaded.model.config.projection_dim),
        "mean": [float(x) for x in CLIP_MEAN],
        "std": [float(x) for x in CLIP_STD],
        "preprocess": "shortest side to 224 (Pillow bicubic), centre crop, RGB, /255, (x-mean)/std",
        "architecture": architecture(loaded.model.config),
        "versions": versions(),
    }
    if loaded.random_init:
        common["seed"] = loaded.seed
        common["warning"] = "RANDOM weights: for tests and benchmarks only, embeddings mean nothing"
    if loaded.revision:
        common["revision"] = loaded.revision
    if loaded.preprocessor:
        common["checkpoint_preprocessor"] = loaded.preprocessor

    fp32_info = {
        "name": "clip-vit-b32",
        **common,
        "sha256": sha256(fp32_path),
        "size": fp32_path.stat().st_size,
        "verification": fp32_check,
    }
    write_sidecar(fp32_path, fp32_info)
    int8_info = None
    if int8:
        int8_info = {
            "name": "clip-vit-b32-int8",
            **common,
            "quantization": {
                "method": "onnxruntime.quantization.quantize_dynamic",
                "op_types": list(QUANT_OP_TYPES),
                "weights": "int8, symmetric, per output channel",
                "activations": "uint8, per tensor, computed at run time",
                "not_quantised": "activation x activation MatMuls (attention)",
                "patch_embedding": "patches -> MatMul, quantised",
                "graph": "lean tower: fused QKV, class-token-only last block",
                "from_sha256": fp32_info["sha256"],
            },
            "sha256": sha256(int8_path),
            "size": int8_path.stat().st_size,
            "verification": int8_check,
        }
        write_sidecar(int8_path, int8_info)
    return ExportResult(fp32_path, int8_path if int8 else None, fp32_info, int8_info)


def human_summary(result: ExportResult) -> str:
    lines = []
    for path, info in ((result.fp32, result.fp32_info), (result.int8, result.int8_info)):
        if path is None or info is None:
            continue
        v = info["verification"]
        tag = "  RANDOM weights (tests only)" if info["random_init"] else ""
        size = f"{info['size'] / 1e6:.1f} MB"
        lines.append(f"{info['name']:<18} {path}  {size}  sha256 {info['sha256'][:12]}{tag}")
        diff = v.get("max_abs_diff", v.get("max_abs_diff_normalised"))
        lines.append(
            f"{'':<18} vs {v['vs']} on {v['images']}: cosine min {v['cosine_min']:.6f} "
            f"median {v['cosine_median']:.6f}, max abs diff {diff:.2e}, "
            f"batch 1 vs N cosine {v['batch1_vs_batchN_cosine_min']:.6f}"
        )
    return "\n".join(lines)
