"""What :class:`~facewire.bus.client.BusClient` reads from its broker config, and the
paho client it makes of it: protocol, reconnect backoff, in-flight window, unlimited
local queue, credentials, TLS and the last will. The client sets the callbacks.
"""

from __future__ import annotations

from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from facewire.bus.transport import Will


class BrokerSettings(Protocol):
    """What the client reads from its broker config: ``config.schema.BrokerConfig``.

    (Structural, so ``bus`` needs nothing from ``config`` at import time.)
    """

    host: str
    port: int
    tls: bool
    ca_certs: str
    certfile: str
    keyfile: str
    tls_insecure: bool
    username: str
    password: str
    keepalive: int
    reconnect_min_s: float
    reconnect_max_s: float

    @property
    def address(self) -> str: ...


def paho_client(
    broker: BrokerSettings, client_id: str, *, will: Will | None, max_inflight: int
) -> mqtt.Client:
    """A paho MQTT v5 client set up from ``broker``, not connected, without callbacks."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        reconnect_on_failure=True,
    )
    c.suppress_exceptions = True  # our callbacks catch their own; belt and braces
    # paho annotates these as int but only compares and doubles them: floats work.
    c.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)  # type: ignore[arg-type]
    c.max_inflight_messages_set(max_inflight)
    c.max_queued_messages_set(0)  # unlimited: nothing published at QoS >= 1 is dropped
    if broker.username:
        c.username_pw_set(broker.username, broker.password or None)
    if broker.tls:
        c.tls_set(
            ca_certs=broker.ca_certs or None,
            certfile=broker.certfile or None,
            keyfile=broker.keyfile or None,
        )
        if broker.tls_insecure:
            c.tls_insecure_set(True)
    if will is not None:
        topic, payload, qos, retain = will
        c.will_set(topic, payload, qos, retain)
    return c
