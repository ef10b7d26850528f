"""Where model files live and how they are identified; which files are photos."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("facewire.models")

PACKAGE_DIR = Path(__file__).resolve().parent
#: what counts as a photo wherever photos are listed (OpenCV decodes all of them)
IMAGE_SUFFIXES = frozenset(
    {".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)


#: The most pixels a photo may have (a 48-megapixel phone photo is 8000×6000): its size
#: is read from the file's header before anything is decoded, so a small file that
#: would decode into gigabytes is refused (as 20000×20000 pixels are).
MAX_PIXELS = 50_000_000
#: The largest photo file read at all.
MAX_BYTES = 64 * 1024 * 1024


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's first bytes (JPEG, PNG, GIF, BMP, WebP, PNM;
    ``None``: not one of those, or the header is cut short).

    >>> png = b"\\x89PNG\\r\\n\\x1a\\n\\0\\0\\0\\rIHDR"
    >>> image_size(png + (640).to_bytes(4, "big") + (480).to_bytes(4, "big"))
    (640, 480)
    >>> image_size(b"P5\\n# a comment\\n92 112\\n255\\n")
    (92, 112)
    >>> image_size(b"not an image") is None
    True
    """
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", head[6:10])
            return int(w), int(h)
        if head.startswith(b"BM"):
            w, h = struct.unpack("<ii", head[18:26])
            return abs(int(w)), abs(int(h))
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(head)
        if head[:1] == b"P" and head[1:2] in b"123456":
            return _pnm_size(head)
    except struct.error:
        return None
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        # start of frame (baseline, progressive, …): not DHT (C4), JPG (C8), DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return int(w), int(h)
        i += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    return None


def _pnm_size(head: bytes) -> tuple[int, int] | None:
    words: list[bytes] = []
    for line in head[2:].split(b"\n"):
        words += line.split(b"#", 1)[0].split()
        if len(words) >= 2:
            return int(words[0]), int(words[1])
    return None


def read_photo(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a photo to BGR; ``ValueError`` with the reason when it can't be or is too
    large (checked on the header, before decoding; a format whose header isn't read
    here is decoded under OpenCV's own limit)."""
    import cv2  # the photo listing above must not need OpenCV

    size = path.stat().st_size
    if size == 0:
        raise ValueError("empty file")
    if size > MAX_BYTES:
        raise ValueError(f"too large: {size / 2**20:.0f} MB > {MAX_BYTES // 2**20} MB")
    data = np.fromfile(str(path), dtype=np.uint8)
    dims = image_size(data[:65536].tobytes())
    if dims is not None and dims[0] * dims[1] > max_pixels:
        raise ValueError(f"too large: {dims[0]}×{dims[1]} pixels > {max_pixels / 1e6:g} megapixels")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable image")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ValueError(
            f"too large: {image.shape[1]}×{image.shape[0]} pixels > {max_pixels / 1e6:g} megapixels"
        )
    return image


def is_photo(path: Path) -> bool:
    """
    >>> is_photo(Path("a/B.JPG")), is_photo(Path("notes.txt"))
    (True, False)
    """
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_files(folder: Path, within: Path | None = None) -> list[Path]:
    """Every file below ``folder``, sorted. Hidden files and folders (``.name``) are
    left out, symlinked folders are not entered (no loops, no repeats) and symlinked
    files are kept only when they lead to a file inside ``within`` (default:
    ``folder``)."""
    base = Path(within if within is not None else folder).resolve()
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


def list_photos(folder: Path, within: Path | None = None) -> list[Path]:
    """The photos (``IMAGE_SUFFIXES``) among ``list_files(folder, within)``."""
    return [f for f in list_files(folder, within) if is_photo(f)]


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
