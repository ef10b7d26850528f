"""The gallery the classifier searches: built from its folder, rebuilt when it changes.

:class:`GalleryKeeper` owns the face pipeline (made only when a photo must be embedded)
and the embedding cache; :meth:`GalleryKeeper.build` reads the folder and returns a
new :class:`~facewire.classifier.service.GalleryIndex` with its threshold chosen.
:class:`Reloader` runs it on a thread of its own whenever the folder changes
(:mod:`facewire.classifier.watch`) or ``faces/gallery/reload`` asks, then hands the
new index to the service, which swaps it in between two batches: classification
never waits for a rebuild.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import GalleryReload, GalleryReply
from facewire.bus.transport import Message
from facewire.classifier.calibrate import choose_threshold
from facewire.classifier.gallery import Gallery, LazyPipeline, build_gallery
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.classifier.watch import FolderWatch
from facewire.config.schema import ClassifierConfig
from facewire.models.embedders import GENERIC_THRESHOLD

log = logging.getLogger("facewire.classifier")


class EmptyGallery(RuntimeError):
    """The folder holds no usable face: there is nothing to search."""


def index_gallery(
    gallery: Gallery, cfg: ClassifierConfig, model_default: float = GENERIC_THRESHOLD
) -> GalleryIndex:
    """The searchable gallery, its threshold chosen (``search.threshold``: a number, or
    ``auto``: calibrated on it, else ``model_default``)."""
    chosen = choose_threshold(cfg.search, gallery.vectors, gallery.labels, model_default)
    matcher = Matcher(gallery.vectors, gallery.labels, cfg.search.k, chosen.value, cfg.search)
    cal = chosen.calibration.summary() if chosen.calibration is not None else None
    log.info("threshold %.3f (%s): %s", chosen.value, chosen.source, chosen.note)
    return GalleryIndex(
        matcher,
        gallery.model_id,
        len(gallery.names),
        len(gallery.labels),
        gallery.version,
        cal,
        chosen.source,
        chosen.note,
    )


@dataclass(frozen=True)
class Change:
    """What one rebuild did, against the gallery before it."""

    index: GalleryIndex
    added: int
    removed: int
    skipped: int
    took_ms: float

    def describe(self) -> str:
        if not (self.added or self.removed):
            return "no change"
        return f"{self.added} vectors added, {self.removed} removed"


class GalleryKeeper:
    """Builds the gallery from ``cfg.dataset`` with the cache; one caller at a time."""

    def __init__(self, cfg: ClassifierConfig, use_cache: bool = True, progress: bool = False):
        self.cfg = cfg
        self.root = Path(cfg.dataset)
        self.cache: Path | None = None
        if use_cache:
            cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else self.root / ".facewire-cache"
            self.cache = cache_dir / f"{cfg.pipeline.model}.npz"
        self.progress = progress
        self.pipeline = LazyPipeline(cfg.pipeline)
        self.gallery: Gallery | None = None
        self._lock = threading.Lock()

    def build(self) -> Change:
        """Read the folder again; ``EmptyGallery`` (the old gallery kept) if it holds
        no usable face, ``FileNotFoundError`` if it is gone."""
        with self._lock:
            t0 = time.perf_counter()
            gallery = build_gallery(self.root, self.pipeline, self.cache, self.progress)
            if not gallery.labels:
                raise EmptyGallery(
                    f"no usable face in gallery {self.root} (skipped: {gallery.skip_counts()})"
                )
            default = (
                self.pipeline.embedder.default_threshold
                if self.pipeline.loaded
                else GENERIC_THRESHOLD
            )
            index = index_gallery(gallery, self.cfg, default)
            before = Counter(self.gallery.paths) if self.gallery is not None else Counter()
            after = Counter(gallery.paths)
            self.gallery = gallery
            return Change(
                index,
                added=sum((after - before).values()),
                removed=sum((before - after).values()),
                skipped=len(gallery.skipped),
                took_ms=(time.perf_counter() - t0) * 1000.0,
            )

    def close(self) -> None:
        self.pipeline.close()


class Reloader:
    """Rebuilds the gallery on its own thread when the folder changes or a reload is
    asked for, and swaps the new index into ``service``.

    The delivery thread only queues a request (:meth:`on_request`); the folder watch
    only wakes the thread; the build, the swap and the reply happen here.
    """

    def __init__(self, keeper: GalleryKeeper, service: ClassifierService) -> None:
        self.keeper = keeper
        self.service = service
        cfg = keeper.cfg
        self.watch = FolderWatch(keeper.root, cfg.watch_settle_s) if cfg.watch else None
        self.poll_s = cfg.watch_poll_s
        self._wake = threading.Event()
        self._requests: list[str | None] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def start(self) -> Reloader:
        self.service.bus.subscribe(topics.RELOAD, self.on_request, qos=1)
        if self.watch is not None:
            self.watch.start(self._wake)
        self._thread = threading.Thread(target=self._run, name="classifier-gallery", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.watch is not None:
            self.watch.stop()
        if self._thread is not None:
            self._thread.join(10)

    def on_request(self, m: Message) -> None:
        """A ``faces/gallery/reload`` message (delivery thread: just queue it)."""
        try:
            request = GalleryReload.decode(m.payload) if m.payload else GalleryReload()
        except WireError as exc:
            log.warning("ignored a gallery reload request: %s", exc)
            return
        with self._lock:
            self._requests.append(request.request_id)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                requests, self._requests = self._requests, []
            changed = self.watch is not None and self.watch.changed()
            if requests or changed:
                self.reload(requests or [None])

    def reload(self, request_ids: list[str | None]) -> GalleryReply:
        """Rebuild now, swap, and answer each request (one build for them all)."""
        try:
            change = self.keeper.build()
        except (EmptyGallery, OSError) as exc:
            log.error("gallery not reloaded, the one in use is kept: %s", exc)
            reply = GalleryReply("reload", False, str(exc), ts=time.time())
            self._answer(reply, request_ids)
            return reply
        except Exception as exc:  # a bug must not stop the service; the old gallery stays
            log.exception("gallery reload failed; the one in use is kept")
            reply = GalleryReply("reload", False, f"{type(exc).__name__}: {exc}", ts=time.time())
            self._answer(reply, request_ids)
            return reply
        index = change.index
        self.service.swap(index)
        self.reloads += 1
        log.info(
            "gallery %s: %s (%d identities, %d vectors, %.0f ms)",
            index.version,
            change.describe(),
            index.identities,
            index.vectors,
            change.took_ms,
        )
        reply = GalleryReply(
            "reload",
            True,
            change.describe(),
            version=index.version,
            identities=index.identities,
            vectors=index.vectors,
            added=change.added,
            removed=change.removed,
            skipped=change.skipped,
            threshold=index.matcher.threshold,
            threshold_source=index.threshold_source,
            took_ms=round(change.took_ms, 1),
            ts=time.time(),
        )
        self._answer(reply, request_ids)
        return reply

    def _answer(self, reply: GalleryReply, request_ids: list[str | None]) -> None:
        for request_id in request_ids:
            answer = GalleryReply(**{**reply.as_dict(), "request_id": request_id})
            self.service.bus.publish(topics.GALLERY_REPLIES, answer.encode(), qos=1)
