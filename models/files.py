"""Where model files live and how they are identified; which files are photos."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("facewire.models")

PACKAGE_DIR = Path(__file__).resolve().parent
#: what counts as a photo wherever photos are listed (OpenCV decodes all of them)
IMAGE_SUFFIXES = frozenset(
    {".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)


def is_photo(path: Path) -> bool:
    """
    >>> is_photo(Path("a/B.JPG")), is_photo(Path("notes.txt"))
    (True, False)
    """
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_files(folder: Path) -> list[Path]:
    """Every file below ``folder``, sorted. Hidden files and folders (``.name``) are
    left out, symlinked folders are not entered (no loops, no repeats) and symlinked
    files are kept only when they lead to a file inside ``folder``."""
    base = Path(folder).resolve()
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith("."):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(base):
                log.warning("not following %s: it leads out of %s", path, folder)
                continue
            found.append(path)
    return sorted(found)


def list_photos(folder: Path) -> list[Path]:
    """The photos (``IMAGE_SUFFIXES``) among ``list_files(folder)``."""
    return [f for f in list_files(folder) if is_photo(f)]


def spread_photos(folder: Path) -> list[Path]:
    """``list_photos(folder)`` taken one person at a time: the first photo of every
    ``<person>/`` folder, then every second one, … (take the first few to cover many
    people)."""
    by_person: dict[str, list[Path]] = {}
    for f in list_photos(folder):
        by_person.setdefault(f.relative_to(folder).parts[0], []).append(f)
    rows = list(by_person.values())
    return [row[i] for i in range(max(map(len, rows), default=0)) for row in rows if i < len(row)]


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
