"""``facewire enroll``: good, different faces captured with the edge's pipeline (the
quality gate, near-duplicates), sent as one enrolment, and what the classifier said.

Real photos from ``dataset/`` and the real models; the bad faces are made from real
photos with OpenCV (darkened, blurred, shrunk, washed out). Only the tests named
``*_over_the_broker`` cross the wire (a real mosquitto)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import ClassifierStatus, Enrolment, GalleryReply
from facewire.bus.transport import Message, Transport
from facewire.classifier import gallery_cli
from facewire.config.schema import BrokerConfig, PipelineConfig, QualityConfig
from facewire.edge import enroll
from facewire.edge.enroll import Capture, capture_faces, make_enrolment, send_enrolment
from facewire.edge.quality import passes
from facewire.edge.sources import Frame, open_source
from facewire.models import FacePipeline
from facewire.models.files import list_photos
from tests.conftest import DATASET, ROOT

GALLERY = DATASET / "gallery"
#: the gate of a camera whose faces are larger than the sample's smallest (the default
#: min_area lets those through)
CAMERA_GATE = QualityConfig(min_area=2500.0)


@pytest.fixture(scope="module")
def pipeline() -> Iterator[FacePipeline]:
    p = FacePipeline(PipelineConfig())
    yield p
    p.close()


@pytest.fixture(scope="module")
def photos(pipeline: FacePipeline) -> list[np.ndarray]:
    """One photo each of 10 people, faces of 4000 px or more (made bad below)."""
    out: dict[str, np.ndarray] = {}
    for photo in list_photos(GALLERY):
        person = photo.relative_to(GALLERY).parts[0]
        image = read(photo)
        found = pipeline.detect(image)
        if person not in out and len(found) == 1 and found[0].quality.area >= 4000:
            out[person] = image
    assert len(out) >= 10
    return list(out.values())[:10]


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def frames(*images: np.ndarray, labels: list[str] | None = None) -> list[Frame]:
    names = labels or [f"f{i}.jpg" for i in range(len(images))]
    return [
        Frame(i, im, time.time(), time.perf_counter(), 0.0, name)
        for i, (im, name) in enumerate(zip(images, names, strict=True))
    ]


def darken(im: np.ndarray) -> np.ndarray:
    return (im.astype(np.float32) * 0.2).astype(np.uint8)


def wash_out(im: np.ndarray) -> np.ndarray:
    return np.clip(im.astype(np.float32) * 0.3 + 190, 0, 255).astype(np.uint8)


def blur(im: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(im, (0, 0), 4)


def shrink(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    """The photo made small on a grey frame twice its size: a face far away."""

    def small(im: np.ndarray) -> np.ndarray:
        little = cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((im.shape[0] * 2, im.shape[1] * 2, 3), 128, np.uint8)
        canvas[40 : 40 + little.shape[0], 40 : 40 + little.shape[1]] = little
        return canvas

    return small


# --- the gate --------------------------------------------------------------------------


def test_the_default_gate_passes_every_sample_face(pipeline: FacePipeline) -> None:
    gate = QualityConfig()
    faces = 0
    for photo in list_photos(DATASET):
        found = pipeline.detect(read(photo))
        if found:  # the largest; the samples/ photos hold no face
            faces += 1
            assert passes(found[0], gate) is None, photo
    assert faces >= 290


@pytest.mark.parametrize(
    ("make", "kind", "gate"),
    [
        (darken, "too dark", QualityConfig()),
        (wash_out, "too bright", QualityConfig()),
        (blur, "blurred", QualityConfig()),
        (shrink(0.5), "too small", CAMERA_GATE),
    ],
    ids=["dark", "washed-out", "blurred", "small"],
)
def test_the_gate_refuses_bad_faces_made_from_good_photos(
    pipeline: FacePipeline,
    photos: list[np.ndarray],
    make: Callable[[np.ndarray], np.ndarray],
    kind: str,
    gate: QualityConfig,
) -> None:
    seen = 0
    for i, image in enumerate(photos):
        assert passes(pipeline.detect(image)[0], gate) is None
        bad = pipeline.detect(make(image))
        if len(bad) == 1:  # a face the detector still finds: the gate must refuse it
            seen += 1
            reason = passes(bad[0], gate)
            assert reason is not None and reason.startswith(f"{kind}: "), (i, reason)
    assert seen >= len(photos) - 2


def test_capture_keeps_good_faces_and_says_why_not_the_rest(
    pipeline: FacePipeline, photos: list[np.ndarray]
) -> None:
    a, b = photos[0], photos[1]
    lines: list[str] = []
    got = capture_faces(
        pipeline,
        frames(
            a,
            darken(b),
            blur(b),
            shrink(0.5)(b),
            wash_out(b),
            np.hstack([a, b]),
            read(DATASET / "samples" / "coffee.jpg"),
            b,
        ),
        CAMERA_GATE,
        count=8,
        progress=lambda capture, line: lines.append(line),
    )
    assert [k.frame for k in got.kept] == ["f0.jpg", "f7.jpg"]
    assert dict(got.refused) == {
        "too dark": 1,
        "blurred": 1,
        "too small": 1,
        "too bright": 1,
        "more than one face": 1,
        "no face": 1,
    }
    assert got.frames == 8 and not got.timed_out
    assert len(lines) == 8 and lines[1].startswith("f1.jpg: too dark: brightness")
    for k in got.kept:
        assert k.quality.area > 0 and k.quality.blur > 0 and 0 < k.quality.brightness < 255


def test_near_duplicates_are_skipped(pipeline: FacePipeline, photos: list[np.ndarray]) -> None:
    a, b = photos[0], photos[1]
    got = capture_faces(pipeline, frames(a, a, b), QualityConfig(), count=8)
    assert [k.frame for k in got.kept] == ["f0.jpg", "f2.jpg"]
    assert dict(got.refused) == {"near-duplicate": 1}
    assert got.kept[0].closest is None
    assert got.kept[1].closest is not None and got.kept[1].closest < 0.95
    # the same photo at a looser limit is still one view twice; a limit under the two
    # people's similarity keeps only the first face
    strict = capture_faces(
        pipeline, frames(a, b), QualityConfig(), max_similarity=got.kept[1].closest - 0.01
    )
    assert [k.frame for k in strict.kept] == ["f0.jpg"]


def test_capture_stops_at_count_or_timeout(pipeline: FacePipeline) -> None:
    person = list_photos(GALLERY / "ORL_s05")
    got = capture_faces(pipeline, open_source(str(GALLERY / "ORL_s05"), 0), QualityConfig(), 2)
    assert len(got.kept) == 2 and got.frames == 2 and len(person) > 2
    nobody = read(DATASET / "samples" / "coffee.jpg")
    endless = (Frame(i, nobody, 0.0, 0.0, 0.0) for i in itertools.count())
    t0 = time.monotonic()
    got = capture_faces(pipeline, endless, QualityConfig(), 8, timeout=0.3)
    assert got.timed_out and not got.kept and got.refused["no face"] == got.frames > 0
    assert time.monotonic() - t0 < 3


# --- the enrolment ---------------------------------------------------------------------


def capture_of(pipeline: FacePipeline, person: str, count: int = 8) -> Capture:
    return capture_faces(pipeline, open_source(str(GALLERY / person), 0), QualityConfig(), count)


class FakeClassifier:
    """Answers enrolments as the classifier does (a GalleryReply to the request id):
    keeps all but the last vector, or none for a name starting with ``nobody``."""

    def __init__(self, transport: Transport) -> None:
        self.bus = transport
        self.got: list[Enrolment] = []
        transport.subscribe(topics.ENROLL, self.on_enrol, qos=1)

    def on_enrol(self, m: Message) -> None:
        e = Enrolment.decode(m.payload)
        self.got.append(e)
        n = len(e.vectors)
        keep = 0 if e.name.startswith("nobody") else n - 1
        refused = tuple(f"vector {i}: a near-duplicate" for i in range(keep, n))
        detail = f"kept {keep} of {n} for {e.name}"
        # someone else's reply first: the enrolment must wait for its own
        other = GalleryReply("reload", True, "no change", request_id="another")
        self.bus.publish(topics.GALLERY_REPLIES, other.encode(), qos=1)
        reply = GalleryReply(
            "enroll", True, detail, request_id=e.request_id, added=keep, refused=refused,
            identities=4, vectors=20, version="abc123",
        )  # fmt: skip
        self.bus.publish(topics.GALLERY_REPLIES, reply.encode(), qos=1)


def test_the_enrolment_carries_unit_norm_vectors_of_the_model(pipeline: FacePipeline) -> None:
    got = capture_of(pipeline, "ORL_s05")
    n = len(got.kept)  # the folder's 6 photos, but for a near-duplicate view or two
    assert n >= 4 and n + got.refused["near-duplicate"] == got.frames == 6
    e = make_enrolment("alice", got, pipeline.model_id)
    again = Enrolment.decode(e.encode())
    assert again == e and again.name == "alice" and again.source == "camera"
    assert again.model == pipeline.model_id and again.request_id == e.request_id
    assert len(again.vectors) == n
    for vec in again.vectors:
        assert vec.dtype == np.float32 and vec.shape == (pipeline.embedder.dim,)
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert make_enrolment("alice", got, pipeline.model_id).request_id != e.request_id


def test_send_enrolment_waits_for_its_own_reply(pipeline: FacePipeline) -> None:
    broker = MemoryBroker()
    classifier = broker.transport("classifier")
    fake = FakeClassifier(classifier)
    classifier.connect()
    e = make_enrolment("alice", capture_of(pipeline, "ORL_s06", 3), pipeline.model_id)
    reply = send_enrolment(broker.transport("enroll-door"), e, wait=5)
    assert reply is not None and reply.request_id == e.request_id
    assert reply.action == "enroll" and reply.added == 2 and len(reply.refused) == 1
    assert len(fake.got) == 1 and fake.got[0] == e
    # nobody answers: None after the wait
    silent = MemoryBroker()
    t0 = time.monotonic()
    assert send_enrolment(silent.transport("enroll-door"), e, wait=0.2) is None
    assert time.monotonic() - t0 < 2


NAMES_OK = ["alice", "ORL_s01", "Zoë Smith", "李小龙", "o'neil-2", "a" * 128]
NAMES_BAD = [
    ("", "empty"),
    ("unknown", "for nobody"),
    ("Unknown", "for nobody"),
    ("a/b", "'/'"),
    ("..", "starts with '.'"),
    (".hidden", "starts with '.'"),
    ("a\\b", "'\\\\'"),
    ("tab\there", "control character"),
    ("nul\x00", "control character"),
    ("line\u2028break", "control character"),
    (" alice", "space"),
    ("a" * 129, "over 128 bytes"),
    ("é" * 65, "over 128 bytes"),
]


@pytest.mark.parametrize("check", [enroll.check_name, gallery_cli.check_name])
def test_names_are_checked_alike_by_enroll_and_gallery(check: Callable) -> None:
    for name in NAMES_OK:
        assert check(name) is None, name
    for name, why in NAMES_BAD:
        problem = check(name)
        assert problem is not None and why in problem, (name, problem)


def test_enroll_refuses_a_bad_name_before_anything_else(capsys: pytest.CaptureFixture) -> None:
    assert enroll.main(["--name", "unknown", "--broker", "mqtt://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "--name: 'unknown' is what the classifier says for nobody" in err
    with pytest.raises(SystemExit) as stop:
        enroll.main(["--name", "x", "--count", "65"])
    assert stop.value.code == 2 and "not in 1..64" in capsys.readouterr().err


def test_dry_run_prints_the_figures_and_sends_nothing(capsys: pytest.CaptureFixture) -> None:
    # no broker at this address: a dry run never connects
    argv = ["--name", "alice", "--source", str(GALLERY / "ORL_s07"), "--fps", "0", "--dry-run"]
    assert enroll.main([*argv, "--broker", "mqtt://127.0.0.1:1", "--count", "3"]) == 0
    out, err = capsys.readouterr()
    assert "sharpness" in out and "brightness" in out and "dry run: nothing sent" in out
    assert (
        len([line for line in out.splitlines() if line.strip().startswith(("1 ", "2 ", "3 "))]) == 3
    )
    assert "[3/3]" in err
    # a folder without faces: nothing captured, exit 1
    argv = ["--name", "alice", "--source", str(DATASET / "samples"), "--fps", "0", "--dry-run"]
    assert enroll.main(argv) == 1
    assert "no good face of alice captured" in capsys.readouterr().err


def test_every_help_works(capsys: pytest.CaptureFixture) -> None:
    from facewire import cli

    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "enroll" in text and "gallery" in text
    for argv in (
        ["enroll"],
        ["gallery"],
        ["gallery", "list"],
        ["gallery", "add"],
        ["gallery", "remove"],
        ["gallery", "forget"],
    ):
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, "--help"])
        assert stop.value.code == 0
        assert f"usage: facewire {' '.join(argv)}" in capsys.readouterr().out


# --- over the broker -------------------------------------------------------------------


def test_enroll_over_the_broker_with_a_classifier_that_answers(
    mosquitto, capsys: pytest.CaptureFixture
) -> None:
    classifier = BusClient(BrokerConfig(url=mosquitto.url), "fake-classifier")
    fake = FakeClassifier(classifier)
    classifier.connect()
    try:
        source = str(DATASET / "probes" / "ORL_s05")
        argv = ["--source", source, "--fps", "0", "--broker", mosquitto.url, "--wait", "10"]
        assert enroll.main(["--name", "alice", "--count", "3", *argv]) == 0
        out = capsys.readouterr().out
        assert "the classifier kept 2 of 3 vectors for alice" in out
        assert "refused: vector 2: a near-duplicate" in out
        assert "gallery now: 4 people, 20 vectors (version abc123)" in out
        assert len(fake.got) == 1 and len(fake.got[0].vectors) == 3
        assert fake.got[0].name == "alice" and fake.got[0].source == "camera"
        # a classifier that keeps none: exit 1
        assert enroll.main(["--name", "nobody-x", *argv]) == 1
        assert "kept none of the 4 vectors for nobody-x" in capsys.readouterr().out
    finally:
        classifier.close()
    # no classifier at all: exit 1, and it says so
    argv[-1] = "0.5"
    assert enroll.main(["--name", "alice", *argv]) == 1
    assert "no reply from a classifier within 0.5 s" in capsys.readouterr().err


def test_enroll_says_when_the_broker_is_not_there(capsys: pytest.CaptureFixture) -> None:
    from tests.broker import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"
    argv = ["--name", "alice", "--broker", url, "--source", "nowhere", "--connect-timeout", "0.5"]
    assert enroll.main(argv) == 1
    assert f"broker mqtt://127.0.0.1:{url.rsplit(':', 1)[1]}" in capsys.readouterr().err


def test_enroll_list_and_forget_over_the_broker_with_the_real_classifier(
    mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    root = tmp_path / "gallery"
    for person in ("ORL_s01", "ORL_s02", "ORL_s03"):
        shutil.copytree(GALLERY / person, root / person)
    log = tmp_path / "classifier.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "facewire", "classifier", "--dataset", str(root),
             "--broker", mosquitto.url],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink,
        )  # fmt: skip
    try:
        ready = threading.Event()

        def on_status(m: Message) -> None:
            if m.payload and ClassifierStatus.decode(m.payload).state == "online":
                ready.set()

        watcher = BusClient(BrokerConfig(url=mosquitto.url), "watcher")
        watcher.subscribe(topics.CLASSIFIER_STATUS, on_status)
        watcher.connect()
        assert ready.wait(60), f"the classifier did not come online: {log.read_text()[-2000:]}"
        watcher.close()
        source = str(DATASET / "probes" / "ORL_s04")
        argv = ["--name", "newcomer", "--source", source, "--fps", "0", "--wait", "30"]
        assert enroll.main([*argv, "--broker", mosquitto.url]) == 0
        assert "the classifier kept 4 of 4 vectors for newcomer" in capsys.readouterr().out
        assert enroll.main([*argv, "--broker", mosquitto.url]) == 1  # the same views again
        assert "kept none of the 4 vectors" in capsys.readouterr().out
        dataset = ["--dataset", str(root)]
        assert gallery_cli.main(["list", "--json", *dataset]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["newcomer"]["enrolled"] == {"camera": 4} and rows["newcomer"]["photos"] == 0
        forget = ["forget", "newcomer", "--yes", *dataset, "--broker", mosquitto.url]
        assert gallery_cli.main(forget) == 0
        out = capsys.readouterr().out
        assert "4 enrolled vectors" in out and "4 removed" in out
    finally:
        proc.terminate()
        proc.wait(15)
