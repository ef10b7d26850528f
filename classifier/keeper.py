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

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import Correction, Enrolment, GalleryReload, GalleryReply
from facewire.bus.messages.gallery import name_problem
from facewire.bus.transport import Message
from facewire.classifier.calibrate import choose_threshold
from facewire.classifier.enrolled import EnrolmentStore
from facewire.classifier.gallery import Gallery, LazyPipeline, build_gallery
from facewire.classifier.refusals import Refusals
from facewire.classifier.search import Matcher
from facewire.classifier.service import ClassifierService, GalleryIndex
from facewire.classifier.watch import FolderWatch
from facewire.config.schema import ClassifierConfig
from facewire.models.embedders import GENERIC_THRESHOLD
from facewire.models.pipeline import pipeline_fallback_threshold

log = logging.getLogger("facewire.classifier")


class EmptyGallery(RuntimeError):
    """The folder holds no usable face: there is nothing to search."""


def correction_scores(gallery: Gallery, negatives: np.ndarray, wrong: list[str]) -> list[float]:
    """Each correction's best similarity to the person it was *not*: a non-mated score."""
    labels = np.asarray(gallery.labels)
    out = []
    for vec, person in zip(negatives, wrong, strict=True):
        own = gallery.vectors[labels == person]
        if len(own):
            out.append(float((own @ vec).max()))
    return out


def index_gallery(
    gallery: Gallery,
    cfg: ClassifierConfig,
    model_default: float = GENERIC_THRESHOLD,
    negatives: tuple[np.ndarray, list[str]] | None = None,
) -> GalleryIndex:
    """The searchable gallery, its threshold chosen (``search.threshold``: a number, or
    ``auto``: calibrated on it and the ``negatives`` (corrections), else
    ``model_default``)."""
    corrections = correction_scores(gallery, *negatives) if negatives else []
    chosen = choose_threshold(
        cfg.search, gallery.vectors, gallery.labels, model_default, corrections
    )
    matcher = Matcher(
        gallery.vectors,
        gallery.labels,
        cfg.search.k,
        chosen.value,
        cfg.search,
        negatives=negatives,
    )
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


STORE_FILE = "gallery.sqlite3"


def cache_folder(cfg: ClassifierConfig) -> Path:
    """Where the gallery keeps its embedding cache and enrolment store."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.dataset) / ".facewire-cache"


class GalleryKeeper:
    """Builds the gallery from ``cfg.dataset`` with the cache; one caller at a time."""

    def __init__(self, cfg: ClassifierConfig, use_cache: bool = True, progress: bool = False):
        self.cfg = cfg
        self.root = Path(cfg.dataset)
        cache_dir = cache_folder(cfg)
        self.cache: Path | None = cache_dir / f"{cfg.pipeline.model}.npz" if use_cache else None
        self.store = EnrolmentStore(cache_dir / STORE_FILE)
        self.progress = progress
        self.pipeline = LazyPipeline(cfg.pipeline)
        self.gallery: Gallery | None = None
        self._lock = threading.Lock()

    def build(self) -> Change:
        """Read the folder again; ``EmptyGallery`` (the old gallery kept) if it holds
        no usable face, ``FileNotFoundError`` if it is gone."""
        with self._lock:
            t0 = time.perf_counter()
            gallery = with_enrolled(
                build_gallery(self.root, self.pipeline, self.cache, self.progress), self.store
            )
            if not gallery.labels:
                raise EmptyGallery(
                    f"no usable face in gallery {self.root} (skipped: {gallery.skip_counts()})"
                )
            # known without loading the model: a gallery all in the cache loads none
            default = pipeline_fallback_threshold(self.pipeline.cfg)
            negatives = self.store.corrections(gallery.model_id)
            index = index_gallery(gallery, self.cfg, default, negatives)
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
        self.store.close()


def with_enrolled(gallery: Gallery, store: EnrolmentStore) -> Gallery:
    """``gallery`` and the vectors enrolled for its model (paths ``enrolled:<n>``).

    Vectors the same weights made from another crop (another ``pipeline`` mask or
    alignment) are not comparable and stay out; a warning says how many, since people
    taught from a camera have no photo to be embedded again."""
    weights = gallery.model_id.split("+")[0]
    stale = {
        model: n
        for model, n in store.models().items()
        if model != gallery.model_id and model.split("+")[0] == weights
    }
    if stale:
        log.warning(
            "%d enrolled vectors or corrections were made with another face crop (%s) "
            "and are not used with %s: teach those people again, or run the pipeline "
            "settings that made them",
            sum(stale.values()),
            ", ".join(sorted(stale)),
            gallery.model_id,
        )
    vectors, people = store.enrolled(gallery.model_id)
    if not people or (gallery.labels and vectors.shape[1] != gallery.dim):
        return gallery
    return Gallery(
        np.concatenate([gallery.vectors.reshape(-1, vectors.shape[1]), vectors]),
        [*gallery.labels, *people],
        [*gallery.paths, *(f"enrolled:{i}" for i in range(len(people)))],
        gallery.model_id,
        gallery.skipped,
    )


#: Gallery requests waiting for the gallery thread at most; more are refused.
MAX_WAITING = 256
#: Two vectors of one person closer than this are one view twice: the second is refused.
NEAR_DUPLICATE = 0.98


@dataclass
class Outcome:
    """What one request did before the rebuild: for its reply."""

    action: str
    request_id: str | None
    kept: int = 0
    refused: list[str] | None = None
    detail: str = ""
    ok: bool = True


def _request_id(payload: bytes) -> str | None:
    """The ``request_id`` of a request that did not decode, if it can be read, so the
    refusal reaches whoever asked."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 64 else None


