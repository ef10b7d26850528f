"""Bus subscriptions → the detection log and the live state.

Handlers run on the transport's delivery thread (paho's network thread) and never
raise: each payload is decoded into its wire type (:mod:`facewire.bus.messages`); one
that does not decode is logged (rate-limited) and counted, and the next message is
handled as usual. Nothing slow runs here: the store hands rows to its own writer.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict

from facewire.bus import topics
from facewire.bus.errors import WireError
from facewire.bus.messages import (
    Alert,
    ClassifierStatus,
    Correction,
    EdgeStatus,
    Enrolment,
    ErrorReport,
    GalleryReply,
    Result,
    Sighting,
    ThresholdStats,
)
from facewire.bus.sealing import ResultVerifier
from facewire.bus.transport import Message, Transport
from facewire.monitor.state import State
from facewire.monitor.store import Store

__all__ = ["Subscriber"]

log = logging.getLogger(__name__)

#: The monitor's subscriptions.
FILTERS = (
    topics.RESULTS,
    topics.STATUSES,
    topics.ERRORS,
    topics.THRESHOLDS,
    topics.GALLERY_REPLIES,
    topics.ALERTS,
)


#: Results remembered to recognise one delivered twice (the classifier answers an
#: embedding sent again with the text it gave the first time).
SEEN_RESULTS = 20_000


class Subscriber:
    """Feeds ``store`` and ``state`` from a transport. :meth:`handle` works without one."""

    def __init__(
        self,
        transport: Transport | None,
        store: Store,
        state: State,
        verifier: ResultVerifier | None = None,
    ) -> None:
        self.client = transport
        # with sealing on, a result (or event) not signed by the classifier is refused:
        # logged as malformed, never shown as real
        self.verifier = verifier
        self.store = store
        self.state = state
        self._log_lock = threading.Lock()
        self._last_warning = 0.0
        self._suppressed = 0
        self._subscribed = False
        # (node, seq, captured_at) of the last results: the delivery thread's alone
        self._seen: OrderedDict[tuple[str, int, float | None], None] = OrderedDict()

    # --- connection ------------------------------------------------------------------

    def start(self, timeout: float = 10.0, wait: bool = True) -> None:
        """Subscribe and connect (reconnecting forever in the background).

        With ``wait`` it blocks until connected and subscribed, or raises
        ``TimeoutError`` / ``ConnectionError`` (see ``BusClient.connect``); calling it
        again after a timeout with ``wait=False`` keeps trying in the background.
        """
        client = self.client
        if client is None:
            raise RuntimeError("a Subscriber without a transport can only handle()")
        if not self._subscribed:
            self._remember_logged()
            for flt in FILTERS:
                client.subscribe(flt, self.handle, qos=1)
            self._subscribed = True
            self.state.broker_address = client.address
            self.state.broker_connected = lambda: bool(client.connected)
        client.connect(timeout=timeout, wait=wait)

    def _remember_logged(self) -> None:
        """The newest rows already in the log: a result the broker delivers again after
        a restart (or an edge's repeat answered meanwhile) is not logged twice."""
        rows = self.store.query(limit=SEEN_RESULTS)
        if rows and "captured_at" not in rows[0]:  # rows without the column: from the message
            rows = self.store.query(limit=SEEN_RESULTS, raw=True)
            for row in rows:
                result = row.get("result")
                row["captured_at"] = result.get("captured_at") if isinstance(result, dict) else None
        for row in reversed(rows):
            if row.get("seq") is not None:
                self._seen[(row["node"], row["seq"], row["captured_at"])] = None

    def teach(self, node: str, seq: int, name: str, wrong: bool) -> str:
        """Ask the classifier to name the sighting ``node``/``seq`` as ``name`` (an
        enrolment from its vector), or, with ``wrong``, to keep it as *not* ``name``
        (a correction). Returns the request id its reply will carry."""
        if self.client is None:
            raise RuntimeError("the monitor has no broker connection")
        request_id = uuid.uuid4().hex[:16]
        if wrong:
            message: Correction | Enrolment = Correction(node, seq, name, request_id)
            topic = topics.CORRECT
        else:
            sighting = (Sighting(node, seq),)
            message = Enrolment(name, request_id, sightings=sighting, source="sighting")
            topic = topics.ENROLL
        self.client.publish(topic, message.encode(), qos=1)
        return request_id

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.state.broker_connected = lambda: False

    # --- dispatch --------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        """Route one message. Never raises."""
        now = time.time()
        try:
            self._dispatch(msg, now)
        except WireError as exc:
            self._malformed(msg, str(exc), now)
        except Exception as exc:  # a bug here must not kill the delivery thread
            log.exception("monitor: failed to handle a message on %s", msg.topic)
            self._malformed(msg, f"{type(exc).__name__}: {exc}", now)

    def _dispatch(self, msg: Message, now: float) -> None:
        topic = msg.topic
        if topic == topics.THRESHOLDS:
            if not msg.payload:  # retained message cleared
                self.state.thresholds(None)
                return
            stats = ThresholdStats.decode(msg.payload)
            self.state.thresholds(stats.as_dict(), at=now)
            self.state.count("thresholds")
            return
        if topic == topics.GALLERY_REPLIES:
            reply = GalleryReply.decode(msg.payload)
            self.state.gallery_reply(reply.as_dict(), at=now)
            self.state.count("gallery_reply")
            return
        if topic == topics.ALERTS:
            alert = Alert.decode(msg.payload)
            self.state.alert(alert.as_dict(), at=now)
            self.state.count("alert")
            return
        if topic == topics.CLASSIFIER_STATUS:  # also matches faces/+/status
            if not msg.payload:
                self.state.classifier_status(None)
                return
            status = ClassifierStatus.decode(msg.payload)
            self.state.classifier_status(status.as_dict(), at=now)
            self.state.count("classifier_status")
            return
        node = topics.parse(topic)
        kind = topic.rsplit("/", 1)[1]
        if kind == "status":
            if not msg.payload:  # retained status cleared: node decommissioned
                self.state.forget_node_status(node)
                return
            edge = EdgeStatus.decode(msg.payload)
            self.state.node_status(node, edge.as_dict(), at=now)
            self.state.count("status")
        elif kind == "result":
            payload = msg.payload if self.verifier is None else self.verifier.verify(msg.payload)
            result = Result.decode(payload)
            key = (node, result.seq, result.captured_at)
            if key in self._seen:  # the same answer again: logged once
                self.state.count("result_repeat")
                return
            self._seen[key] = None
            if len(self._seen) > SEEN_RESULTS:
                self._seen.popitem(last=False)
            self.store.add(result.as_dict(), node=node, received_at=now)
            self.state.seen_result(node, at=now)
            self.state.count("result")
        elif kind == "error":
            report = ErrorReport.decode(msg.payload)
            self.state.error(node, report.as_dict(), at=now)
            self.state.count("error")
        else:
            raise WireError("bad_topic", f"unexpected topic {topic!r}")

    def _malformed(self, msg: Message, reason: str, now: float) -> None:
        self.state.malformed(msg.topic, reason, bytes(msg.payload or b""), at=now)
        with self._log_lock:
            if now - self._last_warning < 5.0:
                self._suppressed += 1
                return
            more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
            self._last_warning, self._suppressed = now, 0
        log.warning("monitor: ignored a message on %s: %s%s", msg.topic, reason, more)
