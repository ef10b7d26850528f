"""The deployment broker, as shipped, with what ``facewire nodes`` / ``certs`` make: who
may connect, publish and read what; TLS (issue 12, items 1 and 2).

Each test runs a real mosquitto with the repository's deployment config (paths and port
rewritten) and real clients over TLS. Nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from facewire import nodes_cli
from facewire.bus import accounts, topics
from facewire.bus.client import BusClient
from facewire.bus.transport import Message
from facewire.devtools.broker import Mosquitto
from tests.secrets_rig import ROOT, Deployment, run_cli, start_deployment

SETTLE = 0.5  # what was not delivered in this long after the PUBACK is not coming


@pytest.fixture(scope="module", params=["single", "compose"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    d = start_deployment(request.param, tmp_path_factory.mktemp(request.param))
    yield d
    d.broker.stop()


@pytest.fixture
def clients() -> Iterator[list[BusClient]]:
    made: list[BusClient] = []
    yield made
    for c in made:
        c.close(timeout=0.5)


def inbox(client: BusClient, *filters: str) -> list[Message]:
    got: list[Message] = []
    for f in filters:
        client.subscribe(f, got.append, qos=1)
    return got


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def connect(d: Deployment, made: list[BusClient], user: str, **kw: object) -> BusClient:
    c = d.client(user, None, **kw)
    made.append(c)
    return c


# --- who may connect ---------------------------------------------------------------------


def test_a_node_with_its_password_connects_and_gets_its_results(deployment, clients):
    classifier = connect(deployment, clients, "classifier")
    embeddings = inbox(classifier, topics.shared(topics.EMBEDDINGS, "classifier"))
    node = connect(deployment, clients, "A")
    results = inbox(node, topics.result("A"))
    node.publish(topics.embedding("A"), b"from A", qos=1).wait_for_publish(5)
    assert wait_for(lambda: [m.payload for m in embeddings] == [b"from A"])
    classifier.publish(topics.result("A"), b"result for A", qos=1).wait_for_publish(5)
    assert wait_for(lambda: [m.payload for m in results] == [b"result for A"])


def test_a_wrong_password_is_refused(deployment):
    with pytest.raises(ConnectionError, match="refused 'test-A': Not authorized"):
        deployment.client("A", "not-the-password")


def test_an_anonymous_client_is_refused(deployment):
    with pytest.raises(ConnectionError, match="Not authorized"):
        deployment.client(None)


def test_a_service_password_is_not_a_node_password(deployment):
    with pytest.raises(ConnectionError, match="Not authorized"):
        deployment.client("A", deployment.passwords["classifier"])


# --- what a node may do -------------------------------------------------------------------


def test_node_a_cannot_speak_for_node_b(deployment, clients):
    classifier = connect(deployment, clients, "classifier")
    embeddings = inbox(classifier, topics.shared(topics.EMBEDDINGS, "classifier"))
    monitor = connect(deployment, clients, "monitor")
    seen = inbox(monitor, topics.RESULTS, topics.STATUSES)
    b = connect(deployment, clients, "B")
    b_results = inbox(b, topics.result("B"))
    a = connect(deployment, clients, "A")
    # A forges B's embedding and status, and results for both
    for topic in (
        topics.embedding("B"),
        topics.status("B"),
        topics.result("B"),
        topics.result("A"),
    ):
        a.publish(topic, b"forged by A", qos=1).wait_for_publish(5)
    a.publish(topics.embedding("A"), b"A's own", qos=1).wait_for_publish(5)
    b.publish(topics.embedding("B"), b"B's own", qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(embeddings) == 2)
    time.sleep(SETTLE)
    assert sorted((m.topic, m.payload) for m in embeddings) == [
        ("faces/A/embedding", b"A's own"),
        ("faces/B/embedding", b"B's own"),
    ]
    assert b_results == [] and seen == []
    classifier.publish(topics.result("B"), b"B's result", qos=1).wait_for_publish(5)
    assert wait_for(lambda: [m.payload for m in b_results] == [b"B's result"])


def test_node_a_cannot_read_b_or_anyones_embeddings(deployment, clients):
    a = connect(deployment, clients, "A")
    got = inbox(
        a,
        topics.EMBEDDINGS,
        topics.result("B"),
        topics.error("B"),
        topics.event("B"),
        topics.STATUSES,
        f"{topics.PREFIX}/#",
        "#",
    )
    b = connect(deployment, clients, "B")
    classifier = connect(deployment, clients, "classifier")
    b.publish(topics.embedding("B"), b"B's template", qos=1).wait_for_publish(5)
    b.publish(topics.status("B"), b"B's status", qos=1).wait_for_publish(5)
    for topic in (topics.result("B"), topics.error("B"), topics.event("B")):
        classifier.publish(topic, b"for B", qos=1).wait_for_publish(5)
    classifier.publish(topics.result("A"), b"for A", qos=1).wait_for_publish(5)
    classifier.publish(topics.CLASSIFIER_STATUS, b"classifier", qos=1).wait_for_publish(5)
    # what A may read does arrive, through the same wide filters: nothing else does
    assert wait_for(lambda: len(got) >= 2)
    time.sleep(SETTLE)
    assert sorted({(m.topic, m.payload) for m in got}) == [
        ("faces/A/result", b"for A"),
        ("faces/classifier/status", b"classifier"),
    ]


def test_the_monitor_cannot_publish_as_the_classifier_or_a_node(deployment, clients):
    a = connect(deployment, clients, "A")
    a_results = inbox(a, topics.result("A"))
    classifier = connect(deployment, clients, "classifier")
    embeddings = inbox(classifier, topics.shared(topics.EMBEDDINGS, "classifier"))
    monitor = connect(deployment, clients, "monitor")
    results = inbox(monitor, topics.RESULTS)
    for topic in (
        topics.result("A"),
        topics.CLASSIFIER_STATUS,
        topics.embedding("A"),
        f"{topics.PREFIX}/monitor/embedding",
    ):
        monitor.publish(topic, b"forged by the monitor", qos=1).wait_for_publish(5)
    time.sleep(SETTLE)
    assert a_results == [] and embeddings == [] and results == []
    classifier.publish(topics.result("A"), b"real", qos=1).wait_for_publish(5)
    assert wait_for(lambda: [m.payload for m in results] == [b"real"])  # it does read them


def test_nobody_takes_over_the_classifiers_connection_by_its_client_id(deployment, clients):
    classifier = connect(deployment, clients, "classifier")
    for _ in range(3):
        intruder = BusClient(deployment.settings("A"), classifier.client_id)
        intruder.connect(timeout=5)
        intruder.close(timeout=0.5)
    time.sleep(SETTLE)
    assert classifier.connected


def test_added_node_works_after_reload_and_removed_one_is_cut_off(deployment, clients):
    pid = str(deployment.broker.pid)
    deployment.add_node("late", reload=True)
    late = connect(deployment, clients, "late")
    assert late.connected
    status, _, err = run_cli(
        nodes_cli.main, "--dir", str(deployment.secrets), "--broker-pid", pid, "remove", "late"
    )
    assert status == 0 and "told to reload" in err
    assert wait_for(lambda: not late.connected), "the removed node kept its connection"
    with pytest.raises(ConnectionError, match="Not authorized"):
        deployment.client("late")


def test_an_enrolling_node_may_enrol_and_others_may_not(deployment, clients):
    deployment.add_node("kiosk", "--enroll", reload=True)
    classifier = connect(deployment, clients, "classifier")
    requests = inbox(classifier, topics.ENROLL)
    kiosk = connect(deployment, clients, "kiosk")
    a = connect(deployment, clients, "A")
    a.publish(topics.ENROLL, b"from A", qos=1).wait_for_publish(5)
    kiosk.publish(topics.ENROLL, b"from kiosk", qos=1).wait_for_publish(5)
    assert wait_for(lambda: len(requests) == 1)
    time.sleep(SETTLE)
    assert [m.payload for m in requests] == [b"from kiosk"]


def test_the_password_file_is_mosquittos_own_format(deployment):
    entries = accounts.read_passwords(deployment.secrets / "broker" / "passwd")
    assert set(entries) >= {"A", "B", "classifier", "monitor", "gallery"}
    for user, hashed in entries.items():
        assert hashed.startswith("$7$101$"), user
        assert (
            deployment.passwords[user] not in (deployment.secrets / "broker" / "passwd").read_text()
        )
        assert accounts.check_password(deployment.passwords[user], hashed)


# --- TLS ----------------------------------------------------------------------------------


def test_a_plain_text_client_is_refused_on_the_tls_port(deployment):
    cfg = deployment.settings("A")
    cfg.apply_url(f"mqtt://127.0.0.1:{deployment.broker.port}")
    with pytest.raises(TimeoutError, match="closed each connection before answering"):
        BusClient(cfg, "plain").connect(timeout=3)


def test_a_client_without_the_lab_ca_is_refused_with_a_tls_message(deployment):
    # the system's CAs do not know the lab CA
    with pytest.raises(
        ConnectionError,
        match="TLS verification of the broker failed: (self-signed"
        "|unable to get local issuer).*checked against the system's CA",
    ):
        deployment.client("A", ca_certs="")


def test_tls_verification_is_off_only_when_the_config_says_so(deployment, clients):
    c = connect(deployment, clients, "A", ca_certs="", tls_verify=False)
    assert c.connected


def test_a_missing_ca_file_is_a_clear_error(deployment, tmp_path):
    with pytest.raises(FileNotFoundError, match="broker.ca_certs: no such file"):
        deployment.client("A", ca_certs=str(tmp_path / "nope.crt"))


def test_tls_to_a_plain_port_says_so(deployment, tmp_path):
    with Mosquitto(tmp_path) as plain:
        cfg = deployment.settings("A")
        cfg.port = plain.port
        with pytest.raises(TimeoutError, match="during the TLS handshake: is that port TLS"):
            BusClient(cfg, "tls-to-plain").connect(timeout=3)


# --- the edge's exit status ---------------------------------------------------------------


def test_the_edge_exits_non_zero_when_the_broker_refuses_its_password(deployment, tmp_path):
    config = yaml.safe_load((deployment.secrets / "A.yaml").read_text())
    config["broker"].update(
        url=f"mqtts://127.0.0.1:{deployment.broker.port}",
        password="wrong",
        ca_certs=str(deployment.ca),
    )
    # the node's keys where this machine keeps them (the printed config names the node's)
    config["sealing"]["keys"] = str(deployment.secrets / "keys")
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "facewire",
            "edge",
            "--config",
            str(path),
            "--source",
            str(ROOT / "dataset" / "gallery" / "ORL_s01"),
            "--frames",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FACEWIRE_LOG": "WARNING"},
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "would not let node 'A' in: Not authorized" in proc.stderr
