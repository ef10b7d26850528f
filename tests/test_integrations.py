"""What the classifier publishes for integrations, on the in-memory transport (its own
logic; tests/test_homeassistant.py checks the same on a real broker): intruder alerts
counted within a window, per-person sightings, presence that times out, odd names
mapped to safe topic levels, and the monitor showing alerts."""

from __future__ import annotations

from pathlib import Path

import pytest

from facewire.bus import topics
from facewire.bus.memory import MemoryBroker
from facewire.bus.messages import Alert, PersonSighting, TrackEvent
from facewire.bus.transport import Message
from facewire.classifier.alerts import UnknownAlerts
from facewire.classifier.integrations import Integrations
from facewire.config.schema import ClassifierConfig
from facewire.monitor.state import State
from facewire.monitor.store import Store
from facewire.monitor.subscriber import Subscriber


def unknown(track: int, node: str = "door", event: str = "arrived") -> TrackEvent:
    return TrackEvent(node, track, event, "unknown", 0.21, 3)


# --- alerts ----------------------------------------------------------------------------


def test_an_alert_needs_the_count_within_the_window() -> None:
    alerts = UnknownAlerts(count=3, window_s=60.0)
    assert alerts.observe(unknown(1), now=0.0) is None
    assert alerts.observe(unknown(2), now=20.0) is None
    alert = alerts.observe(unknown(3), now=59.0)
    assert alert is not None
    assert (alert.node, alert.count, alert.tracks, alert.window_s) == ("door", 3, (1, 2, 3), 60.0)
    assert alert.first_seen == 0.0 and alert.ts == 59.0
    # the count starts again after an alert
    assert alerts.observe(unknown(4), now=60.0) is None


def test_unknown_faces_spread_over_more_than_the_window_make_no_alert() -> None:
    alerts = UnknownAlerts(count=3, window_s=60.0)
    got = [alerts.observe(unknown(t), now=t * 40.0) for t in range(1, 8)]  # 40 s apart
    assert got == [None] * 7 and alerts.raised == 0


def test_only_unknown_decisions_count_and_each_track_once() -> None:
    alerts = UnknownAlerts(count=2, window_s=60.0)
    assert alerts.observe(unknown(1), now=0.0) is None
    assert alerts.observe(unknown(1, event="changed"), now=1.0) is None  # the same track
    assert alerts.observe(unknown(1, event="left"), now=2.0) is None
    assert alerts.observe(TrackEvent("door", 2, "arrived", "alice", 0.7, 3), now=3.0) is None
    assert alerts.observe(unknown(3, node="gate"), now=4.0) is None  # another node's
    alert = alerts.observe(unknown(4), now=5.0)
    assert alert is not None and alert.tracks == (1, 4)


def test_alert_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        UnknownAlerts(count=0, window_s=60.0)
    with pytest.raises(ValueError):
        UnknownAlerts(count=3, window_s=0.0)


# --- per-person topics and alerts over a transport --------------------------------------


@pytest.fixture
def wired() -> tuple[MemoryBroker, Integrations, list[Message]]:
    cfg = ClassifierConfig()
    cfg.alerts.unknown_count, cfg.alerts.window_s = 2, 60.0
    cfg.homeassistant.away_after_s = 5.0
    broker = MemoryBroker()
    got: list[Message] = []
    listener = broker.transport("listener")
    listener.subscribe("faces/#", got.append)
    listener.connect()
    bus = broker.transport("classifier")
    integrations = Integrations(cfg, bus).start(["alice", "Zoë Smith"])
    bus.connect()
    broker.settle()
    return broker, integrations, got


def test_each_decision_reaches_the_persons_topic_retained(wired) -> None:  # type: ignore[no-untyped-def]
    broker, integrations, _ = wired
    integrations.on_events([TrackEvent("door", 7, "arrived", "alice", 0.66, 4)])
    broker.settle()
    last = PersonSighting.decode(broker.retained(topics.person("alice")) or b"")
    assert (last.name, last.where, last.node, last.event) == ("alice", "door", "door", "arrived")
    assert (last.score, last.frames, last.track) == (0.66, 4, 7)
    assert last.last_seen is not None and last.ts == last.last_seen
    integrations.on_events([TrackEvent("gate", 9, "left", "alice", 0.61, 8)])
    broker.settle()
    last = PersonSighting.decode(broker.retained("faces/person/alice") or b"")
    assert (last.where, last.event) == ("gate", "left")


