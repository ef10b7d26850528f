"""What :class:`~facewire.bus.client.BusClient` reads from its broker config, and the
paho client it makes of it: protocol, reconnect backoff, in-flight window, unlimited
local queue, credentials, TLS and the last will. The client sets the callbacks.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from facewire.bus.transport import Will

log = logging.getLogger("facewire.bus")

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


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
    tls_verify: bool
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
        for name in ("ca_certs", "certfile", "keyfile"):
            path = getattr(broker, name)
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"broker.{name}: no such file {path}")
        if broker.keyfile and not broker.certfile:
            raise ValueError("broker.keyfile is set without broker.certfile")
        c.tls_set(
            ca_certs=broker.ca_certs or None,
            certfile=broker.certfile or None,
            keyfile=broker.keyfile or None,
            # verified unless the config says otherwise, in so many words
            cert_reqs=ssl.CERT_REQUIRED if broker.tls_verify else ssl.CERT_NONE,
        )
        if not broker.tls_verify:
            log.warning(
                "%s: the broker's TLS certificate is NOT checked (broker.tls_verify false): "
                "anyone in between can read and forge every message",
                client_id,
            )
            c.tls_insecure_set(True)  # no host name check either: there is no certificate
        elif broker.tls_insecure:
            log.warning("%s: the broker's host name is not checked (tls_insecure)", client_id)
            c.tls_insecure_set(True)
    elif broker.password and broker.host not in LOOPBACK:
        log.warning(
            "%s: sending the MQTT password to %s unencrypted (use mqtts://)",
            client_id,
            broker.address,
        )
    if will is not None:
        topic, payload, qos, retain = will
        c.will_set(topic, payload, qos, retain)
    return c
