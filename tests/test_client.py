"""BusClient against a real mosquitto (the ``mosquitto`` fixture): no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import codec, topics
from facewire.bus.client import BusClient, Message
from facewire.config.schema import BrokerConfig
from tests.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent


def cfg(broker: Mosquitto, **kw: object) -> BrokerConfig:
    """Fast reconnects so a broker restart costs tens of milliseconds, not seconds."""
    return BrokerConfig(url=broker.url, reconnect_min_s=0.05, reconnect_max_s=0.2, **kw)  # type: ignore[arg-type]


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Inbox:
    """A thread-safe handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Message) -> None:
        with self._lock:
            self.messages.append(msg)

    @property
    def payloads(self) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages]

    def wait(self, n: int, timeout: float = 5.0) -> list[Message]:
        wait_until(lambda: len(self.messages) >= n, timeout, f"{n} messages")
        with self._lock:
            return list(self.messages)


@pytest.fixture
def clients(request: pytest.FixtureRequest) -> list[BusClient]:
    """Closes every client a test registers, whatever happens."""
    made: list[BusClient] = []

    def close_all() -> None:
        for c in made:
            c.close(timeout=0)

    request.addfinalizer(close_all)
    return made


def new(made: list[BusClient], broker: BrokerConfig, client_id: str, **kw: object) -> BusClient:
    c = BusClient(broker, client_id, **kw)  # type: ignore[arg-type]
    made.append(c)
    return c


def test_publish_subscribe_round_trip(mosquitto: Mosquitto, clients: list[BusClient]) -> None:
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "sub").connect()
    sub.subscribe(topics.EMBEDDINGS, inbox)  # waits for the SUBACK
    pub = new(clients, cfg(mosquitto), "pub").connect()
    assert pub.connected and sub.connected

    msg = codec.EmbeddingMessage(
        node="door",
        seq=1,
        frame_id=2,
        face_index=0,
        bbox=(1, 2, 3, 4),
        model_id="sface-1a2b3c4d",
        captured_at=time.time(),
        stages={"embed": 3.5},
        quality=(100.0, 50.0, 120.0),
        vector=np.full(512, 1 / np.sqrt(512), np.float32),
    )
    payload = codec.encode(msg)
    pub.publish(topics.embedding("door"), payload, qos=1).wait_for_publish(5)
    pub.publish(topics.embedding("hall"), "text payload", qos=0)
    pub.publish(topics.result("door"), b"not subscribed", qos=1)

    first, second = inbox.wait(2)
    assert first == Message(topics.embedding("door"), payload, False, 1)
    assert codec.decode(first.payload) == codec.decode(payload)
    assert second == Message(topics.embedding("hall"), b"text payload", False, 0)
    time.sleep(0.05)
    assert len(inbox.messages) == 2


@pytest.mark.parametrize("batched", [True, False], ids=["one-write", "publish-each"])
def test_publish_many_delivers_every_message_in_order(
    mosquitto: Mosquitto,
    clients: list[BusClient],
    batched: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facewire.bus import packets

    monkeypatch.setattr(packets, "BATCHED", batched)
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "sub").connect()
    sub.subscribe(topics.RESULTS, inbox)
    pub = new(clients, cfg(mosquitto), "pub").connect()
    # payload sizes around MQTT's 1-, 2- and 3-byte length fields, text and bytes,
    # a non-ASCII node id in the topic
    sizes = [0, 1, 120, 127, 128, 16_376, 16_384, 200_000]
    batch = [
        (topics.result(f"n{i % 3}-ü"), (f"{i}:" + "x" * n) if i % 2 else bytes([i % 251]) * n)
        for i, n in enumerate(sizes * 3)
    ]
    assert pub.publish_many(batch) == len(batch)
    assert pub.publish_many([]) == 0
    got = inbox.wait(len(batch))
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (t, p.encode() if isinstance(p, str) else p, 0, False) for t, p in batch
    ]
    time.sleep(0.05)
    assert len(inbox.messages) == len(batch)


