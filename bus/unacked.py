"""The QoS ≥ 1 publishes a client has not had acknowledged yet: counted and waited for.

Brokers acknowledge QoS 1 in order, so acknowledged messages drop off the front of
the list: counting is O(1) amortised, and waiting for the newest unacknowledged one
waits for them all without waking per message.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt


def acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    try:
        return info.is_published()
    except (ValueError, RuntimeError):  # never queued / failed for good: nothing to wait for
        return True


class Unacknowledged:
    """Thread-safe: ``add`` from any publishing thread, ``count``/``wait`` from others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._infos: deque[mqtt.MQTTMessageInfo] = deque()

    def add(self, info: mqtt.MQTTMessageInfo) -> None:
        with self._lock:
            self._infos.append(info)
            self._prune()

    def count(self) -> int:
        with self._lock:
            self._prune()
            return len(self._infos)

    def wait(self, timeout: float) -> bool:
        """Until every one so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                self._prune()
                if not self._infos:
                    return True
                last = next((i for i in reversed(self._infos) if not acknowledged(i)), None)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if last is None:
                continue
            # ValueError/RuntimeError: never queued / failed for good; acknowledged() says so
            with contextlib.suppress(ValueError, RuntimeError):
                last.wait_for_publish(min(remaining, 0.25))

    def _prune(self) -> None:
        infos = self._infos
        while infos and acknowledged(infos[0]):
            infos.popleft()
