"""The MQTT client every service uses: one factory, one set of defaults.

MQTT v5 over TCP (TLS when the broker config says so), username/password, a last
will, automatic reconnect with exponential backoff, TCP_NODELAY on every socket
(without it a small QoS 0 publish can sit ~20 ms in the kernel waiting for Nagle),
subscriptions that are remembered and renewed on every reconnect, and QoS ≥ 1
publishes that are queued in memory while the broker is away and sent when it is
back.

Threading: paho runs one network thread per client (``loop_start``). Handlers given
to :meth:`BusClient.subscribe` and callbacks given to
:meth:`BusClient.on_connection_change` run on that thread: keep them short, hand
heavy work to a queue, and never block in them waiting for another message of the
same client. An exception in a handler is logged (logger ``facewire.bus``) and the
next message is delivered as usual. :meth:`BusClient.publish` may be called from
any thread, including from handlers.

Typical use::

    bus = BusClient(cfg.broker, "edge-door", will=(topics.status("door"), offline, 1, True))
    bus.subscribe(topics.result("door"), on_result)
    bus.connect()
    bus.publish(topics.embedding("door"), codec.encode(msg), qos=1)
    ...
    bus.close()
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from facewire.bus import packets
from facewire.bus.broker import BrokerSettings, paho_client
from facewire.bus.routes import Routes
from facewire.bus.subacks import Acks, Subacks
from facewire.bus.transport import Handler, Message
from facewire.bus.unacked import Unacknowledged

log = logging.getLogger("facewire.bus")

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _check_topic(topic: str) -> None:
    if _CONTROL.search(topic):
        raise ValueError(f"control character in the topic {topic!r}")


#: QoS ≥ 1 publishes on the wire at once before paho queues further ones locally
#: (paho's default is 20). Not higher: paho scans up to this many messages per PUBACK,
#: so 1000 halves burst throughput compared with 100 (measured: 20k × 1 KB messages).
MAX_INFLIGHT = 100


class BusClient:
    """One MQTT v5 connection with the project's defaults (see the module docstring).

    ``will`` is ``(topic, payload, qos, retain)``: published by the broker if the
    connection dies without a clean :meth:`close` (process killed, network gone,
    keepalive missed). ``clean_start``/``session_expiry_s`` are the MQTT v5 session
    settings: with ``clean_start=False`` and a session expiry > 0 the broker keeps
    the subscriptions and queues QoS ≥ 1 messages while this client is away.
    ``max_inflight`` bounds unacknowledged QoS ≥ 1 publishes on the wire; beyond it
    they wait in memory (never dropped).
    """

    def __init__(
        self,
        broker: BrokerSettings,
        client_id: str,
        *,
        will: tuple[str, bytes | str, int, bool] | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        max_inflight: int = MAX_INFLIGHT,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s

        self._lock = threading.Lock()  # _started
        self._routes = Routes()
        self._subacks = Subacks(client_id)
        self._unacked = Unacknowledged()
        self._conn_callbacks: list[Callable[[bool], None]] = []

        self._connected = False
        self._started = False
        self._closing = False
        self._connack = threading.Event()
        self._round_sent = threading.Event()  # see wait_subscribed
        self._refused: str | None = None
        self._refusal: str | None = None  # the last refusal or TLS failure, for callers
        self._early_close: str | None = None
        self._refused_callbacks: list[Callable[[str], None]] = []
        self._resub: Acks | None = None
        self._failures = 0
        self._net_thread: int | None = None

        c = paho_client(broker, client_id, will=will, max_inflight=max_inflight)
        c.on_socket_open = self._on_socket_open
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._client = c

    # -- public API -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        return self._connected

    @property
    def refused(self) -> str | None:
        """Why the broker last refused this client (bad password, not authorised) or
        its TLS check failed; ``None`` once a connection succeeds. Retrying will not
        help until the credentials, certificates or broker change."""
        return self._refusal

    def on_refused(self, cb: Callable[[str], None]) -> None:
        """Call ``cb(reason)`` on each refusal or TLS failure (see :attr:`refused`).

        Runs on the network thread; the client keeps retrying with backoff.
        """
        self._refused_callbacks.append(cb)

    @property
    def paho(self) -> mqtt.Client:
        """The underlying paho client (escape hatch; prefer the methods here)."""
        return self._client

    @property
    def address(self) -> str:
        return self.broker.address

    def set_will(self, topic: str, payload: bytes | str, qos: int, retain: bool) -> None:
        """The last will the broker publishes if this connection dies; before connect."""
        if self._started:
            raise RuntimeError(f"{self.client_id}: set_will() after connect()")
        self._client.will_set(topic, payload, qos, retain)

    def connect(self, timeout: float = 10.0, wait: bool = True) -> BusClient:
        """Start connecting (and reconnecting, forever) in the background.

        With ``wait`` it blocks until the broker accepted the connection and the
        remembered subscriptions are acknowledged, or raises ``TimeoutError`` (no
        broker reachable within ``timeout``) or ``ConnectionError`` (the broker
        refused: bad credentials, not authorised …; or the TLS check of the broker
        failed); on either error the client is stopped. Without ``wait`` it returns at
        once and keeps retrying with backoff.
        """
        with self._lock:
            if self._started:
                raise RuntimeError(f"{self.client_id}: connect() called twice")
            self._started = True
            self._closing = False
        self._connack.clear()
        self._round_sent.clear()
        self._refused = None
        self._refusal = None
        self._early_close = None
        self._resub = None
        self._failures = 0
        props = Properties(PacketTypes.CONNECT)
        if self._session_expiry_s > 0:
            props.SessionExpiryInterval = self._session_expiry_s
        self._client.connect_async(
            self.broker.host,
            self.broker.port,
            keepalive=self.broker.keepalive,
            clean_start=self._clean_start,
            properties=props,
        )
        self._client.loop_start()
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        if not self._connack.wait(timeout):
            failures, early = self._failures, self._early_close
            self._stop()
            why = early if early is not None else "is it running and reachable?"
            raise TimeoutError(
                f"could not connect to the MQTT broker at {self.address} within {timeout:g} s "
                f"({failures} failed attempt{'s' if failures != 1 else ''}): {why}"
            )
        if self._refused is not None:
            refused = self._refused
            self._stop()
            if refused.startswith("TLS"):
                raise ConnectionError(f"{refused} (broker {self.address})")
            raise ConnectionError(
                f"the MQTT broker at {self.address} refused {self.client_id!r}: {refused}"
            )
        resub = self._resub
        if resub is not None and not resub.wait(max(0.0, deadline - time.monotonic())):
            log.warning("%s: subscriptions not acknowledged within %g s", self.client_id, timeout)
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until connected with the broker's answer to every subscription renewed
        on that connection (a refusal is logged, see ``Subacks``); False on timeout. A
        service says it is ready only then: a message published before the broker holds
        its subscription would never reach it (a shared subscription with no member
        drops it). Not from a handler: the answers arrive on that same thread."""
        deadline = time.monotonic() + timeout
        while True:
            # set once a connection's round of SUBSCRIBEs is registered in _resub,
            # cleared when that connection is lost
            if not self._round_sent.wait(max(0.0, deadline - time.monotonic())):
                return False
            resub = self._resub
            answered = resub is None or resub.wait(max(0.0, deadline - time.monotonic()))
            # a disconnect releases the waiting round: that is no answer
            if answered and self._connected and self._round_sent.is_set():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def close(self, timeout: float = 2.0) -> None:
        """Disconnect cleanly (the broker discards the last will) and stop the loop.

        Waits up to ``timeout`` seconds for QoS ≥ 1 publishes still unacknowledged,
        if connected. Idempotent.
        """
        if not self._started:
            return
        if self._connected and timeout > 0 and threading.get_ident() != self._net_thread:
            self.flush(timeout)
        self._stop()

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish; thread-safe, never blocks on the network.

        QoS 0 while disconnected is dropped (``info.rc == MQTT_ERR_NO_CONN``). QoS ≥ 1
        is queued in memory while disconnected and sent after the reconnect: its
        ``info.rc`` is then success and ``info.wait_for_publish()`` /
        ``info.is_published()`` follow the real acknowledgement.

        A topic with a control character is a ``ValueError``: mosquitto would drop the
        connection for it, and a QoS 1 message would be resent (and the connection
        dropped) on every reconnect.
        """
        _check_topic(topic)
        info = self._client.publish(topic, payload, qos, retain)
        if qos > 0:
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                # paho keeps the message and resends it on reconnect, but would leave
                # this rc, making is_published()/wait_for_publish() raise forever.
                info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            self._unacked.add(info)
        return info

    def publish_many(self, messages: Sequence[tuple[str, bytes | str]], qos: int = 0) -> int:
        """Publish ``(topic, payload)`` pairs at ``qos`` (0 or 1), in order; returns how
        many went out (QoS 1: how many were accepted, as ``publish`` would).

        For a burst (the classifier's results for one batch): paho's ``publish`` wakes
        its network thread and writes one packet per call, ~20 µs of Python per message
        on a busy classifier. Here the PUBLISH packets are built in one buffer and handed
        to paho's send queue as one write; on the wire they are the same packets. Like
        QoS 0 ``publish``, nothing is sent (0 is returned) while disconnected.
        """
        if not messages:
            return 0
        if qos == 1:
            return self._publish_many_qos1(messages)
        if qos != 0:
            raise ValueError(f"publish_many takes QoS 0 or 1, not {qos}")
        queue = getattr(self._client, "_packet_queue", None)
        if queue is None or not packets.BATCHED:  # another paho: one call each
            sent = 0
            for topic, payload in messages:
                info = self.publish(topic, payload, 0)
                sent += info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            return sent
        if not self._client.is_connected():
            return 0
        blob = packets.qos0_publishes(messages)
        info = mqtt.MQTTMessageInfo(0)
        rc = queue(mqtt.PUBLISH, blob, 0, 0, info)
        return len(messages) if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else 0

    def _publish_many_qos1(self, messages: Sequence[tuple[str, bytes | str]]) -> int:
        """QoS 1 publishes registered with paho as its own ``publish`` registers them
        (so PUBACKs, resends after a reconnect and the in-flight window work as usual),
        their packets written in one buffer. Falls back to ``publish`` per message for
        another paho or while disconnected (paho then queues them itself)."""
        c = self._client
        needed = ("_out_message_mutex", "_out_messages", "_mid_generate", "_packet_queue")
        if not packets.BATCHED or not c.is_connected() or not all(hasattr(c, n) for n in needed):
            sent = 0
            for topic, payload in messages:
                sent += self.publish(topic, payload, 1).rc == MQTTErrorCode.MQTT_ERR_SUCCESS
            return sent
        for topic, _ in messages:
            _check_topic(topic)
        blob = bytearray()
        accepted = []
        with c._out_message_mutex:
            for topic, payload in messages:
                if 0 < c._max_queued_messages <= len(c._out_messages):
                    break  # paho's own limit: what publish() would refuse
                t = topic.encode("utf-8")
                p = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
                mid = c._mid_generate()
                m = mqtt.MQTTMessage(mid, t)
                m.timestamp = time.monotonic()
                m.payload, m.qos, m.retain, m.dup, m.properties = p, 1, False, False, None
                c._out_messages[mid] = m
                window = c._max_inflight_messages
                if window == 0 or c._inflight_messages < window:
                    c._inflight_messages += 1
                    m.state = mqtt.mqtt_ms_wait_for_puback
                    packets.append_qos1_publish(blob, t, mid, p)
                else:  # past the in-flight window: paho sends it when a PUBACK frees one
                    m.state = mqtt.mqtt_ms_queued
                m.info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                accepted.append(m.info)
            if blob:
                c._packet_queue(mqtt.PUBLISH, blob, 0, 0, mqtt.MQTTMessageInfo(0))
        for info in accepted:
            self._unacked.add(info)
        return len(accepted)

    @property
    def unsent(self) -> int:
        """Packets handed to paho but not yet written to the socket (QoS 0 included)."""
        return len(self._client._out_packet)

    @property
    def pending(self) -> int:
        """QoS ≥ 1 publishes not yet acknowledged by the broker (queued or in flight)."""
        return self._unacked.count()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every QoS ≥ 1 publish so far is acknowledged; False on timeout.

        Does not wait when called from a handler (acks arrive on that same thread).
        """
        if threading.get_ident() == self._net_thread:
            return self.pending == 0
        return self._unacked.wait(timeout)

    def subscribe(
        self, topic_filter: str, handler: Handler, qos: int = 1, timeout: float = 5.0
    ) -> None:
        """Call ``handler(message)`` for every message matching ``topic_filter``.

        The subscription is remembered and renewed on every (re)connect; it may be
        made before :meth:`connect`. ``$share/<group>/<filter>`` works (messages are
        matched against ``<filter>``). If connected, waits up to ``timeout`` for the
        broker's acknowledgement (not when called from a handler).
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        self._routes.add(topic_filter, handler, qos)
        if not self._connected:
            return
        done = self._send_subscribe({topic_filter: qos})
        if done is None or timeout <= 0 or threading.get_ident() == self._net_thread:
            return
        if not done.wait(timeout):
            log.warning("%s: no SUBACK for %s within %g s", self.client_id, topic_filter, timeout)

    def on_connection_change(self, cb: Callable[[bool], None]) -> None:
        """Call ``cb(True)`` after each successful (re)connect, ``cb(False)`` on each loss.

        Runs on the network thread; on a connect it runs before messages queued
        while offline are sent.
        """
        self._conn_callbacks.append(cb)

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _stop(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected = False
        self._round_sent.clear()
        with self._lock:
            self._started = False

    def _send_subscribe(self, filters: dict[str, int]) -> Acks | None:
        return self._subacks.send(self._client, self._routes, filters)

    def _notify(self, up: bool) -> None:
        for cb in list(self._conn_callbacks):
            try:
                cb(up)
            except Exception:
                log.exception("%s: connection callback %r raised", self.client_id, cb)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._net_thread = threading.get_ident()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError) as exc:
            log.warning("%s: cannot set TCP_NODELAY: %s", self.client_id, exc)

    def _refuse(self, reason: str) -> None:
        """A failure retrying won't mend: remember it, end connect()'s wait, tell callers."""
        self._refused = self._refusal = reason
        self._connack.set()
        for cb in list(self._refused_callbacks):
            try:
                cb(reason)
            except Exception:
                log.exception("%s: refusal callback %r raised", self.client_id, cb)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._net_thread = threading.get_ident()
        if reason.is_failure:
            log.error(
                "%s: broker %s refused the connection: %s", self.client_id, self.address, reason
            )
            self._refuse(str(reason))
            return
        # Connected first, then the snapshot: a subscribe() racing with this either
        # lands in the snapshot or sees connected and sends its own SUBSCRIBE.
        self._connected = True
        self._failures = 0
        self._refusal = self._early_close = None
        filters = self._routes.filters()
        self._resub = self._send_subscribe(filters) if filters else None
        self._round_sent.set()
        log.info(
            "%s: connected to %s (session present: %s)",
            self.client_id,
            self.address,
            bool(getattr(flags, "session_present", False)),
        )
        self._connack.set()
        self._notify(True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._failures += 1
        # paho calls this inside its ``except OSError``: the exception is still current
        exc = sys.exception()
        tls = tls_failure(exc, self.broker)
        if tls is not None:
            if tls != self._refusal:  # once per distinct cause, not every retry
                log.error("%s: %s (broker %s), retrying", self.client_id, tls, self.address)
            self._refuse(tls)
            return
        if self.broker.tls and isinstance(exc, ConnectionResetError):
            # a plain MQTT listener drops a TLS ClientHello as a malformed packet
            if self._early_close is None:
                log.warning(
                    "%s: %s reset the connection during the TLS handshake: is that port "
                    "TLS? (retrying)",
                    self.client_id,
                    self.address,
                )
            self._early_close = (
                "it reset each connection during the TLS handshake: is that port TLS?"
            )
            return
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "%s: cannot reach %s (attempt %d), retrying",
            self.client_id,
            self.address,
            self._failures,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was_connected, self._connected = self._connected, False
        self._round_sent.clear()
        self._subacks.release()  # the subscriptions are renewed on the next connect anyway
        if self._closing:
            log.info("%s: disconnected from %s", self.client_id, self.address)
        elif not was_connected and not self._connack.is_set():
            # closed between TCP connect and CONNACK: e.g. plain MQTT sent to a TLS port
            if self._early_close is None:
                log.warning(
                    "%s: %s closed the connection before answering CONNECT (%s): is the "
                    "port TLS (mqtts://)?",
                    self.client_id,
                    self.address,
                    reason,
                )
            self._early_close = (
                f"it closed each connection before answering ({reason}): is that port TLS "
                "(mqtts://) or not MQTT?"
            )
        elif was_connected:
            log.warning(
                "%s: lost connection to %s (%s); reconnecting", self.client_id, self.address, reason
            )
        if was_connected:
            self._notify(False)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], props: Any
    ) -> None:
        self._subacks.acknowledged(mid, reasons)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            log.warning("%s: dropped a message with a non-utf-8 topic", self.client_id)
            return
        ids = getattr(msg.properties, "SubscriptionIdentifier", None) if msg.properties else None
        handlers = self._routes.for_identifiers(ids) if ids else self._routes.handlers(topic)
        if not handlers:
            log.debug("%s: no handler for %s", self.client_id, topic)
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        message = Message(topic, payload, bool(msg.retain), msg.qos)
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("%s: handler %r failed on %s", self.client_id, handler, topic)


def tls_failure(exc: BaseException | None, broker: BrokerSettings) -> str | None:
    """What went wrong in a TLS handshake, for a person; ``None`` if ``exc`` is not TLS's.

    >>> from types import SimpleNamespace
    >>> err = ssl.SSLCertVerificationError(1, "x")
    >>> err.verify_message = "unable to get local issuer certificate"
    >>> text = tls_failure(err, SimpleNamespace(ca_certs="ca.crt"))
    >>> text.endswith("local issuer certificate (checked against ca.crt)")
    True
    """
    against = getattr(broker, "ca_certs", "") or "the system's CA certificates"
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", "") or str(exc)
        return f"TLS verification of the broker failed: {why} (checked against {against})"
    if isinstance(exc, ssl.SSLError):
        why = getattr(exc, "reason", None) or str(exc)
        hint = " (is that port TLS?)" if why == "WRONG_VERSION_NUMBER" else ""
        return f"TLS handshake with the broker failed: {why}{hint}"
    return None
