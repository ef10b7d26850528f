"""Which handlers a client's incoming topic goes to: its subscriptions, remembered
across reconnects, and a bounded cache of topic → handlers.

>>> routes = Routes()
>>> routes.add("$share/g/faces/+/result", print, 1)
>>> routes.handlers("faces/door/result") == (print,), routes.handlers("faces/door/status")
(True, ())
>>> routes.filters()
{'$share/g/faces/+/result': 1}
>>> routes.identifier("$share/g/faces/+/result"), routes.for_identifiers([1]) == (print,)
(1, True)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from facewire.bus.topics import unshared
from facewire.bus.transport import Handler

#: Topics remembered with their handlers; a flood of distinct topics empties it.
CACHE_MAX = 4096


@dataclass(frozen=True, slots=True)
class Subscription:
    topic_filter: str  # as subscribed, possibly $share/<group>/<filter>
    match: str  # the plain filter incoming topics are matched against
    handler: Handler
    qos: int


class Routes:
    """Thread-safe: subscriptions are added on any thread, looked up on the network one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._cache: dict[str, tuple[Handler, ...]] = {}
        self._ids: dict[str, int] = {}  # filter → MQTT v5 subscription identifier
        self._by_id: dict[int, tuple[Handler, ...]] = {}

    def add(self, topic_filter: str, handler: Handler, qos: int) -> None:
        with self._lock:
            self._subs.append(Subscription(topic_filter, unshared(topic_filter), handler, qos))
            self._cache.clear()
            number = self._ids.setdefault(topic_filter, len(self._ids) + 1)
            self._by_id[number] = (*self._by_id.get(number, ()), handler)

    def identifier(self, topic_filter: str) -> int:
        """The subscription identifier this filter is subscribed with (1, 2, …)."""
        with self._lock:
            return self._ids[topic_filter]

    def for_identifiers(self, ids: list[int]) -> tuple[Handler, ...]:
        """The handlers of the subscriptions a message says it came through."""
        with self._lock:
            if len(ids) == 1:
                return self._by_id.get(ids[0], ())
            out: list[Handler] = []
            for number in ids:
                out += [h for h in self._by_id.get(number, ()) if h not in out]
            return tuple(out)

    def filters(self) -> dict[str, int]:
        """Every filter subscribed, with the highest QoS asked for it (to renew them)."""
        with self._lock:
            out: dict[str, int] = {}
            for sub in self._subs:
                out[sub.topic_filter] = max(sub.qos, out.get(sub.topic_filter, 0))
            return out

    def handlers(self, topic: str) -> tuple[Handler, ...]:
        found = self._cache.get(topic)
        if found is None:
            with self._lock:
                found = tuple(
                    s.handler for s in self._subs if mqtt.topic_matches_sub(s.match, topic)
                )
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
                self._cache[topic] = found
        return found
