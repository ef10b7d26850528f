"""What the classifier publishes for integrations, from its track decisions: per-person
sightings (``faces/person/<slug>``), intruder alerts (``faces/alerts``) and Home
Assistant's discovery and state topics (:mod:`facewire.classifier.homeassistant`).

Threads: :meth:`Integrations.on_events` runs on the worker (and the statistics thread,
for tracks that ended), :meth:`Integrations.set_people` on the gallery thread,
:meth:`Integrations.tick` on the statistics thread, the handlers on the transport's
delivery thread. Each touches the shared sets under ``_lock`` and publishes outside it.

What it learns from the broker: edge nodes from their retained ``faces/+/status`` (an
empty one, the node decommissioned, removes its device); the last sightings it
published before a restart (``faces/person/+``, retained), so presence times out
across restarts; its own retained discovery configs, so a node or person removed while
it was down is removed from Home Assistant once it is back (after
:data:`SWEEP_AFTER_S`, when the broker has handed over what it retains).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import UNKNOWN, Alert, EdgeStatus, TrackEvent
from facewire.bus.messages.integration import NOT_HOME, NodeSighting, PersonSighting
from facewire.bus.transport import Message, Transport
from facewire.classifier import homeassistant as ha
from facewire.classifier.alerts import UnknownAlerts
from facewire.config.schema import ClassifierConfig

log = logging.getLogger("facewire.classifier")

#: Seconds after a (re)connect before configs the broker retains for nodes and people
#: no longer there are removed (their retained messages have arrived by then).
SWEEP_AFTER_S = 3.0
#: Nodes and people kept at most (any client may publish a status).
MAX_NODES = 4096
MAX_PEOPLE = 100_000


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Integrations:
    """Per-person topics, intruder alerts and Home Assistant discovery over ``bus``."""

    def __init__(self, cfg: ClassifierConfig, bus: Transport) -> None:
        self.ha = cfg.homeassistant
        self.bus = bus
        a = cfg.alerts
        self.alerts = UnknownAlerts(a.unknown_count, a.window_s) if a.enabled else None
        self._lock = threading.Lock()
        self._nodes: set[str] = set()  # edge nodes with a retained status
        self._people: dict[str, str] = {}  # slug → name, the gallery's
        self._last: dict[str, PersonSighting] = {}  # slug → its retained sighting
        self._seen_nodes: set[str] = set()  # object ids of retained node configs
        self._seen_people: set[str] = set()  # slugs of retained tracker configs
        self._connected_at: float | None = None
        self._swept = False
        self.published = 0  # discovery configs published (for tests and logs)

    # -- lifecycle ------------------------------------------------------------------

    def start(self, people: Iterable[str]) -> Integrations:
        """Subscribe (before the transport connects) and take the gallery's people."""
        bus = self.bus
        bus.subscribe(topics.STATUSES, self._on_status, qos=1)
        bus.subscribe(topics.PEOPLE, self._on_person, qos=1)
        if self.ha.enabled:
            prefix = self.ha.prefix
            bus.subscribe(topics.ha_status(prefix), self._on_ha_status, qos=1)
            bus.subscribe(topics.ha_device_config(prefix, "+"), self._on_node_config, qos=1)
            tracker = topics.ha_component_config(prefix, "device_tracker", ha.TRACKER_NODE_ID, "+")
            bus.subscribe(tracker, self._on_person_config, qos=1)
        bus.on_connection_change(self._on_connection)
        self.set_people(people)
        if bus.connected:
            self._on_connection(True)
        return self

    def _on_connection(self, up: bool) -> None:
        if not up:
            return
        with self._lock:
            self._connected_at = time.monotonic()
            self._swept = False
        self.publish_discovery()

    # -- Home Assistant discovery -----------------------------------------------------

    def publish_discovery(self) -> None:
        """Every config again (on connect, and when Home Assistant says ``online``)."""
        if not self.ha.enabled:
            return
        with self._lock:
            nodes, people = sorted(self._nodes), list(self._people.values())
        self._publish_config(topics.ha_device_config(self.ha.prefix, ha.CLASSIFIER_ID),
                             ha.classifier_config(self.ha))  # fmt: skip
        for node in nodes:
            self._publish_node(node)
        for name in people:
            self._publish_config(
                ha.person_config_topic(self.ha.prefix, name), ha.person_config(name)
            )

    def _publish_config(self, topic: str, config: dict[str, Any] | None) -> None:
        payload = "" if config is None else _compact(config)
        self.bus.publish(topic, payload, qos=1, retain=True)
        self.published += config is not None

    def _publish_node(self, node: str) -> None:
        topic = topics.ha_device_config(self.ha.prefix, ha.node_object_id(node))
        self._publish_config(topic, ha.node_config(node, self.ha))

    def _on_ha_status(self, m: Message) -> None:
        # Home Assistant's birth message: it (re)started and reads discovery again
        if m.payload.strip() == b"online":
            self.publish_discovery()

    def _on_node_config(self, m: Message) -> None:
        oid = m.topic.split("/")[-2]
        if not oid.startswith("facewire_") or oid == ha.CLASSIFIER_ID:
            return  # someone else's device
        with self._lock:
            if m.payload:
                if len(self._seen_nodes) < MAX_NODES:
                    self._seen_nodes.add(oid)
            else:
                self._seen_nodes.discard(oid)

    def _on_person_config(self, m: Message) -> None:
        slug = m.topic.split("/")[-2]
        with self._lock:
            if m.payload:
                if len(self._seen_people) < MAX_PEOPLE:
                    self._seen_people.add(slug)
            else:
                self._seen_people.discard(slug)

    # -- nodes ------------------------------------------------------------------------

    def _on_status(self, m: Message) -> None:
        if not topics.is_node_topic(m.topic):
            return  # faces/classifier/status
        try:
            node = topics.parse(m.topic, "status")
            if m.payload:
                EdgeStatus.decode(m.payload)
        except WireError:
            return  # the monitor reports malformed statuses; here it just is no node
        if not m.payload:  # its retained status cleared: the node was decommissioned
            self.remove_node(node)
            return
        with self._lock:
            if node in self._nodes or len(self._nodes) >= MAX_NODES:
                return
            self._nodes.add(node)
        if self.ha.enabled:
            self._publish_node(node)

    def remove_node(self, node: str) -> None:
        """Node ``node`` is gone: its device and its retained state, cleared."""
        with self._lock:
            self._nodes.discard(node)
        if self.ha.enabled:
            oid = ha.node_object_id(node)
            self._publish_config(topics.ha_device_config(self.ha.prefix, oid), None)
            self.bus.publish(topics.ha_last(node), "", qos=1, retain=True)
        log.info("node %s removed: its Home Assistant device too", node)

    # -- people -------------------------------------------------------------------------

    def set_people(self, names: Iterable[str]) -> None:
        """The gallery's people now (at start and after each rebuild): trackers for the
        new, and the removed ones' tracker and retained sighting cleared."""
        wanted = {topics.slug(n): n for n in names if n != UNKNOWN}
        with self._lock:
            before = self._people
            self._people = dict(list(wanted.items())[:MAX_PEOPLE])
            gone = [before[s] for s in before if s not in self._people]
            new = [n for s, n in self._people.items() if s not in before]
            connected = self._connected_at is not None
        for name in gone:
            self._remove_person(name)
        if self.ha.enabled and connected:
            for name in new:
                self._publish_config(
                    ha.person_config_topic(self.ha.prefix, name), ha.person_config(name)
                )
            with self._lock:
                swept = self._swept
            if swept:
                self._never_seen(new)

    def _remove_person(self, name: str) -> None:
        slug = topics.slug(name)
        with self._lock:
            self._last.pop(slug, None)
            self._seen_people.discard(slug)
        if self.ha.enabled:
            self._publish_config(ha.person_config_topic(self.ha.prefix, name), None)
        self.bus.publish(topics.person(name), "", qos=1, retain=True)
        log.info("%s left the gallery: their sightings topic and tracker are cleared", name)

    def _on_person(self, m: Message) -> None:
        # our own retained sightings (a restart's memory of where people were)
        slug = m.topic.rsplit("/", 1)[1]
        try:
            last = PersonSighting.decode(m.payload) if m.payload else None
        except WireError:
            return
        with self._lock:
            if last is None:
                self._last.pop(slug, None)
            elif slug in self._last or len(self._last) < MAX_PEOPLE:
                self._last[slug] = last

    def _never_seen(self, names: Iterable[str]) -> None:
        """A state for each tracker of someone never seen: away, seen nowhere yet."""
        now = time.time()
        for name in names:
            slug = topics.slug(name)
            with self._lock:
                if slug in self._last or slug not in self._people:
                    continue
                first = self._last[slug] = PersonSighting(name, NOT_HOME, "away", ts=now)
            self.bus.publish(topics.person(name), first.encode(), qos=1, retain=True)

    # -- track decisions -------------------------------------------------------------

    def on_events(self, events: Iterable[TrackEvent]) -> None:
        """Fan out track decisions: Home Assistant's node topics, the person's topic,
        and an intruder alert when a node's unknown faces add up."""
        for e in events:
            now = time.time()
            if self.ha.enabled:
                seen = NodeSighting.of(e, now).encode()
                self.bus.publish(topics.ha_last(e.node), seen, qos=1, retain=True)
                if e.event != "left":  # a decision made, not a track that ended
                    self.bus.publish(topics.ha_event(e.node), seen, qos=1)
            if e.name != UNKNOWN:
                self._person_seen(e, now)
            alert = self.alerts.observe(e) if self.alerts is not None else None
            if alert is not None:
                self.publish_alert(alert)

    def _person_seen(self, e: TrackEvent, now: float) -> None:
        slug = topics.slug(e.name)
        with self._lock:
            if slug not in self._people:  # removed meanwhile: no topic comes back
                return
            last = PersonSighting(
                e.name, e.node, e.event, e.node, e.track, e.score, e.frames, now, now
            )
            self._last[slug] = last
        self.bus.publish(topics.person(e.name), last.encode(), qos=1, retain=True)

    def publish_alert(self, alert: Alert) -> None:
        log.warning(
            "intruder alert on %s: %d unknown faces within %.0f s",
            alert.node,
            alert.count,
            alert.window_s,
        )
        self.bus.publish(topics.ALERTS, alert.encode(), qos=1)

    # -- time --------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Presence timeouts (``away``), and once after each connect the sweep of
        configs for nodes and people no longer there. The statistics thread's."""
        now = time.time() if now is None else now
        away: list[tuple[str, PersonSighting]] = []
        stale_nodes: list[str] = []
        stale_people: list[str] = []
        people: list[str] = []
        with self._lock:
            for slug, last in self._last.items():
                seen = last.last_seen
                if last.where != NOT_HOME and (seen is None or now - seen > self.ha.away_after_s):
                    away.append(
                        (slug, dataclasses.replace(last, where=NOT_HOME, event="away", ts=now))
                    )
            for slug, a in away:
                self._last[slug] = a
            due = (
                self.ha.enabled
                and not self._swept
                and self._connected_at is not None
                and time.monotonic() - self._connected_at >= SWEEP_AFTER_S
            )
            if due:
                self._swept = True
                nodes = {ha.node_object_id(n) for n in self._nodes}
                stale_nodes = sorted(self._seen_nodes - nodes)
                stale_people = sorted(self._seen_people - set(self._people))
                people = list(self._people.values())
        for slug, a in away:
            self.bus.publish(f"{topics.PERSON_PREFIX}/{slug}", a.encode(), qos=1, retain=True)
        if not due:
            return
        for oid in stale_nodes:  # a node decommissioned while the classifier was down
            self._publish_config(topics.ha_device_config(self.ha.prefix, oid), None)
        for slug in stale_people:  # a person removed while it was down
            topic = topics.ha_component_config(
                self.ha.prefix, "device_tracker", ha.TRACKER_NODE_ID, slug
            )
            self._publish_config(topic, None)
            self.bus.publish(f"{topics.PERSON_PREFIX}/{slug}", "", qos=1, retain=True)
        self._never_seen(people)
