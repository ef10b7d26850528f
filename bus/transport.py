"""The seam between a service and the broker: what edge, classifier and monitor call.

Services take a :class:`Transport` and never construct one: their ``main`` passes the
MQTT client (:class:`facewire.bus.client.BusClient`), and a service's own logic can be
tested on :class:`facewire.bus.memory.MemoryBroker`'s in-memory transport, which
matches topics as MQTT does (``+``, ``#``, ``$share/<group>/…``, retained messages,
last wills). What crosses the wire is still tested against a real mosquitto.

Threading: handlers given to :meth:`Transport.subscribe` run on the transport's own
delivery thread (paho's network thread for MQTT), one message at a time, in order.
Keep them short and hand slow work to a queue; never block in one waiting for another
message of the same transport. :meth:`Transport.publish` may be called from any
thread, handlers included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    """An incoming message, as handed to a subscription handler."""

    topic: str
    payload: bytes
    retain: bool
    qos: int


Handler = Callable[[Message], None]
#: (topic, payload, qos, retain) the broker publishes when the connection dies unclean
Will = tuple[str, bytes | str, int, bool]


@runtime_checkable
class Transport(Protocol):
    """Publish/subscribe with MQTT's semantics; see the module docstring."""

    client_id: str

    @property
    def address(self) -> str:
        """Where it connects, for logs (``mqtt://host:port``)."""
        ...

    @property
    def connected(self) -> bool: ...

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until connected with every subscription acknowledged; False on timeout."""
        ...

    @property
    def pending(self) -> int:
        """QoS ≥ 1 publishes not yet acknowledged (queued while the broker is away)."""
        ...

    def set_will(self, topic: str, payload: bytes | str, qos: int, retain: bool) -> None:
        """The last will, published by the broker if this client dies; before connect."""
        ...

    def connect(self, timeout: float = 10.0, wait: bool = True) -> object:
        """Start connecting (and reconnecting) in the background; with ``wait``, block
        until connected or raise ``TimeoutError`` / ``ConnectionError``."""
        ...

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect cleanly (no last will) after flushing for up to ``timeout``."""
        ...

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False
    ) -> object:
        """Send one message; never blocks on the network. QoS ≥ 1 is kept while the
        broker is away and sent on reconnect; QoS 0 is dropped then."""
        ...

    def publish_many(self, messages: Sequence[tuple[str, bytes | str]], qos: int = 0) -> int:
        """``(topic, payload)`` pairs at ``qos`` (0 or 1), in order, as one write; how
        many went (QoS 1: were accepted)."""
        ...

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, timeout: float = 5.0
    ) -> None:
        """``handler(message)`` for each message matching ``topic_filter``; remembered
        across reconnects; may be called before :meth:`connect`."""
        ...

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every QoS ≥ 1 publish is acknowledged; False on timeout."""
        ...

    def on_connection_change(self, cb: Callable[[bool], None]) -> None:
        """``cb(True)`` after each (re)connect, ``cb(False)`` on each loss."""
        ...
