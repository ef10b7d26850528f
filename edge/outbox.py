"""The edge's embeddings until their results arrive: the result is the acknowledgement.

Each embedding the edge publishes stays here until the classifier's result for its seq
comes back (:meth:`Outbox.answered`). While the broker is unreachable new ones wait
here unsent and go out in order once it is back, before anything newer. A sent one
with no result after ``resend_after_s`` is sent again (the wait doubles per try; the
classifier answers a repeat from its recent answers, so nothing is classified twice)
up to ``tries`` times, then forgotten and counted as unanswered. The buffer is
bounded: when full, the oldest is dropped and counted.

While the classifier is known to be offline (its last will) nothing is resent: the
broker keeps what was sent for its persistent session. When it is back every waiting
embedding gets a fresh wait, so only what it lost is sent again.

Threads: the frame loop calls :meth:`put`; the edge's outbox thread calls
:meth:`pump`; the transport's delivery thread calls :meth:`answered` and
:meth:`classifier_online`. State is under ``_lock``, which is never held while
publishing; ``_send_lock`` keeps :meth:`put` and :meth:`pump` from overtaking each
other, so messages leave in seq order (the delivery thread never takes it).

>>> sent = []
>>> box = Outbox(sent.append, lambda: True, capacity=2, resend_after_s=10.0, tries=2)
>>> box.put(1, b"one", 0.0), box.put(2, b"two", 0.0), box.put(3, b"three", 0.0)
(True, True, True)
>>> sent, box.dropped, len(box)
([b'one', b'two', b'three'], 1, 2)
>>> box.answered(3), box.answered(3), len(box)
(0.0, None, 1)
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Entry:
    payload: bytes
    captured_perf: float  # perf_counter at capture, for capture → result
    sent_at: float | None = None  # monotonic time of the last send; None: not sent yet
    tries: int = 0


class Outbox:
    """Embeddings by seq, oldest first, until answered (see the module docstring).

    ``send(payload)`` publishes one; ``connected()`` says whether the broker is there.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        connected: Callable[[], bool],
        *,
        capacity: int = 1000,
        resend_after_s: float = 5.0,
        tries: int = 4,
    ) -> None:
        self._send = send
        self._connected = connected
        self.capacity = capacity
        self.resend_after_s = resend_after_s
        self.tries = tries
        self._items: OrderedDict[int, Entry] = OrderedDict()
        self._unsent = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._classifier_online: bool | None = None  # None: not known yet
        # counters (under _lock)
        self.dropped = 0  # oldest dropped because the buffer was full
        self.resent = 0  # sends after the first
        self.unanswered = 0  # forgotten after the last try's wait

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def unsent(self) -> int:
        """Kept but never sent yet (the broker was away)."""
        with self._lock:
            return self._unsent

    def counts(self) -> tuple[int, int, int]:
        """``(dropped, resent, unanswered)``, one consistent snapshot."""
        with self._lock:
            return self.dropped, self.resent, self.unanswered

    def put(self, seq: int, payload: bytes, captured_perf: float) -> bool:
        """Keep one embedding and send it now if the broker is there and nothing older
        waits to be sent; ``True`` if sent now."""
        with self._send_lock:
            entry = Entry(payload, captured_perf)
            with self._lock:
                items = self._items
                old = items.pop(seq, None)  # a seq reused after 2³² messages
                if old is not None and old.sent_at is None:
                    self._unsent -= 1
                while len(items) >= self.capacity:
                    _, oldest = items.popitem(last=False)
                    self.dropped += 1
                    if oldest.sent_at is None:
                        self._unsent -= 1
                items[seq] = entry
                now = self._unsent == 0 and self._connected()
                if now:
                    entry.sent_at, entry.tries = time.monotonic(), 1
                else:
                    self._unsent += 1
            if now:
                self._send(payload)
            return now

    def answered(self, seq: int) -> float | None:
        """The result for ``seq`` arrived: forget it; its capture time if it was kept."""
        with self._lock:
            entry = self._items.pop(seq, None)
            if entry is None:
                return None
            if entry.sent_at is None:  # answered before we sent it: a copy from before
                self._unsent -= 1
            return entry.captured_perf

    def classifier_online(self, online: bool) -> None:
        """The classifier's retained status changed; back online: fresh waits."""
        with self._lock:
            was, self._classifier_online = self._classifier_online, online
            if online and was is False:
                now = time.monotonic()
                for entry in self._items.values():
                    if entry.sent_at is not None:
                        entry.sent_at = now

    def pump(self, now: float | None = None, reconnected_at: float | None = None) -> int:
        """Send what waits for the broker, in order, and resend what is overdue; with
        ``reconnected_at`` (monotonic), also resend what was sent before that reconnect
        and is unanswered (a broker that died took what it held). Returns how many
        were sent."""
        with self._send_lock:
            if not self._connected():
                return 0
            now = time.monotonic() if now is None else now
            out: list[bytes] = []
            with self._lock:
                resend = self._classifier_online is not False
                gone: list[int] = []
                for seq, entry in self._items.items():
                    if entry.sent_at is None:
                        self._unsent -= 1
                    elif reconnected_at is not None and entry.sent_at < reconnected_at:
                        self.resent += 1
                    elif not resend or now - entry.sent_at < self._wait(entry.tries):
                        continue
                    elif entry.tries >= self.tries:
                        gone.append(seq)
                        continue
                    else:
                        self.resent += 1
                    entry.sent_at = now
                    entry.tries += 1
                    out.append(entry.payload)
                for seq in gone:
                    del self._items[seq]
                self.unanswered += len(gone)
            for payload in out:
                self._send(payload)
            return len(out)

    def _wait(self, tries: int) -> float:
        return self.resend_after_s * (1 << max(0, tries - 1))  # doubles per try

    def wait_empty(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until every kept embedding is answered (or dropped)."""
        deadline = time.monotonic() + timeout
        while len(self) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not len(self)
