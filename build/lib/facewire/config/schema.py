"""The config dataclasses. Defaults here are the ones a fresh install runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit


@dataclass
class BrokerConfig:
    """Where the MQTT broker is and how to talk to it.

    ``url`` (``mqtt://[user:pass@]host:port`` or ``mqtts://`` for TLS) overrides
    host/port/tls/username/password when set.

    >>> b = BrokerConfig(url="mqtts://node1:s3cret@broker.lan:8883")
    >>> (b.host, b.port, b.tls, b.username)
    ('broker.lan', 8883, True, 'node1')
    """

    url: str = ""
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""
    tls_insecure: bool = False
    username: str = ""
    password: str = ""
    keepalive: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.url:
            self.apply_url(self.url)

    def apply_url(self, url: str) -> None:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"broker url {url!r}: scheme must be mqtt:// or mqtts://")
        self.tls = parts.scheme in ("mqtts", "ssl")
        self.host = parts.hostname or self.host
        self.port = parts.port or (8883 if self.tls else 1883)
        if parts.username:
            self.username = unquote(parts.username)
        if parts.password:
            self.password = unquote(parts.password)
        self.url = url

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass
class DetectorConfig:
    """Face detector, run on a downscaled frame: YuNet (default) or OpenCV's Haar cascade.

    YuNet (a small CNN, ``facewire models prepare yunet``) took ~6 ms on a 640×480
    frame here against 40–65 ms for Haar, finds turned and partly hidden faces, and
    scored better on the sample with SFace (rank-1 100 % vs 98.8 %, strangers rejected
    91.4 % vs 88.6 %). At ``detect_width`` 320 it found faces down to a ~40 px wide box
    in a 640×480 frame; at 256 (−1.5 ms) only from ~50 px.
    """

    kind: Literal["haar", "yunet"] = "yunet"
    cascade: str = "haarcascade_frontalface_default.xml"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    # Smallest face box kept, in pixels of the original frame. Empty: the detector's
    # default, Haar 30; YuNet 20 (its boxes are tight: 7 sample photos with 22–29 px
    # wide faces were dropped at 30, and keeping them cost no accuracy).
    min_size: int | None = None
    detect_width: int = 320  # frames wider than this are downscaled before detection
    # Pad the (downscaled) frame by this share of its longer side, repeating edge pixels,
    # so faces touching the border are found. Empty: the detector's own default. Haar
    # needs it (0.15) on tightly cropped gallery photos (measured on the sample: 264 →
    # 286 of 290 photos found); YuNet finds those unpadded (0), and padding costs it
    # 1.8× the pixels (6 → 11 ms per frame) for the same faces and the same accuracy.
    pad: float | None = None
    largest_only: bool = False
    score_threshold: float = 0.7  # YuNet only: minimum face confidence

    def validate(self) -> None:
        if self.scale_factor <= 1.0:
            raise ValueError("detector.scale_factor must be > 1.0")
        if self.min_neighbors < 0 or (self.min_size or 1) < 1 or self.detect_width < 32:
            raise ValueError("detector: min_neighbors >= 0, min_size >= 1, detect_width >= 32")
        if self.pad is not None and not 0.0 <= self.pad <= 1.0:
            raise ValueError("detector.pad must be within 0..1")


@dataclass
class PipelineConfig:
    """Pixels → vectors, shared by the edge and the gallery builder."""

    model: str = "sface"
    models_dir: str = ""  # empty: the models/ folder of this install
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    mesh: bool = True  # FaceMesh face-oval mask: blank the background inside the box
    align: bool = True  # FaceMesh eyes/nose/mouth → similarity warp onto a fixed template
    # How the 468 landmarks are found. "landmarks" (default): MediaPipe's face landmark
    # model alone (face_landmark.onnx, `facewire models prepare face_landmark`) on a
    # region placed from the detector's box and eyes, ~2.4 ms per face; "mediapipe":
    # MediaPipe's whole FaceMesh graph, which finds the face again on the crop first
    # (~5–14 ms per face). Same names on both accuracy sets (docs/benchmarks.md);
    # 3–4 ms less per face. Edge and classifier must use the same.
    mesh_runtime: Literal["landmarks", "mediapipe"] = "landmarks"
    mesh_margin: float = 0.35  # mediapipe only: box grown by this fraction per side
    # A face FaceMesh cannot mesh: "fallback" keeps it as an unaligned, unmasked crop,
    # "drop" discards it (fewer answers, fewer wrong ones).
    on_mesh_miss: Literal["fallback", "drop"] = "fallback"
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = library default
    # What the embedder's ONNX Runtime threads do between ops: "run" spins during a run
    # and sleeps after it (CLIP int8 −2.5 to −4 ms per face on 2 cores, alternating
    # runs); "off" sleeps between ops too; "on" (ONNX Runtime's own default) also spins
    # after a run, taking the CPU the next frame's detector needs.
    ort_spinning: Literal["run", "off", "on"] = "run"

    def validate(self) -> None:
        if not 0.0 <= self.mesh_margin <= 2.0:
            raise ValueError("pipeline.mesh_margin must be within 0..2")


@dataclass
class SearchConfig:
    """k-NN voting over the gallery."""

    k: int = 5
    threshold: float = 0.363  # cosine; below it the answer is "unknown"
    # auto: exact (flat) up to ivf_above vectors, inverted lists (ivf) up to
    # hnsw_above, HNSW beyond; see classifier.search.make_index
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    ivf_above: int = 5_000
    hnsw_above: int = 200_000
    nprobe: int = 0  # ivf: cells scanned per query (0: auto, max(8, cells / 64))
    ef_search: int = 64  # hnsw: candidates kept per query
    threads: int = 1  # FAISS threads for the search worker

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError("search.k must be >= 1")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError("search.threshold must be within -1..1")
        if self.nprobe < 0 or self.ef_search < 1:
            raise ValueError("search.nprobe must be >= 0 and search.ef_search >= 1")


@dataclass
class EdgeConfig:
    node: str = "edge1"
    source: str = "0"
    fps: float = 5.0
    loop: bool = False
    dedup_distance: float = 0.15  # cosine distance under which a face counts as "the same"
    dedup_seconds: float = 3.0  # ...unless this long has passed since it was sent
    status_interval_s: float = 5.0
    qos: int = 1
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)


@dataclass
class ClassifierConfig:
    dataset: str = "dataset/gallery"
    group: str = ""  # MQTT v5 shared-subscription group; empty = plain subscription
    queue_size: int = 64  # per node; a full queue drops its oldest message
    # Most queued messages searched in one FAISS call. Only a backlog fills a batch, so
    # this trades nothing at normal rates; saturated, 64 took ~10 % more per second
    # than 32 (10k gallery, alternating runs).
    batch_max: int = 64
    stats_interval_s: float = 2.0
    stats_window: int = 1000  # recent queries kept for the live threshold statistics
    cache_dir: str = ""  # empty: <dataset>/.facewire-cache
    search: SearchConfig = field(default_factory=SearchConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)


@dataclass
class MonitorConfig:
    host: str = "127.0.0.1"
    port: int = 6010
    db: str = "var/monitor.sqlite3"
    window: int = 500  # detections kept in memory for the live pages
    broker: BrokerConfig = field(default_factory=BrokerConfig)
