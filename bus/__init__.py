"""The one place that knows MQTT: topic names, the wire contract, the transports.

- :mod:`~facewire.bus.topics` — topic names and node ids,
- :mod:`~facewire.bus.codec` — the binary embedding message,
- :mod:`~facewire.bus.messages` — the JSON messages (result, statuses, error, thresholds),
- :mod:`~facewire.bus.errors` — :class:`WireError`, what every decoder raises,
- :mod:`~facewire.bus.transport` — the :class:`Transport` services take,
- :mod:`~facewire.bus.client` — the MQTT one, :class:`BusClient`,
- :mod:`~facewire.bus.memory` — an in-memory one, for a service's own logic in tests.

Nothing here knows about models or pixels.
"""

from facewire.bus import topics
from facewire.bus.codec import EmbeddingMessage, decode, encode
from facewire.bus.errors import WireError
from facewire.bus.transport import Message, Transport

__all__ = [
    "EmbeddingMessage",
    "Message",
    "Transport",
    "WireError",
    "decode",
    "encode",
    "topics",
]
