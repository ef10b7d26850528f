"""Bus subscriptions → the detection log and the live state.

Handlers run on the MQTT network thread and never raise: a payload that is not JSON,
or JSON of the wrong shape, is logged (rate-limited) and counted, and the next
message is handled as usual.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from facewire.bus import topics
from facewire.bus.client import BusClient, Message
from facewire.config.schema import BrokerConfig
from facewire.monitor.state import State
from facewire.monitor.store import Store

__all__ = ["Malformed", "Subscriber", "parse_json"]

log = logging.getLogger(__name__)


class Malformed(ValueError):
    """A payload the monitor cannot use; the message says why."""


def parse_json(payload: bytes) -> dict[str, Any]:
    """A JSON object from ``payload``; NaN/Infinity become ``None`` (not valid JSON)."""
    try:
        data = json.loads(payload.decode("utf-8"), parse_constant=lambda _c: None)
    except UnicodeDecodeError as exc:
        raise Malformed(f"not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Malformed(f"expected a JSON object, got {type(data).__name__}")
    return data


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_result(data: Mapping[str, Any]) -> None:
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise Malformed("result: 'name' must be a non-empty string")
    if not _is_num(data.get("score")):
        raise Malformed("result: 'score' must be a number")
    if "threshold" in data and data["threshold"] is not None and not _is_num(data["threshold"]):
        raise Malformed("result: 'threshold' must be a number")
    if "timings" in data and not isinstance(data["timings"], Mapping | None):
        raise Malformed("result: 'timings' must be an object")


def _check_status(data: Mapping[str, Any]) -> None:
    if not isinstance(data.get("state"), str):
        raise Malformed("status: 'state' must be a string ('online' or 'offline')")
    if "latency_ms" in data and not isinstance(data["latency_ms"], Mapping | None):
        raise Malformed("status: 'latency_ms' must be an object")


def _check_classifier(data: Mapping[str, Any]) -> None:
    for key in ("gallery", "queues", "dropped", "timings"):
        if key in data and not isinstance(data[key], Mapping | None):
            raise Malformed(f"classifier status: '{key}' must be an object")


def _check_thresholds(data: Mapping[str, Any]) -> None:
    if not _is_num(data.get("threshold")):
        raise Malformed("thresholds: 'threshold' must be a number")
    if "grid" in data and not isinstance(data["grid"], list | None):
        raise Malformed("thresholds: 'grid' must be a list")
    if "histogram" in data and not isinstance(data["histogram"], Mapping | None):
        raise Malformed("thresholds: 'histogram' must be an object")
    if "calibration" in data and not isinstance(data["calibration"], Mapping | None):
        raise Malformed("thresholds: 'calibration' must be an object or null")


def _check_error(data: Mapping[str, Any]) -> None:
    if not isinstance(data.get("reason"), str):
        raise Malformed("error: 'reason' must be a string")


class Subscriber:
    """Feeds ``store`` and ``state`` from the broker. :meth:`handle` works without one."""

    def __init__(
        self,
        broker: BrokerConfig,
        store: Store,
        state: State,
        client_id: str | None = None,
    ) -> None:
        self.broker = broker
        self.store = store
        self.state = state
        self.client_id = client_id or f"monitor-{os.getpid()}"
        self.client: BusClient | None = None
        self._log_lock = threading.Lock()
        self._last_warning = 0.0
        self._suppressed = 0

    # --- connection ------------------------------------------------------------------

    def start(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Subscribe and connect (reconnecting forever in the background).

        With ``wait`` it blocks until connected and subscribed, or raises
        ``TimeoutError`` / ``ConnectionError`` (see ``BusClient.connect``); calling it
        again after a timeout with ``wait=False`` keeps trying in the background.
        """
        if self.client is None:
            client = BusClient(self.broker, self.client_id, will=None)
            for flt in (topics.RESULTS, topics.STATUSES, topics.ERRORS, topics.THRESHOLDS):
                client.subscribe(flt, self.handle, qos=1)
            self.client = client
            self.state.broker_address = self.broker.address
            self.state.broker_connected = lambda: bool(client.connected)
        self.client.connect(timeout=timeout, wait=wait)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.state.broker_connected = lambda: False

    # --- dispatch --------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Route one message. Never raises."""
        now = time.time()
        try:
            self._dispatch(msg, now)
        except Malformed as exc:
            self._malformed(msg, str(exc), now)
        except Exception as exc:  # a bug here must not kill the network thread
            log.exception("monitor: failed to handle a message on %s", msg.topic)
            self._malformed(msg, f"{type(exc).__name__}: {exc}", now)

    def _dispatch(self, msg: Message, now: float) -> None:
        topic = msg.topic
        if topic == topics.THRESHOLDS:
            if not msg.payload:  # retained message cleared
                self.state.thresholds(None)
                return
            data = parse_json(msg.payload)
            _check_thresholds(data)
            self.state.thresholds(data, at=now)
            self.state.count("thresholds")
            return
        if topic == topics.CLASSIFIER_STATUS:  # also matches faces/+/status
            if not msg.payload:
                self.state.classifier_status(None)
                return
            data = parse_json(msg.payload)
            _check_classifier(data)
            self.state.classifier_status(data, at=now)
            self.state.count("classifier_status")
            return
        if not topics.is_node_topic(topic):
            raise Malformed(f"unexpected topic {topic!r}")
        node, kind = topics.node_of(topic), topics.kind_of(topic)
        if kind == "status":
            if not msg.payload:  # retained status cleared: node decommissioned
                self.state.forget_node_status(node)
                return
            data = parse_json(msg.payload)
            _check_status(data)
            self.state.node_status(node, data, at=now)
            self.state.count("status")
        elif kind == "result":
            data = parse_json(msg.payload)
            _check_result(data)
            self.store.add(data, node=node, received_at=now)
            self.state.seen_result(node, at=now)
            self.state.count("result")
        elif kind == "error":
            data = parse_json(msg.payload)
            _check_error(data)
            self.state.error(node, data, at=now)
            self.state.count("error")
        else:
            raise Malformed(f"unexpected topic {topic!r}")

    def _malformed(self, msg: Message, reason: str, now: float) -> None:
        self.state.malformed(msg.topic, reason, bytes(msg.payload or b""), at=now)
        with self._log_lock:
            if now - self._last_warning < 5.0:
                self._suppressed += 1
                return
            more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
            self._last_warning, self._suppressed = now, 0
        log.warning("monitor: ignored a message on %s: %s%s", msg.topic, reason, more)
