"""Every setting of every service, written once: type, default, range or choices, help.

The loader (``facewire.config``), the command-line flags (``facewire.config.cli``) and
the reference (``docs/configuration.md``, ``facewire config reference``) all read
them from here. Defaults here are the ones a fresh install runs with; comments say
why a default is what it is, ``help`` says what the setting does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from facewire.config.fields import section, setting

MUST_AGREE = "edge and classifier must agree"
BROKER_HINT = "for an address set broker.url or FACEWIRE_BROKER"


def check_broker_url(url: str) -> None:
    """Raise ValueError unless ``url`` is empty or a usable broker URL."""
    if not url:
        return
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError("scheme must be mqtt:// or mqtts://")
    _ = parts.port  # raises ValueError for a port out of range


@dataclass
class BrokerConfig:
    """Where the MQTT broker is and how to talk to it.

    ``url`` (``mqtt://[user:pass@]host:port`` or ``mqtts://`` for TLS) overrides
    host/port/tls/username/password when set.

    >>> b = BrokerConfig(url="mqtts://node1:s3cret@broker.lan:8883")
    >>> (b.host, b.port, b.tls, b.username)
    ('broker.lan', 8883, True, 'node1')
    """

    url: str = setting(
        "",
        "broker address, mqtt://[user:pass@]host:port or mqtts://… for TLS; when set it "
        "overrides host, port, tls, username and password (env also FACEWIRE_BROKER)",
        flag="--broker",
        metavar="URL",
        check=check_broker_url,
    )
    host: str = setting("127.0.0.1", "broker host name or address")
    port: int = setting(1883, "broker port", min=1, max=65535)
    tls: bool = setting(False, "connect with TLS")
    ca_certs: str = setting(
        "", "CA certificate file to check the broker's (empty: the system's); mqtts:// only"
    )
    certfile: str = setting("", "client certificate file, for brokers that want one")
    keyfile: str = setting("", "private key of certfile")
    tls_insecure: bool = setting(
        False, "do not check that the broker's certificate names its host (testing only)"
    )
    tls_verify: bool = setting(
        True,
        "check the broker's TLS certificate against ca_certs and refuse it if it fails "
        "(false: accept any certificate, testing only: anyone in between can read and "
        "forge every message)",
    )
    username: str = setting("", "MQTT username; an edge node's is its node id")
    password: str = setting("", "MQTT password", secret=True)
    keepalive: int = setting(30, "seconds between MQTT pings (0: none)", min=0, max=65535)
    reconnect_min_s: float = setting(0.5, "first wait before reconnecting, seconds", gt=0)
    reconnect_max_s: float = setting(
        30.0, "longest wait between reconnects (the wait doubles up to it), seconds", gt=0
    )

    def __post_init__(self) -> None:
        if self.url:
            self.apply_url(self.url)

    def apply_url(self, url: str) -> None:
        check_broker_url(url)
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        self.tls = parts.scheme in ("mqtts", "ssl")
        self.host = parts.hostname or self.host
        self.port = parts.port or (8883 if self.tls else 1883)
        if parts.username:
            self.username = unquote(parts.username)
        if parts.password:
            self.password = unquote(parts.password)
        self.url = url

    def validate(self) -> None:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")

    @property
    def address(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass
class DetectorConfig:
    """Face detector, run on a downscaled frame: YuNet (default) or OpenCV's Haar cascade.

    YuNet is the default because it is several times faster, finds turned and partly
    hidden faces, and names more people right (docs/benchmarks.md has the figures).
    """

    kind: Literal["haar", "yunet"] = setting(
        "yunet",
        f"face detector: yunet (`facewire models prepare yunet`) or haar (needs no model "
        f"file); {MUST_AGREE}",
        flag="--detector",
    )
    cascade: str = setting("haarcascade_frontalface_default.xml", "haar only: OpenCV cascade file")
    scale_factor: float = setting(1.1, "haar only: image pyramid step", gt=1.0)
    min_neighbors: int = setting(5, "haar only: overlapping hits a face needs", min=0)
    # YuNet's boxes are tight: at 30 it dropped small sample faces that cost no accuracy
    min_size: int | None = setting(
        None,
        "smallest face box kept, pixels of the original frame (null: haar 30, yunet 20)",
        min=1,
    )
    detect_width: int = setting(
        320, "frames wider than this are downscaled before detection, pixels", min=32
    )
    # Haar needs padding on tightly cropped gallery photos; YuNet finds those unpadded,
    # and padding would cost it 1.8× the pixels for the same faces (docs/benchmarks.md)
    pad: float | None = setting(
        None,
        "pad the downscaled frame by this share of its longer side, repeating edge pixels, "
        "so faces touching the border are found (null: haar 0.15, yunet 0)",
        min=0.0,
        max=1.0,
    )
    largest_only: bool = setting(False, "keep only the largest face of a frame")
    score_threshold: float = setting(0.7, "yunet only: minimum face confidence", min=0.0, max=1.0)


@dataclass
class PipelineConfig:
    """Pixels → vectors, shared by the edge and the gallery builder."""

    # the names of models.embedders' registry (a test keeps the two the same)
    model: Literal["sface", "clip-vit-b32", "clip-vit-b32-int8"] = setting(
        "sface",
        f"embedder: sface, clip-vit-b32 or clip-vit-b32-int8 (`facewire models list`); "
        f"{MUST_AGREE}",
        flag="--model",
    )
    models_dir: str = setting(
        "", "folder with the model files (empty: $FACEWIRE_MODELS_DIR, else this install's)"
    )
    detector: DetectorConfig = section(DetectorConfig, "the face detector")
    mesh: bool = setting(
        True,
        "replace the background around the face (outside FaceMesh's face oval, grown by "
        "mask_scale) as mask_fill says, so that a camera's scene is not part of the "
        f"vector; {MUST_AGREE}",
        flag="--no-mesh",
    )
    # FaceMesh's own oval cuts the forehead and jaw line the embedder was trained with,
    # and a black fill is a hard edge no training face had (docs/benchmarks.md,
    # "The mask")
    mask_scale: float = setting(
        1.4,
        "the face oval grown by this factor about its centre before the background "
        f"outside it is replaced (1: FaceMesh's oval itself); {MUST_AGREE}",
        min=1.0,
        max=3.0,
    )
    mask_fill: Literal["blur", "black"] = setting(
        "blur",
        "what replaces the background outside the grown oval: blur (a strong blur of the "
        f"crop itself) or black; {MUST_AGREE}",
    )
    align: bool = setting(
        True,
        "FaceMesh's eyes, nose and mouth warped onto a fixed template (off: an unaligned "
        f"square crop of the box); {MUST_AGREE}",
        flag="--no-align",
    )
    # "landmarks": a fraction of the whole graph's time per face, the same names on
    # both accuracy sets (docs/benchmarks.md)
    mesh_runtime: Literal["landmarks", "mediapipe"] = setting(
        "landmarks",
        "how the 468 FaceMesh landmarks are found: landmarks (MediaPipe's landmark model "
        "alone, face_landmark.onnx, on a region placed from the detector's box and eyes) "
        f"or mediapipe (its whole FaceMesh graph, which finds the face again); {MUST_AGREE}",
    )
    mesh_margin: float = setting(
        0.35, "mediapipe only: the box grown by this share per side", min=0.0, max=2.0
    )
    on_mesh_miss: Literal["fallback", "drop"] = setting(
        "fallback",
        "a face FaceMesh cannot mesh: fallback keeps it as an unaligned, unmasked crop, "
        "drop discards it (fewer answers, fewer wrong ones)",
        flag="--on-mesh-miss",
    )
    threads: int = setting(0, "ONNX Runtime intra-op threads (0: the library's default)", min=0)
    # "run": faster per face on 2 cores than either other choice (docs/benchmarks.md)
    ort_spinning: Literal["run", "off", "on"] = setting(
        "run",
        "what the embedder's ONNX Runtime threads do between ops: run spins during a run "
        "and sleeps after it; off sleeps between ops too; on (ONNX Runtime's own default) "
        "also spins after a run, taking the CPU the next frame's detector needs",
    )


@dataclass
class SearchConfig:
    """k-NN voting over the gallery."""

    k: int = setting(5, "nearest gallery vectors that vote", min=1, flag="-k")
    threshold: float | Literal["auto"] = setting(
        "auto",
        "cosine similarity under which a face is 'unknown'; auto: the lowest threshold "
        "whose open-set false-positive rate on the gallery (its people's best scores "
        "against each other, and corrections) is within target_fpir, followed as the "
        "gallery changes; a gallery too small to calibrate falls back to the model's "
        "default for its crop (SFace: 0.40 on the default crop, measured; 0.363, its own, "
        "on others)",
        min=-1.0,
        max=1.0,
        flag="--threshold",
    )
    target_fpir: float = setting(
        0.01,
        "threshold auto: the share of strangers who may be named as someone",
        gt=0.0,
        max=0.5,
    )
    index: Literal["auto", "flat", "ivf", "people", "pq", "hnsw"] = setting(
        "auto",
        "FAISS index: flat (exact), ivf (k-means cells), people (a cell per person; a "
        "query is compared with the photos of the nprobe people whose mean is nearest), "
        "pq (every vector as a short code, the best re-ranked), hnsw (graph); auto: flat "
        "up to ivf_above vectors, ivf up to people_above, people beyond",
    )
    ivf_above: int = setting(5_000, "auto: inverted lists above this many vectors", min=0)
    # in a large gallery one person's photos no longer share a k-means cell and IVF
    # loses them; their own cell cannot (docs/benchmarks.md, "Gallery size")
    people_above: int = setting(50_000, "auto: a cell per person above this many vectors", min=0)
    hnsw_above: int = setting(
        200_000,
        "no longer used (auto takes people above people_above); accepted so that "
        "configs of earlier versions still load",
        min=0,
    )
    nprobe: int = setting(
        0,
        "ivf: cells scanned per query, people: people compared (0: ivf max(8, cells / "
        "64), people 8)",
        min=0,
    )
    pq_m: int = setting(
        32,
        "people, pq: sub-vectors per short code, 4 bits each (32: 16 bytes); more is "
        "closer to exact and slower to scan; must divide the vector size, else the "
        "next divisor below is used",
        min=1,
        max=256,
    )
    pq_rerank: int = setting(
        8,
        "pq: candidates re-ranked on float16 vectors per neighbour wanted (k × this)",
        min=1,
        max=1000,
    )
    ef_search: int = setting(64, "hnsw: candidates kept per query", min=1)
    threads: int = setting(1, "FAISS threads of the search worker (0 counts as 1)", min=0)


@dataclass
class SealingConfig:
    """Sealed embeddings and signed results (``bus.sealing``): on in deployment, where
    ``facewire nodes`` made the keys; off for the demo's loopback broker."""

    enabled: bool = setting(
        False,
        "edge: seal each embedding to the classifier and check the results' signatures; "
        "classifier: take sealed embeddings only and sign results; monitor: show only "
        "signed results",
    )
    keys: str = setting(
        "",
        "the key folder (facewire nodes init/add; empty: <secrets dir>/keys). The edge "
        "needs classifier.box.pub, classifier.sign.pub and nodes/<id>.sign in it; the "
        "classifier its own private keys and nodes/*.sign.pub; the monitor "
        "classifier.sign.pub",
        metavar="DIR",
    )
    window_s: float = setting(
        30.0,
        "classifier: refuse an embedding captured further than this from its own clock "
        "(replays; keep the clocks in step, e.g. with NTP), seconds",
        min=1.0,
        max=86400.0,
    )


@dataclass
class QualityConfig:
    """The quality gate: which detected faces are good enough to keep (enrolment).

    ``facewire enroll`` keeps only faces that pass it, alone in their frame. Measured
    on the detector's box at frame resolution (``models.face.Quality``). The defaults
    pass every photo in ``dataset/`` (head shots of 92×112 px, the smallest face 22×29
    px); a camera that shows faces larger than that can ask for more.
    """

    # dataset/'s smallest face box is 638 px²
    min_area: float = setting(
        600.0, "smallest face box kept, in pixels of the frame (width × height)", min=0.0
    )
    # dataset/'s photos measure 213 and more; blurred with a Gaussian of sigma 3, under 35
    min_blur: float = setting(
        40.0,
        "least sharpness kept: the variance of the Laplacian of the face box (low = "
        "blurred); it falls with the face's size too, so a face upscaled from a small one "
        "measures low",
        min=0.0,
    )
    # dataset/'s photos measure 91..170
    min_brightness: float = setting(
        40.0, "darkest face kept: mean grey level of the box, 0..255", min=0.0, max=255.0
    )
    max_brightness: float = setting(
        220.0, "brightest face kept: mean grey level of the box, 0..255", min=0.0, max=255.0
    )

    def validate(self) -> None:
        if self.min_brightness > self.max_brightness:
            raise ValueError("min_brightness must be <= max_brightness")


@dataclass
class EdgeConfig:
    """The edge daemon, ``facewire edge``: camera → faces → embeddings on the broker."""

    node: str = setting(
        "edge1",
        "node id, also its MQTT username; it publishes under faces/<node>/",
        flag="--node",
    )
    source: str = setting(
        "0",
        "webcam index (0), video file, rtsp/http URL, or a folder of images",
        flag="--source",
    )
    fps: float = setting(
        5.0,
        "frames per second to process; a folder is replayed at this rate (0: as fast as possible)",
        min=0.0,
        flag="--fps",
    )
    loop: bool = setting(False, "replay a folder or video forever", flag="--loop")
    dedup_distance: float = setting(
        0.15,
        "cosine distance under which a face in the same place counts as the one just "
        "sent and is not sent again (0: send all)",
        min=0.0,
        max=2.0,
        flag="--dedup-distance",
    )
    # below the classifier's track.gap_s (2 s): the track of someone standing still
    # must not end between two sends
    dedup_seconds: float = setting(
        1.5,
        "send the same face again after this many seconds (keep it below the classifier's "
        "track.gap_s)",
        min=0.0,
        flag="--dedup-seconds",
    )
    dedup_first: int = setting(
        3,
        "a new face's first frames sent before de-duplicating: the classifier decides on a "
        "track after track.min_frames of them",
        min=1,
    )
    status_interval_s: float = setting(
        5.0, "seconds between status messages (faces/<node>/status)", gt=0
    )
    qos: int = setting(1, "MQTT QoS of the embeddings", min=0, max=2)
    # The result is the acknowledgement (issue 12): an embedding is kept until it comes.
    resend_after_s: float = setting(
        5.0,
        "seconds without a result before an embedding is sent again (the wait doubles "
        "with each try); the classifier answers a repeat from its recent answers",
        gt=0,
    )
    resend_tries: int = setting(
        4,
        "most times one embedding is sent; after the last try's wait it is forgotten "
        "and counted (unanswered in the status)",
        min=1,
        max=20,
    )
    buffer_max: int = setting(
        1000,
        "embeddings kept until their result arrives, sent or waiting for the broker "
        "(~2 KB each); when full the oldest is dropped and counted (dropped_buffer)",
        min=1,
        max=500_000,
    )
    gate_live: bool = setting(
        True,
        "apply the quality gate (quality.*) to live frames: a face that fails it is "
        "neither embedded nor sent",
    )
    reembed_named_s: float = setting(
        1.0,
        "a face whose track the classifier named with confidence (its score at least "
        "reembed_margin above the threshold) is embedded again at most this often, "
        "seconds, and when dedup_seconds says to send it again, so the CPU goes to new "
        "faces (0: every frame); a face found there where the frame before had none is "
        "embedded at once",
        min=0,
    )
    reembed_margin: float = setting(
        0.1, "how far above the threshold a track's score must be to count as confident", min=0
    )
    # 5: a face that walks in is found within a second at the default 5 fps, and four
    # frames in five skip the detector (docs/benchmarks.md, "Edge ≤ 20 ms")
    detect_every: int = setting(
        5,
        "full-frame detection on every Nth frame; in between, faces already found are "
        "followed by their landmarks (the landmark model on the region their previous "
        "landmarks place, as MediaPipe does on video), and detection runs at once when one "
        "is lost or moves too far to follow (1: detect on every frame; mesh_runtime "
        "mediapipe always does)",
        min=1,
        flag="--detect-every",
    )
    quality: QualityConfig = section(QualityConfig, "which faces are good enough to keep")
    pipeline: PipelineConfig = section(PipelineConfig, "the face pipeline")
    broker: BrokerConfig = section(BrokerConfig, "the MQTT broker", hint=BROKER_HINT)
    sealing: SealingConfig = section(SealingConfig, "sealed embeddings, signed results")


@dataclass
class TrackConfig:
    """A face followed across a node's frames, decided on once: faces/<node>/event."""

    enabled: bool = setting(True, "follow faces across frames and publish track events")
    gap_s: float = setting(
        2.0, "a track ends when no frame of it came for this long, seconds", gt=0
    )
    min_frames: int = setting(
        3, "frames a track needs before its decision is made (the 'arrived' event)", min=1
    )
    min_iou: float = setting(
        0.2, "a face continues a track whose last box it overlaps this much", min=0, max=1
    )
    min_similarity: float = setting(
        0.5,
        "… or whose vector it is at least this close to (cosine)",
        min=-1.0,
        max=1.0,
    )
    min_overlap_similarity: float = setting(
        0.4,
        "… and an overlapping face continues it only if its vector is at least this close "
        "(cosine): someone stepping into the place another just left starts a track of "
        "their own",
        min=-1.0,
        max=1.0,
    )
    auto_enrol: bool = setting(
        False,
        "opt-in: a track named far above the threshold (auto_margin) adds the vector of "
        "its best frame (full weight: large and sharp) to that person's samples",
    )
    auto_margin: float = setting(
        0.15, "auto_enrol: how far above the threshold the track's score must be", min=0
    )
    auto_max: int = setting(20, "auto_enrol: vectors added this way per person at most", min=1)


@dataclass
class HomeAssistantConfig:
    """Home Assistant MQTT discovery: a device per node, the classifier's, a tracker per person."""

    enabled: bool = setting(
        True,
        "publish Home Assistant discovery (retained, removed when a node or person goes) "
        "and the state topics its entities read",
    )
    prefix: str = setting(
        "homeassistant", "Home Assistant's discovery prefix (its MQTT integration's setting)"
    )
    unknown_off_s: float = setting(
        30.0,
        "the 'unknown person present' sensor turns off this long after an unknown face's "
        "last decision (off_delay), seconds",
        gt=0,
    )
    away_after_s: float = setting(
        600.0,
        "a person no node has seen for this long is away: presence not_home, and "
        "faces/person/<name> says event 'away', seconds",
        gt=0,
    )


@dataclass
class AlertsConfig:
    """Intruder alerts on faces/alerts: a node sees unknown faces again and again."""

    enabled: bool = setting(True, "publish intruder alerts on faces/alerts")
    unknown_count: int = setting(
        3, "unknown faces' track decisions on one node that make an alert", min=1
    )
    window_s: float = setting(60.0, "… within this many seconds", gt=0)


@dataclass
class MetricsConfig:
    """The classifier's Prometheus endpoint: /metrics on a port of its own (docs/metrics.md)."""

    enabled: bool = setting(True, "serve Prometheus metrics on host:port")
    # loopback by default: the endpoint has no login (node ids and gallery size are in it)
    host: str = setting("127.0.0.1", "address the metrics server binds")
    port: int = setting(9464, "metrics HTTP port (0: any free one)", min=0, max=65535)
    max_nodes: int = setting(
        20,
        "nodes named in per-node metrics (the deepest queues); the rest are summed as "
        "node=other, so many nodes cannot make many series",
        min=1,
        max=1000,
    )


@dataclass
class ClassifierConfig:
    """The classifier, ``facewire classifier``: gallery, then embeddings → names."""

    dataset: str = setting(
        "dataset/gallery", "gallery folder: <person>/[<subdir>/]<image>", flag="--dataset"
    )
    group: str = setting(
        "",
        "MQTT v5 shared-subscription group, to split the load across replicas "
        "(empty: a plain subscription)",
        flag="--group",
    )
    queue_size: int = setting(
        64,
        "messages queued per node; a full queue drops its oldest and says so",
        min=1,
        flag="--queue-size",
    )
    # Only a backlog fills a batch, so this trades nothing at normal rates; saturated,
    # 64 beat 32 (docs/benchmarks.md)
    batch_max: int = setting(64, "most queued messages searched in one FAISS call", min=1)
    stats_interval_s: float = setting(
        # not 0: a status per loop turn is thousands a second on the bus
        2.0,
        "seconds between status and threshold statistics messages",
        min=0.1,
    )
    stats_window: int = setting(
        1000, "recent queries kept for the live threshold statistics", min=1
    )
    cache_dir: str = setting("", "gallery embedding cache (empty: <dataset>/.facewire-cache)")
    remember: int = setting(
        20_000,
        "results whose vectors the classifier keeps, so a sighting can be named or "
        "corrected from the monitor (no image needed); the oldest are forgotten",
        min=0,
    )
    watch: bool = setting(
        True,
        "notice photos added, changed or removed under the dataset folder while running "
        "and update the gallery, without a restart (also on faces/gallery/reload)",
    )
    watch_poll_s: float = setting(
        2.0,
        "seconds between scans of the dataset folder; file-system events, where the "
        "platform gives them, wake the scan sooner",
        gt=0,
    )
    watch_settle_s: float = setting(
        0.5,
        "a change is taken once the folder has been still this long (photos still "
        "being copied are not embedded half-written)",
        min=0,
    )
    # A stable id and a persistent session: what arrives while it restarts is kept for
    # it. Never published (someone connecting with it would take the session over).
    client_id: str = setting(
        "facewire-classifier",
        "MQTT client id; give each replica of a --group its own",
        flag="--client-id",
    )
    session_expiry_s: int = setting(
        3600,
        "seconds the broker keeps this classifier's session (subscriptions and the QoS 1 "
        "embeddings sent meanwhile) while it is away (0: a clean session each time)",
        min=0,
        max=604_800,  # a week
    )
    result_qos: int = setting(
        1,
        "MQTT QoS of the results: 1 so a subscriber with a persistent session (the "
        "monitor) gets what was answered while it was away; 0 sends a batch in one write",
        min=0,
        max=1,
    )
    recent_answers: int = setting(
        512,
        "recent results kept per node, so an embedding sent again (its result was lost) "
        "is answered from them instead of being classified twice (0: none)",
        min=0,
        max=100_000,
    )
    search: SearchConfig = section(SearchConfig, "k-NN search and voting")
    track: TrackConfig = section(TrackConfig, "decisions over a track of frames")
    pipeline: PipelineConfig = section(PipelineConfig, "the face pipeline")
    broker: BrokerConfig = section(BrokerConfig, "the MQTT broker", hint=BROKER_HINT)
    sealing: SealingConfig = section(SealingConfig, "sealed embeddings, signed results")
    homeassistant: HomeAssistantConfig = section(HomeAssistantConfig, "Home Assistant discovery")
    alerts: AlertsConfig = section(AlertsConfig, "intruder alerts (faces/alerts)")
    metrics: MetricsConfig = section(MetricsConfig, "Prometheus metrics (/metrics)")


@dataclass
class MonitorConfig:
    """The web monitor, ``facewire monitor``: detection log and live pages."""

    host: str = setting("127.0.0.1", "address to serve the pages on", flag="--host")
    port: int = setting(6010, "HTTP port (0: any free one)", min=0, max=65535, flag="--port")
    db: str = setting("var/monitor.sqlite3", "SQLite detection log", flag="--db", metavar="PATH")
    window: int = setting(
        500,
        "newest detections kept in memory for the live pages",
        min=1,
        flag="--window",
        metavar="N",
    )
    client_id: str = setting(
        "facewire-monitor", "MQTT client id (one per monitor)", flag="--client-id"
    )
    session_expiry_s: int = setting(
        3600,
        "seconds the broker keeps this monitor's session (subscriptions and the QoS 1 "
        "results published meanwhile) while it is away (0: a clean session each time)",
        min=0,
        max=604_800,  # a week
    )
    # The pages show who was where: off loopback they need a login (issue 12, item 8).
    users: str = setting(
        "",
        "accounts that may log in, 'name:hash' separated by commas or spaces (a hash from "
        "`facewire monitor hash-password`); any account or token turns the login on, and "
        "the monitor refuses to serve on a non-loopback host without one",
        secret=True,
    )
    users_file: str = setting(
        "", "file of more accounts, one 'name:hash' per line ('#' comments)", metavar="PATH"
    )
    token: str = setting(
        "",
        "bearer token for scripts (Authorization: Bearer …), at least 16 characters; "
        "like an account, it turns the login on",
        secret=True,
    )
    secret_key: str = setting(
        "",
        "key that signs the login cookies (empty: one is made and kept in "
        "monitor-secret.key next to db)",
        secret=True,
    )
    session_hours: float = setting(12.0, "a login lasts this long, hours", gt=0, max=24 * 366)
    login_per_min: int = setting(
        10, "failed logins per client address per minute; more are refused (429)", min=1
    )
    teach_per_min: int = setting(
        30, "POST /api/teach per client address per minute; more are refused (429)", min=1
    )
    # Old rows are who-was-where history nobody asked to keep.
    retention_days: float = setting(
        30.0,
        "log rows older than this many days are deleted (checked hourly; SQLite "
        "secure_delete overwrites them); 0 keeps them forever",
        min=0,
    )
    max_nodes: int = setting(
        1000,
        "distinct node ids kept in memory; past it the least recently seen is forgotten "
        "(any client can invent ids)",
        min=1,
        max=100_000,
    )
    late_after_s: float = setting(
        5.0,
        "a result received more than this many seconds after its capture (edge clock) "
        "is shown as late",
        gt=0,
    )
    broker: BrokerConfig = section(BrokerConfig, "the MQTT broker", hint=BROKER_HINT)
    sealing: SealingConfig = section(SealingConfig, "sealed embeddings, signed results")


# The services, for the environment check (a variable must name a setting of one of
# them) and the reference.
SERVICES: dict[str, type] = {
    "edge": EdgeConfig,
    "classifier": ClassifierConfig,
    "monitor": MonitorConfig,
}
