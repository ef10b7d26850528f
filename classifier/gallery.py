"""The gallery: known people's photos, embedded with the same pipeline as the edge.

Layout: ``<root>/<person_name>/[<subdir>/…]<image>``. Every image goes through
``FacePipeline``; a file that is not an image, does not decode, or holds no face is
skipped with a warning and counted, never a crash. When a photo holds several faces
the largest is taken (a gallery photo is of its person).

Embeddings are cached per file (keyed by path, size and mtime, for the model id and
only the settings that change a vector: ``models.pipeline.vector_settings``), so a
restart with an unchanged gallery embeds nothing, and with a ``LazyPipeline`` loads
no model either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np

from facewire.config.schema import PipelineConfig
from facewire.models import Face, FacePipeline
from facewire.models.embedders import OnnxEmbedder
from facewire.models.files import is_photo, list_files, list_photos, read_photo
from facewire.models.pipeline import pipeline_model_id, vector_settings

log = logging.getLogger("facewire.gallery")


@dataclass
class Gallery:
    """Unit-norm vectors with one identity label each."""

    vectors: np.ndarray  # (n, dim) float32
    labels: list[str]
    paths: list[str]
    model_id: str
    skipped: dict[str, str] = field(default_factory=dict)  # path → reason

    @property
    def names(self) -> list[str]:
        return sorted(set(self.labels))

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @property
    def version(self) -> str:
        """Changes whenever a vector or label changes."""
        h = hashlib.sha256(self.model_id.encode())
        h.update("\n".join(self.labels).encode())
        h.update(np.ascontiguousarray(self.vectors).tobytes())
        return h.hexdigest()[:12]

    def skip_counts(self) -> dict[str, int]:
        return dict(Counter(self.skipped.values()))


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR; ``ValueError`` with a reason when it can't be (or is
    too large: ``models.files.read_photo``)."""
    return read_photo(path)


def iter_people(
    root: Path, subdir: str = "", photos_only: bool = False
) -> Iterator[tuple[str, Path]]:
    """(person, file) for every file below ``root/<person>/[subdir/]``, sorted
    (``list_files``: hidden files skipped, links out of a person's folder not followed;
    a ``<person>`` folder itself may be a link, but only to a folder inside ``root``).
    ``subdir`` picks one split of a ``<person>/{train,test}/`` layout; ``photos_only``
    leaves out what is no photo."""
    if not root.is_dir():
        raise FileNotFoundError(f"gallery folder not found: {root}")
    listing = list_photos if photos_only else list_files
    base = root.resolve()
    for person_dir in sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        # a person folder linked to somewhere else would enrol whoever is there as them
        if person_dir.is_symlink() and not person_dir.resolve().is_relative_to(base):
            log.warning("not following %s: it leads out of %s", person_dir, root)
            continue
        files_dir = person_dir / subdir if subdir else person_dir
        for f in listing(files_dir, person_dir.resolve()):
            yield person_dir.name, f


