"""The SUBSCRIBEs a client sent and the broker has not acknowledged yet (SUBACK).

Subscribing happens on any thread, acknowledgements and disconnects arrive on the
network thread: both sides take one short lock. A SUBSCRIBE is registered under that
lock together with sending it, so its SUBACK cannot arrive before it is waited for.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from facewire.bus.routes import Routes

log = logging.getLogger("facewire.bus")


class Acks:
    """The SUBACKs of one round of subscriptions."""

    def __init__(self, events: list[threading.Event]) -> None:
        self._events = events

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self._events)


class Subacks:
    """One client's unacknowledged SUBSCRIBEs; ``client_id`` names it in the log."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[threading.Event, list[str]]] = {}

    def send(self, client: mqtt.Client, routes: Routes, filters: dict[str, int]) -> Acks | None:
        """Subscribe to ``filters`` (filter → QoS); ``None`` if nothing could be sent."""
        # One SUBSCRIBE per filter, each with its subscription identifier: a message
        # matching two overlapping filters comes once per filter, each copy naming the
        # one it is for, so each handler gets it once (see BusClient._on_message).
        events = []
        for topic_filter, qos in filters.items():
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = routes.identifier(topic_filter)
            with self._lock:
                rc, mid = client.subscribe(
                    [(topic_filter, SubscribeOptions(qos=qos))], properties=props
                )
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                    log.warning("%s: subscribe %s failed: %s", self.client_id, topic_filter, rc)
                    continue
                done = threading.Event()
                self._waiting[mid] = (done, [topic_filter])
            events.append(done)
        return Acks(events) if events else None

    def acknowledged(self, mid: int, reasons: list[Any]) -> None:
        """The broker's SUBACK for ``mid`` (refusals are logged)."""
        with self._lock:
            entry = self._waiting.pop(mid, None)
        if entry is None:
            return
        done, filters = entry
        for topic_filter, reason in zip(filters, reasons, strict=False):
            if reason.is_failure:
                log.error(
                    "%s: broker refused subscription to %s: %s",
                    self.client_id,
                    topic_filter,
                    reason,
                )
        done.set()

    def release(self) -> None:
        """Wake everyone waiting (the connection is gone)."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for done, _ in waiting.values():
            done.set()  # the subscriptions are renewed on the next connect anyway
