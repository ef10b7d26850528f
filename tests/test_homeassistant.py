"""Home Assistant MQTT discovery on a real broker: the classifier running on a small
gallery, an edge node's retained status, faces named and unknown; everything under
``homeassistant/#`` is checked against Home Assistant's documented discovery schema
(required keys per component, only known abbreviations, unique ids unique, every topic
a config names carries a message, and the fields its templates read); the configs come
again when Home Assistant says ``online``; a node or person removed leaves an empty
retained config."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient
from facewire.bus.messages import EdgeStatus, PersonSighting
from facewire.bus.transport import Message
from facewire.config.schema import BrokerConfig
from tests.broker import Mosquitto
from tests.gallery_rig import KNOWN, Rig, classifier_cfg

PREFIX = "homeassistant"
NODE = "door"

# --- Home Assistant's discovery schema, as its MQTT documentation gives it ------------------
# (written from the documentation, not from the code under test)

#: abbreviation → full key ("Supported abbreviations in MQTT discovery messages")
HA_ABBREVIATIONS = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "cmps": "components",
    "dev": "device",
    "dev_cla": "device_class",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "evt_typ": "event_types",
    "exp_aft": "expire_after",
    "ic": "icon",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "off_dly": "off_delay",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_home": "payload_home",
    "pl_not_avail": "payload_not_available",
    "pl_not_home": "payload_not_home",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "pl_rst": "payload_reset",
    "qos": "qos",
    "src_type": "source_type",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
HA_DEVICE_ABBREVIATIONS = {
    "cns": "connections",
    "cu": "configuration_url",
    "hw": "hw_version",
    "ids": "identifiers",
    "mdl": "model",
    "mdl_id": "model_id",
    "mf": "manufacturer",
    "name": "name",
    "sa": "suggested_area",
    "sn": "serial_number",
    "sw": "sw_version",
    "via_device": "via_device",
}
HA_ORIGIN_ABBREVIATIONS = {"name": "name", "sw": "sw_version", "url": "support_url"}
#: required keys per platform (full names)
HA_REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "event": {"state_topic", "event_types"},
    "device_tracker": set(),
}
SOURCE_TYPES = {"gps", "router", "bluetooth", "bluetooth_le"}
OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
SIMPLE_TEMPLATE = re.compile(r"^\{\{ value_json((?:\.\w+)+) \}\}$")


def expand(data: dict[str, Any], table: dict[str, str], what: str) -> dict[str, Any]:
    """Abbreviations replaced by full keys; a key Home Assistant does not know fails."""
    known = set(table) | set(table.values())
    unknown = set(data) - known
    assert not unknown, f"{what}: keys Home Assistant does not know: {sorted(unknown)}"
    return {table.get(k, k): v for k, v in data.items()}


def check_device(dev: dict[str, Any], what: str) -> dict[str, Any]:
    dev = expand(dev, HA_DEVICE_ABBREVIATIONS, f"{what}.device")
    assert dev.get("identifiers") or dev.get("connections"), f"{what}: a device needs ids"
    return dev


def entities(topic: str, payload: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(platform, full-key config) of each entity a discovery message declares, checked
    against the schema on the way."""
    parts = topic.split("/")
    assert parts[0] == PREFIX and parts[-1] == "config", topic
    assert all(OBJECT_ID.match(p) for p in parts[1:-1]), f"{topic}: ids must be [a-zA-Z0-9_-]"
    data = json.loads(payload)
    if parts[1] == "device":  # device-based: dev, o, cmps
        assert len(parts) == 4, topic
        top = expand(data, HA_ABBREVIATIONS, topic)
        for key in ("device", "origin", "components"):
            assert key in top, f"{topic}: '{key}' is required in a device discovery"
        check_device(top["device"], topic)
        origin = expand(top["origin"], HA_ORIGIN_ABBREVIATIONS, f"{topic}.origin")
        assert origin.get("name"), f"{topic}: the origin needs a name"
        shared = {k: v for k, v in top.items() if k not in ("components",)}
        out = []
        for cid, comp in top["components"].items():
            assert OBJECT_ID.match(cid), cid
            full = {**shared, **expand(comp, HA_ABBREVIATIONS, f"{topic}:{cid}")}
            platform = full.pop("platform", None)
            assert platform in HA_REQUIRED, f"{topic}:{cid}: platform {platform!r}"
            assert full.get("unique_id"), f"{topic}:{cid}: device discovery needs unique_id"
            out.append((platform, full))
        return out
    assert len(parts) in (4, 5), topic
    platform = parts[1]
    assert platform in HA_REQUIRED, topic
    full = expand(data, HA_ABBREVIATIONS, topic)
    if "device" in full:
        check_device(full["device"], topic)
        assert full.get("unique_id"), f"{topic}: an entity of a device needs unique_id"
    if "origin" in full:
        expand(full["origin"], HA_ORIGIN_ABBREVIATIONS, f"{topic}.origin")
    return [(platform, full)]


