"""Where model files live and how they are identified."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
#: photos the model tools read (export checks, crop helpers)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp"})


def spread_photos(folder: Path, count: int) -> list[Path]:
    """The photos under ``folder``, sorted, thinned to about ``2 × count`` taken evenly
    (so they spread over the people of a ``<person>/`` folder)."""
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return files[:: max(1, len(files) // (count * 2))]


def models_dir(configured: str = "") -> Path:
    """``configured``, else ``$FACEWIRE_MODELS_DIR``, else this package's folder."""
    return Path(configured or os.environ.get("FACEWIRE_MODELS_DIR") or PACKAGE_DIR)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def read_sidecar(model: Path) -> dict[str, Any]:
    p = sidecar_path(model)
    return json.loads(p.read_text()) if p.exists() else {}


def write_sidecar(model: Path, info: dict[str, Any]) -> None:
    sidecar_path(model).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def weights_hash(model: Path) -> str:
    """sha256 of a model file, from its sidecar when that is current (saves re-hashing)."""
    info = read_sidecar(model)
    st = model.stat()
    if info.get("sha256") and info.get("size") == st.st_size:
        return str(info["sha256"])
    return sha256(model)
