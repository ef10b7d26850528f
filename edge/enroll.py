"""``facewire enroll``: teach the classifier a person from this edge's camera.

Frames from a source (webcam, video, folder) go through the edge's own
:class:`~facewire.models.FacePipeline`; a face is kept when it is alone in its frame,
passes the quality gate (:func:`facewire.edge.quality.passes`, the ``quality``
settings), is meshed (FaceMesh finds its landmarks) and is not a near-duplicate of a
face already kept (cosine similarity above ``--max-similarity``). The kept vectors go
to the classifier as one :class:`~facewire.bus.messages.Enrolment` on
``faces/gallery/enroll`` (vectors only, never an image); its
:class:`~facewire.bus.messages.GalleryReply` says what it kept.

:func:`capture_faces` is the capture (a pipeline, frames and the gate: no broker),
:func:`send_enrolment` the exchange with the classifier (any ``Transport``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facewire import config
from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.errors import WireError
from facewire.bus.messages import Enrolment, GalleryReply
from facewire.bus.messages.gallery import MAX_VECTORS
from facewire.bus.messages.gallery import name_problem as check_name
from facewire.bus.transport import Message, Transport
from facewire.config.cli import PIPELINE_FLAGS, add_setting_flag, overrides_from
from facewire.config.schema import EdgeConfig, QualityConfig
from facewire.edge.quality import passes, reason_kind
from facewire.edge.sources import Frame, open_source
from facewire.models import FacePipeline
from facewire.models.face import Quality

log = logging.getLogger("facewire.edge")

DEFAULT_COUNT = 8
DEFAULT_MAX_SIMILARITY = 0.95
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_WAIT_S = 15.0
NEAR_DUPLICATE = "near-duplicate"


@dataclass(frozen=True)
class Kept:
    """A face kept for the enrolment."""

    vector: np.ndarray  # unit-norm float32
    quality: Quality
    frame: str  # the frame's file name, or "#<frame id>"
    closest: float | None  # highest similarity to a face kept before it


@dataclass
class Capture:
    """What :func:`capture_faces` kept and why the rest was not."""

    kept: list[Kept] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # reason kind → frames
    frames: int = 0
    seconds: float = 0.0
    timed_out: bool = False

    @property
    def vectors(self) -> list[np.ndarray]:
        return [k.vector for k in self.kept]

    def describe_refused(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in self.refused.most_common()) or "none"


#: ``progress(capture, line)`` after each frame: ``line`` says what became of it
Progress = Callable[[Capture, str], None]


def _frame_name(frame: Frame) -> str:
    return Path(frame.label).name if frame.label else f"#{frame.frame_id}"


def capture_faces(
    pipeline: FacePipeline,
    frames: Iterable[Frame],
    gate: QualityConfig,
    count: int = DEFAULT_COUNT,
    max_similarity: float = DEFAULT_MAX_SIMILARITY,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Progress | None = None,
) -> Capture:
    """Up to ``count`` good, different faces from ``frames``, within ``timeout`` seconds
    (the frames run out first for a folder). See the module docstring for "good"."""
    out = Capture()
    t0 = time.monotonic()
    deadline = t0 + timeout
    needs_mesh = pipeline.cfg.mesh or pipeline.cfg.align
    for frame in frames:
        if time.monotonic() > deadline:
            out.timed_out = True
            break
        out.frames += 1
        name = _frame_name(frame)
        kept = _consider(pipeline, frame.image, gate, max_similarity, needs_mesh, name, out)
        if progress is not None:
            progress(out, kept)
        if len(out.kept) >= count:
            break
    out.seconds = time.monotonic() - t0
    return out


def _consider(
    pipeline: FacePipeline,
    image: np.ndarray,
    gate: QualityConfig,
    max_similarity: float,
    needs_mesh: bool,
    name: str,
    out: Capture,
) -> str:
    """Keep the face of ``image`` in ``out`` or count why not; a line saying which."""

    def refuse(reason: str) -> str:
        out.refused[reason_kind(reason)] += 1
        return f"{name}: {reason}"

    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    faces = pipeline.detect(image)
    if not faces:
        return refuse("no face")
    if len(faces) > 1:
        return refuse(f"more than one face: {len(faces)} in the frame")
    face = faces[0]
    reason = passes(face, gate)
    if reason is not None:
        return refuse(reason)
    # a face FaceMesh can't mesh is an unaligned, unmasked crop (or dropped): not what
    # a good template of the person looks like
    if not pipeline.prepare(image, face) or (needs_mesh and face.landmarks is None):
        return refuse("not meshed: FaceMesh found no face in the box")
    pipeline.embed([face])
    assert face.embedding is not None
    vec = np.asarray(face.embedding, np.float32)
    vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
    closest = max((float(vec @ k.vector) for k in out.kept), default=None)
    if closest is not None and closest > max_similarity:
        return refuse(f"{NEAR_DUPLICATE}: similarity {closest:.3f} > {max_similarity:g}")
    out.kept.append(Kept(vec, face.quality, name, closest))
    q = face.quality
    return (
        f"{name}: kept, area {q.area:.0f} px, sharpness {q.blur:.0f}, brightness {q.brightness:.0f}"
    )


def make_enrolment(name: str, capture: Capture, model: str) -> Enrolment:
    """The one message that carries ``capture``'s vectors, with a new request id."""
    return Enrolment(
        name=name,
        request_id=uuid.uuid4().hex,
        model=model,
        vectors=tuple(capture.vectors),
        source="camera",
    )


