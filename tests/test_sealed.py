"""Sealed embeddings and signed results end to end (issue 12, item 3), on a real
mosquitto: the keys ``facewire nodes`` makes, a real edge node embedding real photos,
the classifier and the monitor's subscriber with ``sealing.enabled``, and an attacker
on the same broker who can read and publish everything the ACL would let through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facewire import config
from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.errors import WireError
from facewire.bus.messages import ErrorReport, Result
from facewire.bus.sealing import MAGIC, Sealer, is_sealed, key_folder, result_verifier
from facewire.bus.transport import Message
from facewire.config.schema import BrokerConfig, EdgeConfig
from facewire.edge.daemon import EdgeNode
from facewire.edge.sources import open_source
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber
from facewire.nodes_cli import main as nodes
from tests.broker import Mosquitto
from tests.conftest import DATASET
from tests.gallery_rig import KNOWN, Rig, classifier_cfg
from tests.waiting import wait_for

WINDOW_S = 4.0


@pytest.fixture
def sealed(tmp_path: Path, gallery_dir: Path, capsys) -> Iterator[dict[str, Any]]:
    secrets = tmp_path / "secrets"
    assert nodes(["--dir", str(secrets), "init"]) == 0
    assert nodes(["--dir", str(secrets), "add", "door"]) == 0
    capsys.readouterr()  # the printed passwords
    keys = str(secrets / "keys")
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    cfg = classifier_cfg(gallery_dir)
    cfg.sealing.enabled, cfg.sealing.keys, cfg.sealing.window_s = True, keys, WINDOW_S
    bus = BrokerConfig(url=broker.url)
    attacker = BusClient(bus, "attacker")
    rig = Rig(cfg, BusClient(bus, "classifier"), attacker)
    store = Store(str(tmp_path / "monitor.sqlite3"))
    state = State()
    monitor = Subscriber(BusClient(bus, "monitor"), store, state)
    monitor.verifier = result_verifier(key_folder(keys))
    monitor.start(timeout=10)
    edge_cfg = config.load(
        EdgeConfig,
        overrides={"node": "door", "broker.url": broker.url, "sealing.enabled": True,
                   "sealing.keys": keys},
        env={},
    )  # fmt: skip
    edge = EdgeNode(edge_cfg, BusClient(bus, "edge-door"))
    results: list[tuple[Result, float | None]] = []
    edge.on_result = lambda r, ms: results.append((r, ms))
    edge.start()
    yield {
        "rig": rig,
        "edge": edge,
        "results": results,
        "attacker": attacker,
        "store": store,
        "state": state,
        "secrets": secrets,
        "keys": keys,
        "broker": broker,
    }
    edge.close(drain_s=1.0)
    monitor.close()
    rig.close()
    store.close()
    broker.stop()


def embeddings_seen(rig: Rig) -> list[Message]:
    return [m for m in rig.got if m.topic == topics.embedding("door")]


def test_a_sealed_face_is_named_and_nobody_else_can_read_or_forge(sealed) -> None:
    rig, edge, results, attacker = (
        sealed["rig"],
        sealed["edge"],
        sealed["results"],
        sealed["attacker"],
    )
    person = KNOWN[0]
    for frame in open_source(str(DATASET / "probes" / person), fps=0):
        edge.process(frame)
    sent = edge.sent
    assert sent >= 3
    wait_for(lambda: len(results) >= sent, what="a result for every photo")
    names = [r.name for r, _ in results]
    assert names.count(person) >= sent - 1 and set(names) <= {person, "unknown"}

    # what the broker and every other subscriber saw: ciphertext, never the vector
    seen = wait_for(lambda: embeddings_seen(rig), what="the embeddings on the wire")
    assert all(is_sealed(m.payload) and m.payload[:2] == MAGIC for m in seen)
    for m in seen:
        with pytest.raises(WireError):
            codec.decode(m.payload)

    # the monitor logged each (signed) result
    wait_for(lambda: len(sealed["store"].query(limit=100)) >= sent, what="the monitor's rows")

    # an attacker's plain, forged and misaddressed embeddings are refused, with reasons
    processed = rig.service.processed
    attacker.publish(topics.embedding("door"), b"FW" + b"\x00" * 60, qos=1)
    forged = bytearray(seen[0].payload)
    forged[-3] ^= 0xFF
    attacker.publish(topics.embedding("door"), bytes(forged), qos=1)

    def reasons() -> set[str]:
        return {
            ErrorReport.decode(m.payload).reason for m in rig.got if m.topic == topics.error("door")
        }

    wait_for(lambda: reasons() >= {"unsealed", "bad_seal"}, what="the refusals")
    assert rig.service.processed == processed

    # a result forged on the node's result topic: not shown by the monitor, not taken by
    # the edge (a copy of a real one with the name changed, and one never signed)
    real = next(m for m in rig.got if m.topic == topics.result("door")).payload
    before_rows = len(sealed["store"].query(limit=100))
    before_results = len(results)
    fake = real.replace(person.encode(), b"mallory") if person.encode() in real else real + b" "
    attacker.publish(topics.result("door"), fake, qos=1)
    unsigned = Result.decode(real)
    attacker.publish(topics.result("door"), unsigned.encode(), qos=1)
    wait_for(lambda: edge.forged >= 2, what="the edge refusing the forgeries")
    time.sleep(0.3)
    assert len(results) == before_results
    assert len(sealed["store"].query(limit=100)) == before_rows
    assert all(row["name"] != "mallory" for row in sealed["store"].query(limit=100))
    assert sealed["state"].malformed_total >= 2


def test_a_replay_is_answered_once_then_refused_as_stale(sealed) -> None:
    rig, edge, results, attacker = (
        sealed["rig"],
        sealed["edge"],
        sealed["results"],
        sealed["attacker"],
    )
    frame = next(open_source(str(DATASET / "probes" / KNOWN[1]), fps=0))
    edge.process(frame)
    wait_for(lambda: results, what="the first result")
    captured = embeddings_seen(rig)[-1].payload
    processed = rig.service.processed
    # replayed at once: the repeat is answered from the recent answers, not classified
    attacker.publish(topics.embedding("door"), captured, qos=1)
    wait_for(lambda: rig.service.repeats >= 1, what="the repeat answered")
    assert rig.service.processed == processed
    # replayed after the freshness window: refused
    time.sleep(WINDOW_S + 0.5)
    attacker.publish(topics.embedding("door"), captured, qos=1)

    def stale() -> bool:
        return any(
            m.topic == topics.error("door") and ErrorReport.decode(m.payload).reason == "stale"
            for m in rig.got
        )

    wait_for(stale, what="the stale refusal")
    assert rig.service.processed == processed


def test_a_node_added_while_running_is_heard_without_a_restart(sealed, capsys) -> None:
    rig, attacker = sealed["rig"], sealed["attacker"]
    assert nodes(["--dir", str(sealed["secrets"]), "add", "porch"]) == 0
    capsys.readouterr()
    from facewire.bus.keys import KeyRing

    ring = KeyRing(Path(sealed["keys"]))
    sealer = Sealer(ring.node_signing_key("porch"), ring.classifier_box_public())
    msg = codec.EmbeddingMessage(
        "porch", 1, 1, 0, (0, 0, 90, 90), rig.service.index.model_id, time.time(), {},
        (8100.0, 100.0, 120.0), _unit(rig.service.index.matcher.dim),
    )  # fmt: skip
    rig.service._keys_read -= 10  # as if read 10 s ago: the next unknown node re-reads them
    attacker.publish(topics.embedding("porch"), sealer.seal(codec.encode(msg)), qos=1)
    wait_for(
        lambda: any(m.topic == topics.result("porch") for m in rig.got),
        what="porch's result",
    )


def _unit(dim: int) -> Any:
    import numpy as np

    v = np.ones(dim, np.float32)
    return v / np.linalg.norm(v)


def test_a_removed_nodes_home_assistant_device_goes_with_its_key(sealed, capsys) -> None:
    from facewire.bus.messages import EdgeStatus
    from facewire.classifier import homeassistant as ha

    rig, attacker = sealed["rig"], sealed["attacker"]
    assert nodes(["--dir", str(sealed["secrets"]), "add", "porch"]) == 0
    capsys.readouterr()
    assert rig.service.reload_node_keys()
    attacker.subscribe("homeassistant/#", rig.got.append)
    status = EdgeStatus("porch", "online", ts=time.time())
    attacker.publish(topics.status("porch"), status.encode(), qos=1, retain=True)
    config = topics.ha_device_config(
        rig.service.cfg.homeassistant.prefix, ha.node_object_id("porch")
    )

    def configs() -> list[bytes]:
        return [m.payload for m in list(rig.got) if m.topic == config]

    wait_for(lambda: any(configs()), what="porch's Home Assistant device")
    assert nodes(["--dir", str(sealed["secrets"]), "remove", "porch"]) == 0
    capsys.readouterr()
    assert rig.service.reload_node_keys()  # as the classifier does every 10 s
    wait_for(lambda: configs() and configs()[-1] == b"", what="the device removed")
