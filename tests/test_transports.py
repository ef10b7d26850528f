"""The in-memory transport behaves as the MQTT one on a real mosquitto: the same
scenarios, run on both, deliver the same messages (topic wildcards, shared
subscriptions, retained messages, last wills)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from facewire.bus.client import BusClient
from facewire.bus.memory import MemoryBroker, topic_matches
from facewire.bus.transport import Message, Transport
from facewire.config.schema import BrokerConfig
from tests.broker import Mosquitto

Factory = Callable[[str], Transport]


@pytest.fixture(params=["memory", pytest.param("mosquitto", marks=pytest.mark.slow)])
def make(request: pytest.FixtureRequest, tmp_path) -> Iterator[Factory]:
    made: list[Transport] = []
    if request.param == "memory":
        broker = MemoryBroker()

        def factory(client_id: str) -> Transport:
            made.append(broker.transport(client_id))
            return made[-1]

        yield factory
    else:
        mosquitto = Mosquitto(tmp_path).start()

        def factory(client_id: str) -> Transport:
            made.append(BusClient(BrokerConfig(url=mosquitto.url), client_id))
            return made[-1]

        yield factory
        mosquitto.stop()
    for t in made:
        t.close()


def collect(t: Transport, topic_filter: str) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    t.subscribe(topic_filter, lambda m: got.append((m.topic, m.payload)))
    return got


def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_wildcards(make: Factory) -> None:
    sub = make("sub")
    plus = collect(sub, "faces/+/result")
    hash_ = collect(sub, "faces/#")
    sub.connect()
    pub = make("pub")
    pub.connect()
    for topic in ("faces/door/result", "faces/door/status", "other/door/result", "faces"):
        pub.publish(topic, topic.encode(), qos=1)
    assert eventually(lambda: len(hash_) >= 3), (plus, hash_)
    assert plus == [("faces/door/result", b"faces/door/result")]
    assert [t for t, _ in hash_] == ["faces/door/result", "faces/door/status", "faces"]


def test_retained_messages_reach_late_subscribers_and_empty_clears(make: Factory) -> None:
    pub = make("pub")
    pub.connect()
    pub.publish("faces/door/status", b"online", qos=1, retain=True)
    pub.publish("faces/hall/status", b"online", qos=1, retain=True)
    pub.publish("faces/hall/status", b"", qos=1, retain=True)  # cleared
    assert pub.flush(5)
    sub = make("sub")
    got = collect(sub, "faces/+/status")
    sub.connect()
    assert eventually(lambda: len(got) == 1)
    time.sleep(0.1)
    assert got == [("faces/door/status", b"online")]


def test_shared_subscription_hands_each_message_to_one_member(make: Factory) -> None:
    a, b = make("a"), make("b")
    got_a, got_b = (
        collect(a, "$share/g/faces/+/embedding"),
        collect(b, "$share/g/faces/+/embedding"),
    )
    a.connect()
    b.connect()
    pub = make("pub")
    pub.connect()
    for i in range(40):
        pub.publish("faces/cam/embedding", str(i).encode(), qos=1)
    assert eventually(lambda: len(got_a) + len(got_b) == 40)
    time.sleep(0.1)
    assert sorted(int(p) for _, p in got_a + got_b) == list(range(40))  # each exactly once
    assert got_a and got_b


def test_handlers_run_in_order_on_one_thread(make: Factory) -> None:
    import threading

    sub = make("sub")
    seen: list[tuple[int, int]] = []

    def handler(m: Message) -> None:
        seen.append((int(m.payload), threading.get_ident()))

    sub.subscribe("t/#", handler)
    sub.connect()
    pub = make("pub")
    pub.connect()
    for i in range(200):
        pub.publish("t/x", str(i).encode(), qos=1)
    assert eventually(lambda: len(seen) == 200)
    assert [i for i, _ in seen] == list(range(200))
    assert len({thread for _, thread in seen}) == 1


def test_memory_broker_publishes_the_last_will_of_a_killed_client() -> None:
    broker = MemoryBroker()
    watcher = broker.transport("watcher")
    got = collect(watcher, "faces/+/status")
    watcher.connect()
    edge = broker.transport("edge-door")
    edge.set_will("faces/door/status", b"offline", 1, True)
    edge.connect()
    broker.kill(edge)
    assert broker.settle()
    assert got == [("faces/door/status", b"offline")]
    assert broker.retained("faces/door/status") == b"offline"
    # a clean close does not fire the will
    other = broker.transport("edge-hall")
    other.set_will("faces/hall/status", b"offline", 1, True)
    other.connect()
    other.close()
    assert broker.settle() and broker.retained("faces/hall/status") is None


def test_memory_transport_keeps_qos1_while_disconnected() -> None:
    broker = MemoryBroker()
    sub = broker.transport("sub")
    got = collect(sub, "a")
    sub.connect()
    pub = broker.transport("pub")
    pub.publish("a", b"1", qos=1)  # not connected yet: held
    pub.publish("a", b"0", qos=0)  # dropped, as MQTT does
    assert pub.pending == 1
    pub.connect()
    assert broker.settle()
    assert got == [("a", b"1")] and pub.pending == 0


@pytest.mark.parametrize(
    ("flt", "topic", "match"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+", "a", True),
        ("+", "a/b", False),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/+", "a/", True),
    ],
)
def test_topic_matching_agrees_with_paho(flt: str, topic: str, match: bool) -> None:
    import paho.mqtt.client as mqtt

    assert topic_matches(flt, topic) is match
    assert mqtt.topic_matches_sub(flt, topic) is match