class LazyPipeline:
    """A ``FacePipeline`` made on first use: a gallery whose photos are all in the
    cache loads no model at all (a restart is then ready in about a second)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.model_id = pipeline_model_id(cfg)
        self._pipeline: FacePipeline | None = None

    @property
    def pipeline(self) -> FacePipeline:
        if self._pipeline is None:
            self._pipeline = FacePipeline(self.cfg)
        return self._pipeline

    @property
    def loaded(self) -> bool:
        return self._pipeline is not None

    @property
    def embedder(self) -> OnnxEmbedder:
        return self.pipeline.embedder

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.pipeline.detect(image)

    def prepare(self, image: np.ndarray, face: Face) -> bool:
        return self.pipeline.prepare(image, face)

    def embed(self, faces: list[Face]) -> None:
        self.pipeline.embed(faces)

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None


AnyPipeline: TypeAlias = "FacePipeline | LazyPipeline"


def _pipeline_key(pipeline: AnyPipeline) -> str:
    return json.dumps(vector_settings(pipeline.cfg), sort_keys=True)


class EmbeddingCache:
    """One ``.npz`` per gallery: file stamp → vector (or skip reason)."""

    def __init__(self, path: Path | None, key: str) -> None:
        self.path = path
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.entries: dict[str, tuple[str, np.ndarray | None, str]] = {}
        self.hits = 0
        if path and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    if str(z["key"]) == self.key:
                        stamps, reasons, vecs = z["stamps"], z["reasons"], z["vectors"]
                        for stamp, reason, vec in zip(stamps, reasons, vecs, strict=True):
                            self.entries[str(stamp)] = (
                                str(stamp),
                                None if reason else vec,
                                str(reason),
                            )
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable gallery cache %s: %s", path, exc)

    @staticmethod
    def stamp(f: Path) -> str:
        st = f.stat()
        return f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, stamp: str) -> tuple[np.ndarray | None, str] | None:
        hit = self.entries.get(stamp)
        if hit is None:
            return None
        self.hits += 1
        return hit[1], hit[2]

    def put(self, stamp: str, vec: np.ndarray | None, reason: str) -> None:
        self.entries[stamp] = (stamp, vec, reason)

    def save(self, dim: int, keep: set[str]) -> None:
        if not self.path:
            return
        rows = [e for s, e in self.entries.items() if s in keep]
        vecs = (
            np.stack([e[1] if e[1] is not None else np.zeros(dim, np.float32) for e in rows])
            if rows
            else np.zeros((0, dim), np.float32)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part.npz")
        np.savez(
            tmp,
            key=np.array(self.key),
            stamps=np.array([e[0] for e in rows]),
            reasons=np.array([e[2] for e in rows]),
            vectors=vecs.astype(np.float32),
        )
        tmp.replace(self.path)


def embed_file(pipeline: AnyPipeline, f: Path) -> tuple[np.ndarray | None, str]:
    """The vector of the largest face in ``f``, or ``(None, reason)``."""
    if not is_photo(f):
        return None, "not an image file"
    try:
        image = read_image(f)
    except ValueError as exc:
        return None, f"unreadable: {exc}"
    faces = pipeline.detect(image)
    for face in faces:  # largest first; take the first one the pipeline keeps
        if pipeline.prepare(image, face):
            pipeline.embed([face])
            assert face.embedding is not None
            return face.embedding, ""
    return None, "no face found" if not faces else "face could not be meshed"


def build_gallery(
    root: Path,
    pipeline: AnyPipeline,
    cache_path: Path | None = None,
    progress: bool = True,
    subdir: str = "",
) -> Gallery:
    """Embed every photo below ``root`` (see the module doc) into a ``Gallery``."""
    from tqdm import tqdm

    files = list(iter_people(Path(root), subdir))
    cache = EmbeddingCache(cache_path, _pipeline_key(pipeline))
    vectors: list[np.ndarray] = []
    labels: list[str] = []
    paths: list[str] = []
    skipped: dict[str, str] = {}
    stamps: set[str] = set()
    t0 = time.perf_counter()
    bar = tqdm(files, desc="gallery", unit="img", disable=not progress, leave=False)
    for person, f in bar:
        stamp = EmbeddingCache.stamp(f)
        stamps.add(stamp)
        cached = cache.get(stamp)
        vec, reason = cached if cached is not None else embed_file(pipeline, f)
        if cached is None:
            cache.put(stamp, vec, reason)
        if vec is None:
            skipped[str(f)] = reason
            log.warning("gallery: skipped %s (%s)", f, reason)
            continue
        vectors.append(vec)
        labels.append(person)
        paths.append(str(f))
    bar.close()
    dim = len(vectors[0]) if vectors else pipeline.embedder.dim
    if cache_path is not None:
        cache.save(dim, stamps)
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    gallery = Gallery(matrix, labels, paths, pipeline.model_id, skipped)
    log.info(
        "gallery %s: %d vectors, %d identities, %d skipped %s, %d from cache, %.1f s",
        root,
        len(labels),
        len(gallery.names),
        len(skipped),
        gallery.skip_counts(),
        cache.hits,
        time.perf_counter() - t0,
    )
    return gallery