def send_enrolment(
    transport: Transport, enrolment: Enrolment, wait: float, connect_timeout: float = 10.0
) -> GalleryReply | None:
    """Publish ``enrolment`` on ``faces/gallery/enroll`` (QoS 1) and return the
    classifier's reply to its ``request_id``, or ``None`` after ``wait`` seconds.
    Connects ``transport`` if it is not connected (``TimeoutError`` /
    ``ConnectionError`` when it can't); closing it is the caller's."""
    return _ask(
        transport, topics.ENROLL, enrolment.encode(), enrolment.request_id, wait, connect_timeout
    )


def _ask(
    transport: Transport,
    topic: str,
    payload: bytes | str,
    request_id: str | None,
    wait: float,
    connect_timeout: float,
) -> GalleryReply | None:
    """Subscribe to the gallery replies, publish the request, wait for its answer."""
    got = threading.Event()
    replies: list[GalleryReply] = []

    def on_reply(m: Message) -> None:
        try:
            reply = GalleryReply.decode(m.payload)
        except WireError as exc:
            log.warning("ignored a gallery reply: %s", exc)
            return
        if reply.request_id == request_id and not got.is_set():
            replies.append(reply)
            got.set()

    transport.subscribe(topics.GALLERY_REPLIES, on_reply, qos=1)  # before the request
    if not transport.connected:
        transport.connect(timeout=connect_timeout)
    transport.publish(topic, payload, qos=1)
    got.wait(wait)
    return replies[0] if replies else None


# --- the command ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facewire enroll",
        description="Teach the classifier a person from this device's camera: capture "
        "good, different faces (one face in the frame, the quality gate of the edge "
        "config's quality section, not a near-duplicate of one already kept), embed them "
        "with the edge's face pipeline and send the vectors (never an image) to "
        "faces/gallery/enroll; then print what the classifier kept. Settings: "
        "config/edge.yaml < FACEWIRE_* env (e.g. FACEWIRE_QUALITY_MIN_BLUR) < flags.",
        epilog="Exit status: 0 the classifier kept at least one vector (--dry-run: at "
        "least one face captured); 1 no good face captured, the classifier kept none, or "
        "no reply in time; 2 bad arguments, config or source.",
    )
    p.add_argument("--name", required=True, help="the person's name, as results will give it")
    p.add_argument(
        "--config", type=Path, default=None, help="YAML config (default: config/edge.yaml)"
    )
    for key in ("source", "fps"):
        add_setting_flag(p, key, cls=EdgeConfig)
    p.add_argument(
        "--count",
        type=_bounded(int, 1, MAX_VECTORS),
        default=DEFAULT_COUNT,
        metavar="N",
        help=f"good faces to capture, 1..{MAX_VECTORS} (default: {DEFAULT_COUNT})",
    )
    p.add_argument(
        "--max-similarity",
        type=_bounded(float, -1.0, 1.0),
        default=DEFAULT_MAX_SIMILARITY,
        metavar="S",
        help="a face whose cosine similarity to one already kept is above this is "
        f"skipped as a near-duplicate (default: {DEFAULT_MAX_SIMILARITY})",
    )
    p.add_argument(
        "--timeout",
        type=_bounded(float, 0.1, 24 * 3600.0),
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="stop capturing after this long, with what was kept by then "
        f"(default: {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--wait",
        type=_bounded(float, 0.0, 3600.0),
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the classifier's reply (default: {DEFAULT_WAIT_S:g})",
    )
    p.add_argument(
        "--connect-timeout",
        type=_bounded(float, 0.1, 3600.0),
        default=10.0,
        metavar="S",
        help="wait up to S seconds for the broker, before anything is captured (default: 10)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="capture and print the faces' quality figures; send nothing",
    )
    for key in ("node", "broker.url", *PIPELINE_FLAGS):
        add_setting_flag(p, key, cls=EdgeConfig)
    return p


def _bounded(kind: type, low: float, high: float) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not in {low:g}..{high:g}")
        return value

    convert.__name__ = kind.__name__
    return convert


