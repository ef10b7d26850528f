"""A classifier, its gallery keeper and reloader, and a listener, for the tests of a
gallery that changes (reload, enrolment, correction)."""

from __future__ import annotations

import time
from pathlib import Path

from facewire.bus import codec, topics
from facewire.bus.messages import Result
from facewire.bus.transport import Message, Transport
from facewire.classifier.keeper import GalleryKeeper, Reloader
from facewire.classifier.service import ClassifierService
from facewire.config.schema import ClassifierConfig
from tests.conftest import GALLERY_PEOPLE

KNOWN = list(GALLERY_PEOPLE)
NEWCOMER = "ORL_s04"


def classifier_cfg(root: Path, **kw: object) -> ClassifierConfig:
    cfg = ClassifierConfig(dataset=str(root), stats_interval_s=60.0)
    cfg.watch_poll_s, cfg.watch_settle_s = 0.1, 0.1
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


class Rig:
    def __init__(self, cfg: ClassifierConfig, transport: Transport, listener: Transport) -> None:
        self.keeper = GalleryKeeper(cfg)
        self.service = ClassifierService(cfg, self.keeper.build().index, transport)
        self.got: list[Message] = []
        self.listener = listener
        listener.subscribe("faces/#", self.got.append)
        listener.connect(timeout=5)
        self.service.start(timeout=5)
        self.reloader = Reloader(self.keeper, self.service).start()

    def ask(self, person: str, vectors: dict, seq: int) -> Result:
        msg = codec.EmbeddingMessage(
            "door", seq, seq, 0, (0, 0, 9, 9), vectors["model"], time.time(), {}, (81.0, 1.0, 1.0),
            vectors[person],
        )  # fmt: skip
        self.listener.publish(topics.embedding("door"), codec.encode(msg), qos=1)
        return Result.decode(self.wait_for(topics.result("door"), lambda r: r.seq == seq, Result))

    def wait_for(self, topic: str, cond, cls, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in list(self.got):
                if m.topic == topic and m.payload and cond(cls.decode(m.payload)):
                    return m.payload
            time.sleep(0.02)
        raise AssertionError(f"nothing on {topic} in {timeout} s")

    def close(self) -> None:
        self.reloader.stop()
        self.service.stop()
        self.keeper.close()
        self.listener.close()
