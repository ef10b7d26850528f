"""MQTT v5 PUBLISH packets built by hand, many in one buffer, for ``publish_many``.

paho's ``publish`` wakes its network thread and writes one packet per call; a burst
of results built into one buffer goes out as one write, the same packets on the
wire. This hands the buffer to paho's own send queue, which is paho's internal API:
checked against 2.x (pyproject pins paho-mqtt < 3), and the tests compare it with
``publish()`` on a real broker. :data:`BATCHED` is False for any other paho.

>>> bytes(qos0_publishes([("a/b", b"hi")]))
b'0\\x08\\x00\\x03a/b\\x00hi'
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import paho.mqtt

BATCHED = paho.mqtt.__version__.startswith("2.")
_U16 = struct.Struct("!H")


def _pack_varint(buf: bytearray, n: int) -> None:
    """MQTT's variable-length "remaining length" (1–4 bytes, 7 bits each)."""
    while True:
        byte, n = n & 0x7F, n >> 7
        buf.append(byte | 0x80 if n else byte)
        if not n:
            return


def qos0_publishes(messages: Sequence[tuple[str, bytes | str]]) -> bytearray:
    """PUBLISH packets (QoS 0, no retain) for ``(topic, payload)`` pairs, in order."""
    blob = bytearray()
    for topic, payload in messages:
        t = topic.encode("utf-8")
        p = payload.encode("utf-8") if isinstance(payload, str) else payload
        # topic (u16 length + bytes), MQTT v5's empty property block (one 0 byte), payload
        blob.append(0x30)
        _pack_varint(blob, 2 + len(t) + 1 + len(p))
        blob += _U16.pack(len(t))
        blob += t
        blob.append(0)
        blob += p
    return blob


def append_qos1_publish(blob: bytearray, topic: bytes, mid: int, payload: bytes) -> None:
    """One QoS 1 PUBLISH (no retain, not a duplicate) with packet id ``mid``.

    >>> blob = bytearray()
    >>> append_qos1_publish(blob, b"a/b", 7, b"hi")
    >>> bytes(blob)
    b'2\\n\\x00\\x03a/b\\x00\\x07\\x00hi'
    """
    blob.append(0x32)
    _pack_varint(blob, 2 + len(topic) + 2 + 1 + len(payload))
    blob += _U16.pack(len(topic))
    blob += topic
    blob += _U16.pack(mid)
    blob.append(0)
    blob += payload