class _Printer:
    """Progress lines on stderr: every kept face, refusals at most once a second."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.kept = 0
        self.quiet_until = 0.0

    def __call__(self, capture: Capture, line: str) -> None:
        now = time.monotonic()
        if len(capture.kept) > self.kept:
            self.kept = len(capture.kept)
            print(f"  [{self.kept}/{self.count}] {line}", file=sys.stderr, flush=True)
        elif now >= self.quiet_until:
            self.quiet_until = now + 1.0
            print(f"  [{self.kept}/{self.count}] {line}", file=sys.stderr, flush=True)


def format_capture(capture: Capture) -> str:
    """The kept faces' figures as a table."""
    width = max([5, *(len(k.frame) for k in capture.kept)])
    lines = [
        f"{'#':>3}  {'frame':<{width}}  {'area':>6}  {'sharpness':>9}  "
        f"{'brightness':>10}  {'closest':>7}"
    ]
    for i, k in enumerate(capture.kept, 1):
        q = k.quality
        closest = "-" if k.closest is None else f"{k.closest:.3f}"
        lines.append(
            f"{i:>3}  {k.frame:<{width}}  {q.area:>6.0f}  {q.blur:>9.0f}  "
            f"{q.brightness:>10.0f}  {closest:>7}"
        )
    return "\n".join(lines)


def report_reply(reply: GalleryReply | None, name: str, sent: int, wait: float) -> int:
    """Print what the classifier did with the enrolment; the exit status."""
    if reply is None:
        print(
            f"facewire enroll: no reply from a classifier within {wait:g} s: {name} is not "
            "enrolled (is a classifier that takes enrolments connected to this broker?)",
            file=sys.stderr,
        )
        return 1
    added = reply.added or 0
    if reply.ok and added:
        print(f"the classifier kept {added} of {sent} vectors for {name}")
    else:
        why = "" if reply.ok else f": {reply.detail}"
        print(f"the classifier kept none of the {sent} vectors for {name}{why}")
    for reason in reply.refused:
        print(f"  refused: {reason}")
    if reply.identities is not None and reply.vectors is not None:
        print(
            f"gallery now: {reply.identities} people, {reply.vectors} vectors"
            + (f" (version {reply.version})" if reply.version else "")
        )
    return 0 if reply.ok and added else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check_name(args.name)
    if problem is not None:
        print(f"facewire enroll: --name: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = config.load(
            EdgeConfig,
            args.config or config.default_path("edge"),
            overrides=overrides_from(args),
        )
        client_id = f"enroll-{topics.check_node_id(cfg.node)}-{os.getpid()}"
    except (config.ConfigError, ValueError) as exc:
        print(f"facewire enroll: {exc}", file=sys.stderr)
        return 2
    transport: Transport | None = None
    if not args.dry_run:  # connect first: nobody should pose for a broker that isn't there
        try:
            transport = BusClient(cfg.broker, client_id)
        except (ValueError, OSError) as exc:  # TLS files, say
            print(f"facewire enroll: broker {cfg.broker.address}: {exc}", file=sys.stderr)
            return 2
        try:
            transport.connect(timeout=args.connect_timeout)
        except (TimeoutError, ConnectionError, OSError) as exc:
            print(f"facewire enroll: broker {cfg.broker.address}: {exc}", file=sys.stderr)
            return 1
    try:
        return _run(args, cfg, transport)
    finally:
        if transport is not None:
            transport.close()


def _run(args: argparse.Namespace, cfg: EdgeConfig, transport: Transport | None) -> int:
    try:
        pipeline = FacePipeline(cfg.pipeline)
    except (ValueError, FileNotFoundError) as exc:
        print(f"facewire enroll: {exc}", file=sys.stderr)
        return 2
    print(
        f"facewire enroll: {args.count} faces of {args.name} from {cfg.source} "
        f"({pipeline.model_id}), {args.timeout:g} s at most",
        file=sys.stderr,
    )
    try:
        capture = capture_faces(
            pipeline,
            open_source(cfg.source, cfg.fps),
            cfg.quality,
            args.count,
            args.max_similarity,
            args.timeout,
            progress=_Printer(args.count),
        )
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"facewire enroll: source {cfg.source}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facewire enroll: interrupted; nothing sent", file=sys.stderr)
        return 1
    finally:
        pipeline.close()
    if capture.timed_out:
        ended = f"timed out after {args.timeout:g} s"
    else:
        ended = "done" if len(capture.kept) >= args.count else "the source ended"
    print(
        f"{ended}: {len(capture.kept)} of {args.count} faces kept from {capture.frames} "
        f"frames in {capture.seconds:.1f} s; not kept: {capture.describe_refused()}",
        file=sys.stderr,
    )
    if not capture.kept:
        print(
            f"facewire enroll: no good face of {args.name} captured; nothing sent", file=sys.stderr
        )
        return 1
    print(format_capture(capture))
    if args.dry_run or transport is None:
        print("dry run: nothing sent")
        return 0
    enrolment = make_enrolment(args.name, capture, pipeline.model_id)
    print(
        f"sending {len(enrolment.vectors)} vectors of {args.name} to {transport.address} "
        f"(request {enrolment.request_id})",
        file=sys.stderr,
    )
    reply = send_enrolment(transport, enrolment, args.wait)
    return report_reply(reply, args.name, len(enrolment.vectors), args.wait)


if __name__ == "__main__":
    raise SystemExit(main())