def test_a_name_that_is_no_topic_level_gets_a_slug(wired) -> None:  # type: ignore[no-untyped-def]
    broker, integrations, _ = wired
    integrations.on_events([TrackEvent("door", 3, "arrived", "Zoë Smith", 0.7, 3)])
    broker.settle()
    topic = topics.person("Zoë Smith")
    assert topic == "faces/person/Zo__Smith-20d880d2"
    assert PersonSighting.decode(broker.retained(topic) or b"").name == "Zoë Smith"
    # names that differ only where the slug replaces characters still differ
    assert topics.slug("a b") != topics.slug("a_b") and topics.slug("a.b") != topics.slug("a_b")
    # a slug never looks like a node's own topic to a faces/+/<kind> filter
    assert topics.slug("status") != "status" and not topics.is_node_topic("faces/person/x")
    for odd in ("+", "#", "a/b", "", "x" * 200):
        s = topics.slug(odd)
        assert s and len(s) <= 60 and all(c.isalnum() or c in "_-" for c in s)


def test_presence_times_out_to_not_home(wired) -> None:  # type: ignore[no-untyped-def]
    broker, integrations, _ = wired
    integrations.on_events([TrackEvent("door", 7, "arrived", "alice", 0.66, 4)])
    broker.settle()
    seen_at = PersonSighting.decode(broker.retained("faces/person/alice") or b"").last_seen
    assert seen_at is not None
    integrations.tick(now=seen_at + 4.0)  # not yet
    broker.settle()
    assert PersonSighting.decode(broker.retained("faces/person/alice") or b"").where == "door"
    integrations.tick(now=seen_at + 6.0)
    broker.settle()
    away = PersonSighting.decode(broker.retained("faces/person/alice") or b"")
    assert (away.where, away.event, away.node, away.last_seen) == (
        "not_home",
        "away",
        "door",
        seen_at,
    )


def test_unknown_faces_repeated_make_one_alert(wired) -> None:  # type: ignore[no-untyped-def]
    broker, integrations, got = wired
    integrations.on_events([unknown(1), unknown(1, event="left"), unknown(2)])
    broker.settle()
    alerts = [Alert.decode(m.payload) for m in got if m.topic == topics.ALERTS]
    assert [(a.node, a.count, a.tracks) for a in alerts] == [("door", 2, (1, 2))]
    # strangers have no person topic
    assert not [m for m in got if m.topic.startswith("faces/person/") and b"unknown" in m.payload]


def test_a_person_who_leaves_the_gallery_has_their_topic_cleared(wired) -> None:  # type: ignore[no-untyped-def]
    broker, integrations, _ = wired
    integrations.on_events([TrackEvent("door", 7, "arrived", "alice", 0.66, 4)])
    broker.settle()
    assert broker.retained("faces/person/alice")
    integrations.set_people(["Zoë Smith"])
    broker.settle()
    assert broker.retained("faces/person/alice") is None
    # a decision about her that was under way brings nothing back
    integrations.on_events([TrackEvent("door", 7, "left", "alice", 0.66, 5)])
    broker.settle()
    assert broker.retained("faces/person/alice") is None


# --- the monitor -----------------------------------------------------------------------


def test_the_monitor_keeps_the_last_alerts_and_counts_them_per_node(tmp_path: Path) -> None:
    store = Store(tmp_path / "log.sqlite3")
    state = State(alerts=2)
    sub = Subscriber(None, store, state)
    try:
        for i in range(3):
            alert = Alert("door", 3, 60.0, (i, i + 1, i + 2), 100.0 + i, 110.0 + i)
            sub.handle(Message(topics.ALERTS, alert.encode().encode(), False, 1))
        sub.handle(Message(topics.ALERTS, b'{"node": "door"}', False, 1))  # no count
        recent = state.alerts()
        assert [a["ts"] for a in recent] == [112.0, 111.0]  # newest first, the last 2
        (door,) = [n for n in state.nodes() if n["node"] == "door"]
        assert door["alerts"] == 3 and door["last_alert"]["tracks"] == [2, 3, 4]
        assert state.alerts_total() == 3 and state.malformed_total == 1
    finally:
        store.close()
