"""CLIP ViT-B/32's image tower → ONNX, fp32 and int8 (``facewire models export clip``).

Needs the ``export`` extra (torch + transformers); the files it writes run on ONNX
Runtime alone, so an edge device needs neither.

What it does:

1. Loads ``CLIPVisionModelWithProjection`` (vision transformer + the 768 → 512
   projection; ``image_embeds`` is what ``CLIPModel.get_image_features`` returns) from
   the model hub, from a local copy of the hub files (``--from DIR``), or builds the
   same architecture with seeded random weights (``--random-init``) for machines
   without hub access. Random weights are recorded in the sidecar
   (``random_init: true``), so the model id becomes ``clip-vit-b32-random-<sha8>`` and
   a gallery built with it never matches vectors from real weights.
2. Exports ``facewire.models.tools.clip_tower.LeanImageTower`` — the same weights and arithmetic
   written for a lean graph: patch embedding as a ``MatMul``, Q/K/V fused into one
   ``MatMul``, constant reshapes, and the last block computed for the class token
   only (the pooled output reads nothing else). −1.5 ms per int8 face here (20.4 →
   19.0 ms, alternating runs), parity unchanged. Exported with
   ``torch.onnx.export(dynamo=False)`` — the TorchScript exporter. The newer dynamo
   exporter needs the extra ``onnxscript`` package, took ~3× longer here and gave a
   graph ONNX Runtime ran no faster; both agreed with PyTorch to ~2e-6.
   Input ``pixel_values`` (N×3×224×224, N dynamic), output ``image_embeds`` (N×512,
   not normalised; the embedder L2-normalises).
3. Checks ONNX against the transformers model itself on real faces cropped as the
   edge crops them (detect → mesh → align; the photos themselves where the detector
   or landmark files are missing), preprocessed by ``models.embedders.clip_preprocess``
   (max abs difference, cosine; batch 1 vs batch N), and fails if fp32 cosine < 0.9999.
4. Quantises dynamically to int8 (``onnxruntime.quantization.quantize_dynamic``):
   weights int8 per output channel, activations uint8 quantised at run time.
   Only ``MatMul``/``Gemm`` with constant weights: the patch embedding and the 12
   blocks' QKV, output and MLP projections. The attention products (Q·Kᵀ, A·V)
   multiply two activations and stay fp32. Per-channel weight scales were more
   accurate than per-tensor at the same speed (int8 vs fp32 cosine min 0.99987 vs
   0.99981 on 16 gallery photos). ``reduce_range`` stays off: it halves the weight
   range (cosine min 0.99967) to guard against u8×s8 saturation on x86 CPUs with AVX2
   but without VNNI, not aarch64 (the edge) or VNNI machines.
   Measured and not taken (ONNX Runtime 1.32, 2 cores): ONNX Runtime's
   ``MultiHeadAttention`` in place of the transposes, Q·Kᵀ, softmax and A·V (as fast,
   less exact: 6e-4 apart); the transformer optimizer
   (``optimize_model``, model type ``clip``; it fuses Attention only on an export with
   ``attn_implementation="eager"``) gave QAttention + SkipLayerNormalization, and the
   int8 model ran 3–5 ms *slower* — SkipLayerNormalization's CPU kernel cost more than
   the Add + LayerNormalization it replaced and QAttention saved nothing at 50 tokens;
   weight-only ``MatMulNBits`` (8 or 4 bit) was 3–4× slower. ONNX Runtime applies its
   own MatMulInteger fusions (``DynamicQuantizeMatMul``) when the session starts, so
   the file stays portable and is not saved pre-optimised.
5. Writes ``clip-vit-b32.onnx`` and ``clip-vit-b32-int8.onnx`` with JSON sidecars
   (source, random_init, opset, input size, mean/std, sha256, size, versions and the
   verification figures).
"""

from __future__ import annotations

import logging
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire.models.embedders import CLIP_MEAN, CLIP_STD, clip_preprocess, l2_normalise
from facewire.models.files import IMAGE_SUFFIXES, models_dir, read_sidecar, sha256, write_sidecar

log = logging.getLogger("facewire.models.export")

HUB_NAME = "openai/clip-vit-base-patch32"
FP32_FILE = "clip-vit-b32.onnx"
INT8_FILE = "clip-vit-b32-int8.onnx"
INPUT_SIZE = 224
DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17 on; ORT ≥ 1.14 runs it
DEFAULT_SEED = 0
QUANT_OP_TYPES = ("MatMul", "Gemm")
FP32_MIN_COSINE = 0.9999
INT8_WARN_COSINE = 0.98
REPO_ROOT = Path(__file__).resolve().parent.parent
# face photos to verify on: the gallery of the checkout (or of the current folder)
DEFAULT_CHECK_IMAGES = (Path("dataset") / "gallery", REPO_ROOT / "dataset" / "gallery")
# ViT-B/32: what the file name promises and the edge's ClipEmbedder expects
VIT_B32 = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "patch_size": 32,
    "image_size": 224,
    "projection_dim": 512,
}


class ExportError(RuntimeError):
    """The export could not be done or did not verify; the message says why."""


@dataclass
class Loaded:
    model: Any  # transformers.CLIPVisionModelWithProjection, eval mode
    source: str
    random_init: bool
    seed: int | None = None
    revision: str | None = None
    preprocessor: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportResult:
    fp32: Path
    int8: Path | None
    fp32_info: dict[str, Any]
    int8_info: dict[str, Any] | None


def _require_export_extra() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ExportError(
            f"exporting CLIP needs torch and transformers ({e.name} is missing): "
            "pip install '.[export]'"
        ) from e


