"""Someone standing still at the door: the edge's de-duplication must still give the
classifier the frames a track decision needs, and the edge must then stop embedding
the face it has been told is named. Real broker, classifier, edge and photo."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from facewire import config
from facewire.bus import topics
from facewire.bus.client import BusClient
from facewire.bus.messages import TrackEvent
from facewire.config.schema import BrokerConfig, EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.sources import open_source
from tests.broker import Mosquitto
from tests.conftest import DATASET
from tests.gallery_rig import KNOWN, Rig, classifier_cfg


def test_a_standing_person_is_decided_on_and_then_not_embedded_every_frame(
    mosquitto: Mosquitto, gallery_dir: Path
) -> None:
    bus = BrokerConfig(url=mosquitto.url)
    rig = Rig(classifier_cfg(gallery_dir), BusClient(bus, "classifier"), BusClient(bus, "watch"))
    cfg = config.load(EdgeConfig, overrides={"node": "door", "broker.url": mosquitto.url}, env={})
    edge = EdgeNode(cfg, BusClient(bus, "edge-door")).start()
    try:
        # a camera's frames (a photo of a folder is a cut): the face is followed
        frame = replace(next(open_source(str(DATASET / "probes" / KNOWN[0]), fps=0)), cut=False)
        for _ in range(30):  # 3 s at 10 fps of the same face in the same place
            edge.process(frame)
            time.sleep(0.1)

        def arrived() -> list[TrackEvent]:
            return [
                e
                for e in (
                    TrackEvent.decode(m.payload) for m in rig.got if m.topic == topics.event("door")
                )
                if e.event == "arrived"
            ]

        deadline = time.monotonic() + 10
        while not arrived() and time.monotonic() < deadline:
            time.sleep(0.05)
        (event,) = arrived()  # one track, decided once
        assert event.name == KNOWN[0] and event.frames >= cfg.dedup_first
        # de-duplicated, but never so long between two sends that the track ended
        assert edge.dedup.skipped > 0
        assert not [
            m
            for m in rig.got
            if m.topic == topics.event("door") and TrackEvent.decode(m.payload).event == "left"
        ]
        # told it is named, the edge stops embedding that face on every frame
        assert edge.named.skipped > 0
    finally:
        edge.close(drain_s=1.0)
        rig.close()
