"""The one place that knows MQTT: topic names, the embedding codec, the client factory.

Nothing here knows about models or pixels; services use it to talk over the broker.
"""

from facewire.bus import topics
from facewire.bus.client import BusClient, Message
from facewire.bus.codec import CodecError, EmbeddingMessage, check_vector, decode, encode

__all__ = [
    "BusClient",
    "CodecError",
    "EmbeddingMessage",
    "Message",
    "check_vector",
    "decode",
    "encode",
    "topics",
]