def architecture(config: Any) -> dict[str, Any]:
    keys = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "image_size",
        "projection_dim",
        "hidden_act",
    )
    return {k: getattr(config, k) for k in keys}


def random_model(seed: int = DEFAULT_SEED, config: Any = None) -> Any:
    """``CLIPVisionModelWithProjection`` with seeded random weights (default: ViT-B/32).

    ``CLIPVisionConfig()``'s defaults are openai/clip-vit-base-patch32's image tower, so
    the graph and its cost are those of the real model; the same seed gives the same
    weights (and the same file hash) with the same torch version.
    """
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(config or CLIPVisionConfig())
    return model.eval()


def load_model(
    source_dir: Path | None = None,
    hub_name: str = HUB_NAME,
    random_init: bool = False,
    seed: int = DEFAULT_SEED,
    local_only: bool = False,
    check_architecture: bool = True,
) -> Loaded:
    """The image tower + projection from a local copy, the hub, or random weights."""
    _require_export_extra()
    if random_init:
        loaded = Loaded(
            random_model(seed),
            f"random init (seed {seed}) of {hub_name}'s architecture",
            True,
            seed,
        )
    else:
        loaded = _load_pretrained(source_dir, hub_name, local_only)
    cfg = loaded.model.config
    if cfg.image_size != INPUT_SIZE:
        raise ExportError(
            f"the model wants {cfg.image_size}px images; the edge feeds {INPUT_SIZE}px crops"
        )
    if check_architecture:
        arch = architecture(cfg)
        wrong = {k: arch[k] for k, v in VIT_B32.items() if arch[k] != v}
        if wrong:
            raise ExportError(
                f"{loaded.source} is not a ViT-B/32 image tower ({wrong}); expected {VIT_B32}"
            )
    return loaded


def _load_pretrained(source_dir: Path | None, hub_name: str, local_only: bool) -> Loaded:
    from transformers import AutoConfig, CLIPConfig, CLIPVisionConfig, CLIPVisionModelWithProjection

    where = str(source_dir) if source_dir is not None else hub_name
    kwargs: dict[str, Any] = (
        {"local_files_only": True} if (source_dir is not None or local_only) else {}
    )
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        # a full CLIP checkpoint (text + vision) carries the projection size at the top
        if isinstance(config, CLIPConfig):
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
        elif isinstance(config, CLIPVisionConfig):
            vision = config
        else:
            raise ExportError(f"{where} holds a {type(config).__name__}, not a CLIP model")
        model, info = CLIPVisionModelWithProjection.from_pretrained(
            where, config=vision, output_loading_info=True, **kwargs
        )
    except OSError as e:
        hint = (
            "copy the hub files (config.json, model.safetensors or pytorch_model.bin, "
            "preprocessor_config.json) to a folder and pass --from DIR, or --random-init "
            "to test the export without real weights"
        )
        raise ExportError(f"could not load {where}: {e}\n{hint}") from e
    missing = list(info.get("missing_keys", [])) + [str(k) for k in info.get("mismatched_keys", [])]
    if missing:
        raise ExportError(
            f"{where}: weights missing or of the wrong shape (would be random): {missing[:5]}"
        )
    revision = getattr(config, "_commit_hash", None)
    source = (
        f"{hub_name} (model hub)" if source_dir is None else f"{hub_name} weights from a local copy"
    )
    return Loaded(model.eval(), source, False, None, revision, _read_preprocessor(where, kwargs))


def _read_preprocessor(where: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's own preprocessing settings; they must be the ones clip_preprocess uses."""
    try:
        from transformers import CLIPImageProcessor

        proc = CLIPImageProcessor.from_pretrained(where, **kwargs)
    except (OSError, ValueError):
        return {}
    mean, std = np.asarray(proc.image_mean, np.float32), np.asarray(proc.image_std, np.float32)
    size = proc.size.get("shortest_edge") if isinstance(proc.size, dict) else proc.size
    if not (np.allclose(mean, CLIP_MEAN) and np.allclose(std, CLIP_STD) and size == INPUT_SIZE):
        raise ExportError(
            f"{where}'s preprocessor (mean {mean.tolist()}, std {std.tolist()}, size {size}) "
            "differs from CLIP's, which the edge's clip_preprocess implements"
        )
    return {"image_mean": mean.tolist(), "image_std": std.tolist(), "shortest_edge": size}


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
    shape-inference pre-processing on every call; for this graph that changed neither
    the result nor the speed (measured), so both are dropped."""
    if record.levelno < logging.WARNING:
        return False
    return not str(record.msg).startswith("Please consider to run pre-processing")


def quantize_int8(
    fp32: Path, target: Path, op_types: tuple[str, ...] = QUANT_OP_TYPES, per_channel: bool = True
) -> None:
    """Dynamic int8 quantisation of the weights of ``op_types`` (activations at run time)."""
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


def check_images(folder: Path | None, count: int = 8) -> tuple[list[np.ndarray], str]:
    """``count`` face crops as the edge makes them (detect → mesh → align) from photos
    spread over ``folder``: the inputs the files will see. Where the detector or
    landmark files are missing, the photos themselves (one per person first); noise if
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
    files: list[Path] = []
    if folder is not None and folder.is_dir():
        people = sorted(p for p in folder.iterdir() if p.is_dir()) or [folder]
        per_person = [
            sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for p in people
        ]
        for rank in range(max((len(x) for x in per_person), default=0)):
            files += [x[rank] for x in per_person if rank < len(x)]
        files = files[:count]
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