@pytest.mark.parametrize("batched", [True, False], ids=["one-write", "publish-each"])
def test_publish_many_at_qos1_is_acknowledged_in_order_past_the_inflight_window(
    mosquitto: Mosquitto,
    clients: list[BusClient],
    batched: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facewire.bus import packets

    monkeypatch.setattr(packets, "BATCHED", batched)
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "sub").connect()
    sub.subscribe(topics.RESULTS, inbox, qos=1)
    pub = new(clients, cfg(mosquitto), "pub").connect()
    # 3 × the client's in-flight window in one call: the rest wait for PUBACKs
    batch = [(topics.result(f"n{i % 4}"), f"result {i}" + "x" * (i % 300)) for i in range(300)]
    assert pub.publish_many(batch, qos=1) == len(batch)
    assert pub.flush(10)  # every one acknowledged by the broker
    assert not pub.paho._out_messages and pub.unsent == 0
    got = inbox.wait(len(batch), timeout=10)
    assert [(m.topic, m.payload, m.qos) for m in got] == [(t, p.encode(), 1) for t, p in batch]
    with pytest.raises(ValueError):
        pub.publish_many([("faces/a\tb/result", "x")], qos=1)
    with pytest.raises(ValueError):
        pub.publish_many([(topics.result("door"), "x")], qos=2)


def test_publish_many_at_qos1_survives_a_broker_restart(
    mosquitto: Mosquitto, clients: list[BusClient]
) -> None:
    pub = new(clients, cfg(mosquitto), "pub").connect()
    inbox = Inbox()
    # sent while the broker is down: paho keeps them and sends them after the reconnect
    mosquitto.stop()
    wait_until(lambda: not pub.connected, what="the client noticing the broker is gone")
    batch = [(topics.result("door"), f"r{i}") for i in range(50)]
    assert pub.publish_many(batch, qos=1) == len(batch)
    mosquitto.start()
    sub = new(clients, cfg(mosquitto), "sub")
    sub.subscribe(topics.RESULTS, inbox, qos=1)
    sub.connect()
    wait_until(lambda: pub.connected, timeout=15, what="the reconnect")
    assert pub.flush(10)
    # what was sent before the subscriber came need not reach it (some may, if its
    # subscription was in place before the resend); what is sent now does, in order
    assert pub.publish_many(batch, qos=1) == len(batch)
    want = [p.encode() for _, p in batch]
    wait_until(lambda: inbox.payloads[-50:] == want, 10, "the second batch, in order")


def test_publish_many_while_disconnected_sends_nothing(clients: list[BusClient]) -> None:
    c = new(clients, BrokerConfig(url=f"mqtt://127.0.0.1:{free_port()}"), "nobody")
    assert c.publish_many([(topics.result("door"), "x")]) == 0


def test_retained_and_subscribe_before_connect(
    mosquitto: Mosquitto, clients: list[BusClient]
) -> None:
    pub = new(clients, cfg(mosquitto), "pub").connect()
    pub.publish(topics.status("door"), '{"state": "online"}', qos=1, retain=True).wait_for_publish(
        5
    )

    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "sub")
    sub.subscribe(topics.STATUSES, inbox)  # remembered, made on connect
    sub.connect()
    (msg,) = inbox.wait(1)
    assert msg.retain and msg.topic == topics.status("door")
    assert json.loads(msg.payload) == {"state": "online"}


def test_shared_subscription_dispatch(mosquitto: Mosquitto, clients: list[BusClient]) -> None:
    shared_inbox, plain_inbox = Inbox(), Inbox()
    sub = new(clients, cfg(mosquitto), "classifier-1").connect()
    sub.subscribe(topics.shared(topics.EMBEDDINGS, "classifier"), shared_inbox)
    sub.subscribe(topics.RESULTS, plain_inbox)
    pub = new(clients, cfg(mosquitto), "pub").connect()
    for i in range(5):
        pub.publish(topics.embedding(f"n{i}"), bytes([i]), qos=1)
    pub.publish(topics.result("n0"), b"r", qos=1)
    got = shared_inbox.wait(5)
    assert sorted(m.payload for m in got) == [bytes([i]) for i in range(5)]
    assert plain_inbox.wait(1)[0].payload == b"r"
    assert len(shared_inbox.messages) == 5


def test_wait_subscribed_means_every_shared_filter_already_receives(
    mosquitto: Mosquitto, clients: list[BusClient]
) -> None:
    # Many filters make the round of SUBSCRIBEs after CONNACK take a while: a service that
    # said "ready" at CONNACK lost what was published to the last ones in the meantime
    # (a shared subscription with no member drops it).
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "many-filters")
    filters = 300
    for i in range(filters):
        sub.subscribe(topics.shared(f"wait/{i}", "g"), inbox, qos=1)
    sub.connect(wait=False)
    assert sub.wait_subscribed(10.0)
    pub = new(clients, cfg(mosquitto), "pub").connect()
    for i in reversed(range(filters)):  # the last subscribed first
        pub.publish(f"wait/{i}", str(i), qos=1)
    got = inbox.wait(filters, timeout=10.0)
    assert sorted(int(m.payload) for m in got) == list(range(filters))


