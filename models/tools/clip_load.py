"""Loading CLIP ViT-B/32's image tower for export: from the model hub, a local copy of
the hub files, or seeded random weights of the same architecture (needs the ``export``
extra: torch + transformers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facewire.models.embedders import CLIP_MEAN, CLIP_STD

HUB_NAME = "openai/clip-vit-base-patch32"
INPUT_SIZE = 224
DEFAULT_SEED = 0
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