def render(template: str, payload: bytes) -> Any:
    """A ``{{ value_json.a.b }}`` template rendered on a JSON payload (the only kind
    these configs use; anything else fails the test)."""
    m = SIMPLE_TEMPLATE.match(template)
    assert m, f"not a simple value_json template: {template!r}"
    value: Any = json.loads(payload)
    for key in m.group(1).strip(".").split("."):
        assert isinstance(value, dict) and key in value, f"{template}: no '{key}' in {value}"
        value = value[key]
    return value


# --- the rig -----------------------------------------------------------------------------


class Recorder:
    """Every message on the filters it is given, in order (the network thread writes)."""

    def __init__(self, client: BusClient, *filters: str) -> None:
        self.client = client
        self.got: list[Message] = []
        self._lock = threading.Lock()
        for f in filters:
            client.subscribe(f, self._on, qos=1)

    def _on(self, m: Message) -> None:
        with self._lock:
            self.got.append(m)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.got if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        """The newest non-empty payload on ``topic``."""
        full = [m.payload for m in self.on(topic) if m.payload]
        return full[-1] if full else None

    def wait(self, what: str, cond: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def configs(self) -> dict[str, bytes]:
        """The latest discovery message per config topic (empty: removed)."""
        out: dict[str, bytes] = {}
        with self._lock:
            for m in self.got:
                if m.topic.startswith(f"{PREFIX}/") and m.topic.endswith("/config"):
                    out[m.topic] = m.payload
        return out


def retained(broker: BrokerConfig, topic_filter: str, settle_s: float = 1.0) -> dict[str, bytes]:
    """What the broker retains under ``topic_filter``, as a new subscriber sees it."""
    client = BusClient(broker, f"probe-{time.monotonic_ns()}").connect(timeout=5)
    try:
        rec = Recorder(client, topic_filter)
        time.sleep(settle_s)
        return {m.topic: m.payload for m in rec.got if m.retain}
    finally:
        client.close()


@pytest.fixture
def world(mosquitto: Mosquitto, gallery_dir: Path) -> Iterator[dict[str, Any]]:
    broker = BrokerConfig(url=mosquitto.url)
    edge = BusClient(broker, "edge-door").connect(timeout=5)
    status = EdgeStatus(NODE, "online", model="sface", ts=time.time())
    edge.publish(topics.status(NODE), status.encode(), qos=1, retain=True)
    edge.flush()
    ha = BusClient(broker, "home-assistant").connect(timeout=5)
    rec = Recorder(ha, f"{PREFIX}/#", "faces/#")
    cfg = classifier_cfg(gallery_dir)
    cfg.track.min_frames, cfg.track.gap_s = 1, 1.0
    cfg.alerts.unknown_count, cfg.alerts.window_s = 2, 60.0
    rig = Rig(cfg, BusClient(broker, "cls"), BusClient(broker, "ops"))
    w = {"broker": broker, "edge": edge, "ha": ha, "rec": rec, "rig": rig, "dir": gallery_dir}
    try:
        yield w
    finally:
        w["rig"].close()  # the one running at the end
        ha.close()
        edge.close()


def send(rig: Rig, vector: np.ndarray, seq: int, box: tuple[int, int, int, int]) -> None:
    model = rig.service.index.model_id
    msg = codec.EmbeddingMessage(
        NODE, seq, seq, 0, box, model, time.time(), {}, (9216.0, 150.0, 120.0),
        vector.astype(np.float32),
    )  # fmt: skip
    rig.listener.publish(topics.embedding(NODE), codec.encode(msg), qos=1)


def faces(rig: Rig) -> None:
    """A known person's track, and two strangers' (an intruder alert at count 2)."""
    gallery = rig.keeper.gallery
    assert gallery is not None
    labels = np.asarray(gallery.labels)
    alice = gallery.vectors[labels == KNOWN[0]][0]
    send(rig, alice, 1, (10, 10, 80, 80))
    send(rig, alice, 2, (12, 10, 80, 80))
    rng = np.random.default_rng(13)
    for seq, x in ((3, 300), (4, 600)):
        v = rng.standard_normal(alice.shape[0]).astype(np.float32)
        send(rig, v / np.linalg.norm(v), seq, (x, x, 80, 80))


def check_all(rec: Recorder, configs: dict[str, bytes]) -> dict[str, str]:
    """Every config against the schema and against the topics it names; unique id →
    platform."""
    ids: dict[str, str] = {}
    for topic, payload in sorted(configs.items()):
        for platform, full in entities(topic, payload):
            uid = full["unique_id"]
            assert uid not in ids, f"unique id {uid} twice"
            ids[uid] = platform
            missing = HA_REQUIRED[platform] - set(full)
            assert not missing, f"{uid}: {platform} needs {missing}"
            for a in full.get("availability", []):
                a = expand(a, HA_ABBREVIATIONS, f"{uid}.availability")
                body = rec.wait(f"a message on {a['topic']}", lambda a=a: rec.last(a["topic"]))
                state = render(a["value_template"], body)
                assert state in (a.get("payload_available", "online"),
                                 a.get("payload_not_available", "offline"))  # fmt: skip
            assert full.get("availability_mode", "latest") in ("all", "any", "latest")
            for key in ("state_topic", "json_attributes_topic"):
                if key not in full:
                    continue
                t = full[key]
                body = rec.wait(f"{uid}: a message on {t}", lambda t=t: rec.last(t))
                assert isinstance(json.loads(body), dict)  # attributes: a JSON object
            body = rec.last(full["state_topic"]) if "state_topic" in full else None
            value = render(full["value_template"], body) if "value_template" in full else None
            if platform == "binary_sensor":
                assert value in (full.get("payload_on", "ON"), full.get("payload_off", "OFF"))
                assert isinstance(full["off_delay"], int) and full["off_delay"] > 0
            elif platform == "event":
                types = full["event_types"]
                assert types and all(isinstance(t, str) for t in types)
                assert json.loads(body or b"{}").get("event_type") in types
            elif platform == "device_tracker":
                assert full.get("source_type", "gps") in SOURCE_TYPES
                assert value == full.get("payload_not_home", "not_home") or value == NODE
            elif platform == "sensor":
                assert value is not None
    return ids


# --- the tests ---------------------------------------------------------------------------


def test_discovery_follows_home_assistants_schema(world: dict[str, Any]) -> None:
    rec, rig = world["rec"], world["rig"]
    faces(rig)
    node_cfg = f"{PREFIX}/device/facewire_{NODE}/config"
    clf_cfg = f"{PREFIX}/device/facewire_classifier/config"
    trackers = [f"{PREFIX}/device_tracker/facewire/{topics.slug(p)}/config" for p in KNOWN]
    rec.wait("every config", lambda: set(rec.configs()) >= {node_cfg, clf_cfg, *trackers})
    rec.wait("an intruder alert", lambda: rec.last(topics.ALERTS))
    configs = {t: p for t, p in rec.configs().items() if p}
    ids = check_all(rec, configs)
    assert sorted(ids.values()) == sorted(
        ["sensor", "binary_sensor", "event"] + ["sensor", "sensor", "event"]
        + ["device_tracker"] * len(KNOWN)
    )  # fmt: skip
    # retained, as a Home Assistant that starts later sees them
    kept = retained(world["broker"], f"{PREFIX}/#")
    assert {node_cfg, clf_cfg, *trackers} <= set(kept)
    # what the node's entities show
    last = json.loads(rec.last(topics.ha_last(NODE)) or b"{}")
    assert last["node"] == NODE and last["frames"] >= 1 and "score" in last and "ts" in last
    seen = PersonSighting.decode(rec.last(topics.person(KNOWN[0])) or b"")
    assert (seen.where, seen.node) == (NODE, NODE)
    # someone never seen is away, seen nowhere
    never = PersonSighting.decode(
        rec.wait("a state for the unseen", lambda: rec.last(topics.person(KNOWN[1])))
    )
    assert (never.where, never.event, never.node) == ("not_home", "away", None)


def test_configs_come_again_when_home_assistant_comes_online(world: dict[str, Any]) -> None:
    rec, ha = world["rec"], world["ha"]
    rec.wait("the first configs", lambda: len([p for p in rec.configs().values() if p]) >= 5)
    time.sleep(0.5)
    before = {t: len(rec.on(t)) for t in rec.configs()}
    ha.publish(topics.ha_status(PREFIX), "online", qos=1)
    rec.wait("every config again", lambda: all(len(rec.on(t)) > n for t, n in before.items()))
    ha.publish(topics.ha_status(PREFIX), "offline", qos=1)  # its will: nothing to do
    time.sleep(0.5)
    assert all(len(rec.on(t)) == n + 1 for t, n in before.items())


def test_a_node_or_person_removed_leaves_an_empty_retained_config(
    world: dict[str, Any],
) -> None:
    rec, edge, broker = world["rec"], world["edge"], world["broker"]
    faces(world["rig"])
    node_cfg = f"{PREFIX}/device/facewire_{NODE}/config"
    gone = KNOWN[-1]
    tracker = f"{PREFIX}/device_tracker/facewire/{topics.slug(gone)}/config"
    rec.wait("the configs", lambda: {node_cfg, tracker} <= set(rec.configs()))
    rec.wait("the node's state", lambda: rec.last(topics.ha_last(NODE)))
    rec.wait("a state for each person", lambda: rec.last(topics.person(gone)))
    # the node is decommissioned: its retained status cleared
    edge.publish(topics.status(NODE), "", qos=1, retain=True)
    rec.wait("the node's config removed", lambda: rec.configs().get(node_cfg) == b"")
    # a person's photos removed: the gallery reloads without them
    shutil.rmtree(world["dir"] / gone)
    rec.wait("the person's tracker removed", lambda: rec.configs().get(tracker) == b"")
    rec.wait(
        "the person's topic cleared",
        lambda: [m for m in rec.on(topics.person(gone)) if not m.payload],
    )
    kept = retained(broker, "#")
    assert node_cfg not in kept and tracker not in kept
    assert topics.ha_last(NODE) not in kept and topics.person(gone) not in kept
    # the rest stays
    assert f"{PREFIX}/device/facewire_classifier/config" in kept
    assert f"{PREFIX}/device_tracker/facewire/{topics.slug(KNOWN[0])}/config" in kept


def test_a_node_removed_while_the_classifier_was_down_is_removed_when_it_is_back(
    world: dict[str, Any],
) -> None:
    rec, edge, rig = world["rec"], world["edge"], world["rig"]
    node_cfg = f"{PREFIX}/device/facewire_{NODE}/config"
    rec.wait("the node's config", lambda: rec.configs().get(node_cfg))
    rig.close()
    edge.publish(topics.status(NODE), "", qos=1, retain=True)  # nobody is listening
    edge.flush()
    assert node_cfg in retained(world["broker"], f"{PREFIX}/#", settle_s=0.5)
    back = Rig(rig.keeper.cfg, BusClient(world["broker"], "cls"), BusClient(world["broker"], "ops"))
    world["rig"] = back
    rec.wait("the stale config removed", lambda: rec.configs().get(node_cfg) == b"")
    assert node_cfg not in retained(world["broker"], f"{PREFIX}/#", settle_s=0.5)