def test_wait_subscribed_without_a_broker_is_false_after_the_timeout(
    clients: list[BusClient],
) -> None:
    c = new(clients, BrokerConfig(port=free_port(), reconnect_min_s=0.05), "nobody-there")
    c.subscribe("x", Inbox())
    c.connect(wait=False)
    t0 = time.monotonic()
    assert not c.wait_subscribed(0.3)
    assert 0.25 < time.monotonic() - t0 < 3


def test_handler_exception_does_not_stop_delivery(
    mosquitto: Mosquitto, clients: list[BusClient], caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    def broken(msg: Message) -> None:
        raise RuntimeError(f"boom on {msg.payload!r}")

    sub = new(clients, cfg(mosquitto), "sub").connect()
    sub.subscribe("t/+", broken)
    sub.subscribe("t/+", inbox)  # a second handler on the same filter still runs
    pub = new(clients, cfg(mosquitto), "pub").connect()
    with caplog.at_level("ERROR", logger="facewire.bus"):
        for i in range(3):
            pub.publish(f"t/{i}", str(i), qos=1)
        inbox.wait(3)
    assert [m.payload for m in inbox.messages] == [b"0", b"1", b"2"]
    assert sub.connected
    errors = [r for r in caplog.records if r.name == "facewire.bus" and r.exc_info]
    assert len(errors) == 3
    assert all("boom" in str(r.exc_info[1]) for r in errors if r.exc_info)


def _nodelay(client: BusClient) -> int:
    sock = client.paho.socket()
    assert isinstance(sock, socket.socket)
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_tcp_nodelay_is_set(mosquitto: Mosquitto, clients: list[BusClient]) -> None:
    c = new(clients, cfg(mosquitto), "nodelay").connect()
    assert _nodelay(c) != 0


def test_connect_timeout_names_the_broker(clients: list[BusClient]) -> None:
    port = free_port()  # nothing listens there
    c = new(clients, BrokerConfig(port=port, reconnect_min_s=0.05, reconnect_max_s=0.1), "lonely")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=f"mqtt://127.0.0.1:{port}"):
        c.connect(timeout=0.5)
    assert time.monotonic() - t0 < 3
    assert not c.connected
    c.close()  # harmless after a failed connect


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_username_password(tmp_path: Path, clients: list[BusClient]) -> None:
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pwfile), "node1", "s3cret"],
        check=True,
        capture_output=True,
    )
    # (Mosquitto runs the broker as the test's own user, who can read pytest's tmp dir)
    extra = f"allow_anonymous false\npassword_file {pwfile}\n"
    broker = Mosquitto(tmp_path, extra=extra).start()
    try:
        good = cfg(broker, username="node1", password="s3cret")
        assert new(clients, good, "good").connect(timeout=5).connected
        bad = cfg(broker, username="node1", password="wrong")
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{broker.port}"):
            new(clients, bad, "bad").connect(timeout=5)
        with pytest.raises(ConnectionError):
            new(clients, cfg(broker), "anonymous").connect(timeout=5)
    finally:
        for c in clients:
            c.close(timeout=0)
        broker.stop()