class Reloader:
    """Rebuilds the gallery on its own thread when the folder changes, a reload is
    asked for, or someone is enrolled or corrected, and swaps the new index into
    ``service``.

    The delivery thread only queues requests (:meth:`on_reload`, :meth:`on_enrol`,
    :meth:`on_correct`); the folder watch only wakes the thread; storing, the build,
    the swap and the replies happen here, one build for all that arrived together.
    """

    def __init__(self, keeper: GalleryKeeper, service: ClassifierService) -> None:
        self.keeper = keeper
        self.service = service
        cfg = keeper.cfg
        self.watch = FolderWatch(keeper.root, cfg.watch_settle_s) if cfg.watch else None
        self.poll_s = cfg.watch_poll_s
        self._wake = threading.Event()
        self._requests: list[GalleryReload | Enrolment | Correction] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refusals = Refusals()
        self.reloads = 0

    def start(self) -> Reloader:
        self.service.on_auto_enrol = self.on_auto_enrol
        bus = self.service.bus
        bus.subscribe(topics.RELOAD, self.on_reload, qos=1)
        bus.subscribe(topics.ENROLL, self.on_enrol, qos=1)
        bus.subscribe(topics.CORRECT, self.on_correct, qos=1)
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

    # -- the delivery thread: decode and queue ---------------------------------------

    def _queue(self, m: Message, cls: type[GalleryReload | Enrolment | Correction]) -> None:
        action = m.topic.rsplit("/", 1)[1]
        try:
            request = cls.decode(m.payload) if m.payload or cls is not GalleryReload else None
        except WireError as exc:
            self._refuse(action, exc.reason, str(exc), m.payload)
            return
        with self._lock:
            busy = len(self._requests) >= MAX_WAITING
            if not busy:
                self._requests.append(request if request is not None else GalleryReload())
        if busy:  # a flood of requests must not grow without bound
            self._refuse(action, "queue_full", f"{MAX_WAITING} gallery requests waiting", m.payload)
            return
        self._wake.set()

    def _refuse(self, action: str, reason: str, detail: str, payload: bytes) -> None:
        """Say why a request was not taken: at most once a second per kind and reason
        (its count counts them all), so a flood does not become a flood of replies."""
        count, due = self.refusals.count(f"gallery/{action}", reason, time.monotonic())
        if not due:
            return
        log.warning("refused a gallery %s request: %s (%d so far)", action, detail, count)
        reply = GalleryReply(action, False, detail, ts=time.time())
        self._answer(reply, [_request_id(payload)])

    def on_reload(self, m: Message) -> None:
        self._queue(m, GalleryReload)

    def on_enrol(self, m: Message) -> None:
        self._queue(m, Enrolment)

    def on_correct(self, m: Message) -> None:
        self._queue(m, Correction)

    def on_auto_enrol(self, name: str, vector: np.ndarray, model: str) -> None:
        """A track the classifier named far above the threshold (the worker's thread:
        just queue it); ``enrol`` caps them at ``track.auto_max`` per person."""
        with self._lock:
            self._requests.append(Enrolment(name, model=model, vectors=(vector,), source="auto"))
        self._wake.set()

    # -- the gallery thread ------------------------------------------------------------

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
                self.handle(requests)

    def handle(self, requests: list[GalleryReload | Enrolment | Correction]) -> None:
        """Store what the requests teach, rebuild once, answer each."""
        outcomes: list[Outcome] = []
        for request in requests:
            try:
                if isinstance(request, Enrolment):
                    outcomes.append(self.enrol(request))
                elif isinstance(request, Correction):
                    outcomes.append(self.correct(request))
                else:
                    outcomes.append(Outcome("reload", request.request_id))
            except Exception as exc:  # a bug must not stop the gallery thread
                log.exception("gallery request failed")
                action = "enroll" if isinstance(request, Enrolment) else "reload"
                outcomes.append(Outcome(action, request.request_id, ok=False, detail=str(exc)))
        reply = self.reload()
        if not outcomes:  # a change of the folder, noticed by the watch
            self._answer(reply, [None])
        for o in outcomes:
            detail = o.detail or reply.detail
            refused = tuple(o.refused or ())
            answer = GalleryReply(
                **{
                    **reply.as_dict(),
                    "action": o.action,
                    "ok": reply.ok and o.ok,
                    "detail": detail if reply.ok else f"{detail}; {reply.detail}",
                    "refused": refused,
                    **({"added": o.kept} if o.action != "reload" else {}),
                }
            )
            self._answer(answer, [o.request_id])

    def enrol(self, e: Enrolment) -> Outcome:
        """Keep what is good of ``e`` in the store (the rebuild that follows uses it)."""
        out = Outcome("enroll", e.request_id, refused=[])
        assert out.refused is not None
        problem = name_problem(e.name)
        if problem is not None:
            return Outcome("enroll", e.request_id, ok=False, detail=f"not a name: {problem}")
        cap = self.keeper.cfg.track.auto_max
        if e.source == "auto" and self.keeper.store.people().get(e.name, {}).get("auto", 0) >= cap:
            detail = f"{e.name} has {cap} automatic samples already (track.auto_max)"
            return Outcome("enroll", e.request_id, ok=False, detail=detail)
        current = self.service.index
        model = current.model_id
        candidates: list[tuple[str, np.ndarray, tuple[str, int] | None]] = []
        for i, vec in enumerate(e.vectors):
            if e.model != model:
                out.refused.append(f"vector {i}: model {e.model}, the gallery's is {model}")
            else:
                candidates.append((f"vector {i}", vec, None))
        for s in e.sightings:
            held = self.service.recent.get(s.node, s.seq)
            what = f"sighting {s.node}/{s.seq}"
            if held is None:
                out.refused.append(
                    f"{what}: no longer held (the classifier keeps the last "
                    f"{self.service.recent.size} results)"
                )
            elif held.model != model:
                out.refused.append(f"{what}: model {held.model}, the gallery's is {model}")
            else:
                candidates.append((what, held.vector, (s.node, s.seq)))
        gallery = self.keeper.gallery
        own = (
            gallery.vectors[np.asarray(gallery.labels) == e.name]
            if gallery is not None and gallery.labels
            else np.zeros((0, current.matcher.dim), np.float32)
        )
        kept: list[np.ndarray] = []
        where: list[tuple[str, int]] = []
        for what, vec, sighting in candidates:
            if len(vec) != current.matcher.dim:
                out.refused.append(
                    f"{what}: {len(vec)} values, the gallery's are {current.matcher.dim}"
                )
                continue
            norm = float(np.linalg.norm(vec))
            if not norm > 0:
                out.refused.append(f"{what}: a zero vector")
                continue
            vec = (vec / norm).astype(np.float32)
            near = [k for k in (*own, *kept) if float(k @ vec) > NEAR_DUPLICATE]
            if near:
                out.refused.append(f"{what}: a near-duplicate of a vector {e.name} already has")
                continue
            kept.append(vec)
            if sighting is not None:
                where.append(sighting)
        if kept:
            # sightings first (the store pairs them with the first vectors)
            order = sorted(range(len(kept)), key=lambda j: j >= len(where))
            self.keeper.store.enrol(e.name, [kept[j] for j in order], model, e.source, where)
        out.kept = len(kept)
        out.ok = bool(kept)
        out.detail = f"kept {len(kept)} of {len(e.vectors) + len(e.sightings)} for {e.name}"
        return out

    def correct(self, c: Correction) -> Outcome:
        """Keep the sighting's vector as evidence that it was not ``c.wrong_name``."""
        held = self.service.recent.get(c.node, c.seq)
        if held is None:
            return Outcome(
                "correct",
                c.request_id,
                ok=False,
                detail=f"sighting {c.node}/{c.seq} is no longer held (the classifier keeps "
                f"the last {self.service.recent.size} results)",
            )
        self.keeper.store.correct(c.wrong_name, held.vector, held.model, c.node, c.seq)
        return Outcome(
            "correct",
            c.request_id,
            detail=f"{c.node}/{c.seq} (answered {held.answered}) is not {c.wrong_name}",
        )

    def reload(self) -> GalleryReply:
        """Rebuild now and swap; the reply says what changed or why nothing did."""
        try:
            change = self.keeper.build()
        except (EmptyGallery, OSError) as exc:
            log.error("gallery not reloaded, the one in use is kept: %s", exc)
            return GalleryReply("reload", False, str(exc), ts=time.time())
        except Exception as exc:  # a bug must not stop the service; the old gallery stays
            log.exception("gallery reload failed; the one in use is kept")
            return GalleryReply("reload", False, f"{type(exc).__name__}: {exc}", ts=time.time())
        index = change.index
        self.service.swap(index)
        self.reloads += 1
        log.info(
            "gallery %s: %s (%d identities, %d vectors, %d corrections, %.0f ms)",
            index.version,
            change.describe(),
            index.identities,
            index.vectors,
            index.matcher.corrections,
            change.took_ms,
        )
        return GalleryReply(
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

    def _answer(self, reply: GalleryReply, request_ids: list[str | None]) -> None:
        for request_id in request_ids:
            answer = GalleryReply(**{**reply.as_dict(), "request_id": request_id})
            self.service.bus.publish(topics.GALLERY_REPLIES, answer.encode(), qos=1)
