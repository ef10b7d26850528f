"""An in-memory broker and transport, to test a service's logic without mosquitto.

Topic filters match as in MQTT (``+`` one level, ``#`` the rest, wildcards never match
a first level starting with ``$``); ``$share/<group>/<filter>`` hands each message to
one member of the group, round-robin; retained messages are kept (an empty payload
clears one) and sent to each new plain subscription; a client that is
:meth:`MemoryBroker.kill`\\ ed has its last will published. Each transport delivers on
a thread of its own, in order, like paho's network thread.

>>> from facewire.bus.memory import MemoryBroker
>>> broker = MemoryBroker()
>>> seen = []
>>> sub = broker.transport("monitor")
>>> sub.subscribe("faces/+/status", lambda m: seen.append((m.topic, m.payload)))
>>> _ = sub.connect()
>>> pub = broker.transport("edge-door")
>>> _ = pub.connect()
>>> _ = pub.publish("faces/door/status", b"online", qos=1, retain=True)
>>> broker.settle()
True
>>> seen, broker.retained("faces/door/status")
([('faces/door/status', b'online')], b'online')

It is for a service's own logic only: whatever crosses the wire is tested against a
real mosquitto.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from facewire.bus.topics import unshared
from facewire.bus.transport import Handler, Message, Will

log = logging.getLogger("facewire.bus")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching.

    >>> topic_matches("faces/+/result", "faces/door/result")
    True
    >>> topic_matches("faces/#", "faces"), topic_matches("#", "$SYS/load")
    (True, False)
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_parts, t_parts = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts) or (part != "+" and part != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


@dataclass(frozen=True)
class _Sub:
    client: MemoryTransport
    topic_filter: str
    match: str
    group: str | None
    handler: Handler


class MemoryBroker:
    """The hub the in-memory transports talk through."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._subs: list[_Sub] = []
        self._retained: dict[str, Message] = {}
        self._turns: dict[tuple[str, str], itertools.count[int]] = {}
        self._clients: dict[str, MemoryTransport] = {}
        self._routed = 0  # messages routed so far (settle() waits for it to stand still)

    def transport(self, client_id: str) -> MemoryTransport:
        return MemoryTransport(self, client_id)

    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            m = self._retained.get(topic)
            return None if m is None else m.payload

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until every transport has handled everything sent so far, including
        what handlers sent while it waited."""
        deadline = time.monotonic() + timeout
        while True:
            routed = self._routed
            with self._lock:
                clients = list(self._clients.values())
            if not all(c._idle(max(0.0, deadline - time.monotonic())) for c in clients):
                return False
            if routed == self._routed:
                return True

    def kill(self, client: MemoryTransport) -> None:
        """The client's connection dies: its last will goes out, it is disconnected."""
        will = client._will
        self._drop(client)
        if will is not None:
            topic, payload, qos, retain = will
            self.route(topic, payload, qos, retain)

    # -- used by the transports ----------------------------------------------------

    def _attach(self, client: MemoryTransport) -> None:
        with self._lock:
            old = self._clients.get(client.client_id)
            if old is not None and old is not client:  # same id: the older one is kicked
                self.kill(old)
            self._clients[client.client_id] = client
            subs = list(client._subs)
        for topic_filter, handler in subs:
            self._subscribe(client, topic_filter, handler)

    def _drop(self, client: MemoryTransport) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s.client is not client]
            if self._clients.get(client.client_id) is client:
                del self._clients[client.client_id]
        client._lost()

    def _subscribe(self, client: MemoryTransport, topic_filter: str, handler: Handler) -> None:
        group = topic_filter.split("/", 2)[1] if topic_filter.startswith("$share/") else None
        sub = _Sub(client, topic_filter, unshared(topic_filter), group, handler)
        with self._lock:
            self._subs.append(sub)
            retained = [] if group else list(self._retained.values())
        for m in retained:
            if topic_matches(sub.match, m.topic):
                client._deliver(handler, m)

    def route(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        with self._lock:
            self._routed += 1
            if retain:
                if data:
                    self._retained[topic] = Message(topic, data, True, qos)
                else:
                    self._retained.pop(topic, None)
            plain: list[_Sub] = []
            groups: dict[tuple[str, str], list[_Sub]] = {}
            for s in self._subs:
                if topic_matches(s.match, topic):
                    if s.group is None:
                        plain.append(s)
                    else:
                        groups.setdefault((s.group, s.match), []).append(s)
            for key, members in groups.items():
                turn = next(self._turns.setdefault(key, itertools.count()))
                plain.append(members[turn % len(members)])
        message = Message(topic, data, False, qos)
        for s in plain:
            s.client._deliver(s.handler, message)


class MemoryTransport:
    """A :class:`~facewire.bus.transport.Transport` on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, client_id: str) -> None:
        self.broker = broker
        self.client_id = client_id
        self._will: Will | None = None
        self._subs: list[tuple[str, Handler]] = []
        self._connected = False
        self._held: list[tuple[str, bytes | str, int, bool]] = []  # QoS ≥ 1 while offline
        self._callbacks: list[Callable[[bool], None]] = []
        self._inbox: deque[tuple[Handler, Message] | None] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return "memory://"

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        return len(self._held)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._connected  # subscribing here is immediate

    def set_will(self, topic: str, payload: bytes | str, qos: int, retain: bool) -> None:
        self._will = (topic, payload, qos, retain)

    def connect(self, timeout: float = 10.0, wait: bool = True) -> MemoryTransport:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"memory-{self.client_id}", daemon=True
            )
            self._thread.start()
        self._connected = True
        self.broker._attach(self)
        for cb in list(self._callbacks):
            cb(True)
        held, self._held = self._held, []
        for topic, payload, qos, retain in held:
            self.broker.route(topic, payload, qos, retain)
        return self

    def close(self, timeout: float = 2.0) -> None:
        if self._connected:
            self.broker._drop(self)
        with self._cond:
            self._inbox.append(None)
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        if self._connected:
            self.broker.route(topic, payload, qos, retain)
        elif qos > 0:
            self._held.append((topic, payload, qos, retain))

    def publish_many(self, messages: Sequence[tuple[str, bytes | str]], qos: int = 0) -> int:
        if qos == 1:  # held while disconnected, as publish holds them
            for topic, payload in messages:
                self.publish(topic, payload, 1)
            return len(messages)
        if not self._connected:
            return 0
        for topic, payload in messages:
            self.broker.route(topic, payload, 0, False)
        return len(messages)

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, timeout: float = 5.0
    ) -> None:
        self._subs.append((topic_filter, handler))
        if self._connected:
            self.broker._subscribe(self, topic_filter, handler)

    def flush(self, timeout: float = 5.0) -> bool:
        return not self._held

    def on_connection_change(self, cb: Callable[[bool], None]) -> None:
        self._callbacks.append(cb)

    # -- delivery ---------------------------------------------------------------------

    def _lost(self) -> None:
        was, self._connected = self._connected, False
        if was:
            for cb in list(self._callbacks):
                cb(False)

    def _deliver(self, handler: Handler, message: Message) -> None:
        with self._cond:
            self._inbox.append((handler, message))
            self._cond.notify()

    def _idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._inbox and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._inbox))
                item = self._inbox.popleft()
                if item is None:
                    self._cond.notify_all()
                    return
                self._busy = True
            handler, message = item
            try:
                handler(message)
            except Exception:
                log.exception("%s: handler %r failed on %s", self.client_id, handler, message.topic)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