def _make_certs(d: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=t")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_tls(tmp_path: Path, clients: list[BusClient]) -> None:
    _make_certs(tmp_path)
    extra = (
        f"cafile {tmp_path / 'ca.pem'}\n"
        f"certfile {tmp_path / 'server.pem'}\nkeyfile {tmp_path / 'server.key'}\n"
    )
    broker = Mosquitto(tmp_path, extra=extra).start()
    try:
        tls = BrokerConfig(
            url=f"mqtts://127.0.0.1:{broker.port}", ca_certs=str(tmp_path / "ca.pem")
        )
        assert tls.tls
        inbox = Inbox()
        sub = new(clients, tls, "tls-sub").connect(timeout=5)
        sub.subscribe("secure/+", inbox)
        new(clients, tls, "tls-pub").connect(timeout=5).publish("secure/x", b"hi", qos=1)
        assert inbox.wait(1)[0].payload == b"hi"
        assert _nodelay(sub) != 0  # also on the TLS socket
        # a client that does not trust the CA never gets in, and says why at once
        untrusting = BrokerConfig(url=f"mqtts://127.0.0.1:{broker.port}")
        with pytest.raises(ConnectionError, match="TLS verification of the broker failed"):
            new(clients, untrusting, "tls-untrusting").connect(timeout=5)
    finally:
        for c in clients:
            c.close(timeout=0)
        broker.stop()


def test_qos1_published_while_broker_is_down_all_arrive(
    mosquitto: Mosquitto, clients: list[BusClient]
) -> None:
    """Publish-side queueing: nothing sent at QoS 1 is lost across a broker restart.

    The broker runs without persistence, so it forgets the subscriber's subscription.
    To make the test deterministic the publisher holds back its queued messages
    (its connection callback runs before paho flushes them) until the subscriber is
    verifiably subscribed again.
    """
    topic = topics.embedding("door")
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "sub")
    sub.subscribe(topic, inbox)
    sub.connect()

    release = threading.Event()
    changes: list[bool] = []

    def on_change(up: bool) -> None:
        changes.append(up)
        if up and len(changes) > 1:
            release.wait(10)

    pub = new(clients, cfg(mosquitto), "pub")
    pub.on_connection_change(on_change)
    pub.connect()

    for i in range(10):
        pub.publish(topic, str(i), qos=1)
    assert pub.flush(5)
    inbox.wait(10)

    mosquitto.stop()
    wait_until(lambda: not pub.connected and not sub.connected, what="both clients to notice")
    for i in range(10, 60):
        info = pub.publish(topic, str(i), qos=1)
        assert info.rc == 0  # queued, not failed
    assert pub.pending == 50
    assert not info.is_published()

    mosquitto.start()
    wait_until(lambda: sub.connected, what="subscriber reconnect")
    # the subscriber's renewed subscription is live once its own probe comes back
    deadline = time.monotonic() + 5
    while b"probe" not in inbox.payloads:
        assert time.monotonic() < deadline, "subscriber never resubscribed"
        sub.publish(topic, "probe", qos=1)
        time.sleep(0.05)
    release.set()

    expected = [str(i).encode() for i in range(60)]
    wait_until(lambda: set(expected) <= set(inbox.payloads), what="all 60 messages")
    got = [p for p in inbox.payloads if p != b"probe"]
    first_seen = list(dict.fromkeys(got))
    assert first_seen == expected  # all of them, in order (QoS 1 may duplicate)
    assert pub.flush(5) and pub.pending == 0
    info.wait_for_publish(1)
    assert info.is_published()
    assert changes[:2] == [True, False] and changes[-1] is True
    assert _nodelay(pub) != 0  # set again on the new socket


WILL_CHILD = """
import sys, time
from facewire.config.schema import BrokerConfig
from facewire.bus.client import BusClient
url, topic = sys.argv[1], sys.argv[2]
offline = '{"node": "victim", "state": "offline"}'
c = BusClient(BrokerConfig(url=url), "victim", will=(topic, offline, 1, True))
c.connect(timeout=5)
c.publish(topic, '{"node": "victim", "state": "online"}', qos=1, retain=True).wait_for_publish(5)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_on_sigkill(mosquitto: Mosquitto, clients: list[BusClient]) -> None:
    topic = topics.status("victim")
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "watcher").connect()
    sub.subscribe(topic, inbox)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", WILL_CHILD, mosquitto.url, topic],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        wait_until(lambda: any(b"online" in p for p in inbox.payloads), what="online status")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        wait_until(lambda: any(b"offline" in p for p in inbox.payloads), what="last will")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(5)
    will = [m for m in inbox.messages if b"offline" in m.payload][0]
    assert json.loads(will.payload) == {"node": "victim", "state": "offline"}
    # retained: a late subscriber sees the node offline
    late = Inbox()
    new(clients, cfg(mosquitto), "late").connect().subscribe(topic, late)
    assert json.loads(late.wait(1)[0].payload)["state"] == "offline"


def test_clean_close_sends_no_will(mosquitto: Mosquitto, clients: list[BusClient]) -> None:
    topic = topics.status("tidy")
    inbox = Inbox()
    sub = new(clients, cfg(mosquitto), "watcher").connect()
    sub.subscribe(topic, inbox)
    c = new(clients, cfg(mosquitto), "tidy", will=(topic, b"offline", 1, False))
    c.connect()
    c.publish(topic, b"online", qos=1)
    c.close()
    assert not c.connected
    # a message published after the close arrives after anything the close caused
    sub.publish(topic, b"marker", qos=1)
    inbox.wait(2)
    time.sleep(0.2)
    assert inbox.payloads == [b"online", b"marker"]
