"""``facewire nodes``: accounts, ACL, keys and the printed edge config (issue 12, item 1).

Files only; that the broker accepts them is tests/test_broker_auth.py's part.
"""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from facewire import nodes_cli
from facewire.bus import accounts
from facewire.bus.keys import KeyFileError, KeyRing
from facewire.config import load as load_config
from facewire.config.schema import EdgeConfig
from tests.secrets_rig import run_cli


def nodes(d, *argv):
    return run_cli(nodes_cli.main, "--dir", str(d), *argv)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_add_makes_account_acl_keys_and_a_loadable_edge_config(tmp_path):
    status, out, err = nodes(tmp_path, "--broker", "mqtts://broker.lan:8883", "add", "door")
    assert status == 0, err
    edge_yaml = out[out.index("# edge config of node door") :]
    path = tmp_path / "edge.yaml"
    path.write_text(edge_yaml)
    cfg = load_config(EdgeConfig, path)
    assert (cfg.node, cfg.broker.username, cfg.broker.tls, cfg.broker.port) == (
        "door",
        "door",
        True,
        8883,
    )
    password = yaml.safe_load(edge_yaml)["broker"]["password"]
    entries = accounts.read_passwords(tmp_path / "broker" / "passwd")
    assert set(entries) == {"door", "classifier", "monitor", "gallery"}
    assert accounts.check_password(password, entries["door"])
    # printed once, stored nowhere in clear
    for f in tmp_path.rglob("*"):
        if f.is_file() and f != path:
            assert password.encode() not in f.read_bytes(), f
    for f in (
        "broker/passwd",
        "broker/acl",
        "keys/classifier.box",
        "keys/classifier.sign",
        "keys/nodes/door.sign",
    ):
        assert mode(tmp_path / f) == 0o600, f
    assert mode(tmp_path) == 0o700
    ring = KeyRing(tmp_path / "keys")
    assert ring.node_verify_keys() == {"door": ring.node_signing_key("door").verify_key}
    assert ring.classifier_box_private().public_key == ring.classifier_box_public()
    assert ring.classifier_signing_key().verify_key == ring.classifier_verify_key()
    # the broker's reload: unknown pid, so the command is printed
    assert "kill -HUP" in err


def test_the_classifier_keys_are_made_once(tmp_path):
    nodes(tmp_path, "add", "a")
    box = (tmp_path / "keys" / "classifier.box").read_bytes()
    status, out, _ = nodes(tmp_path, "add", "b")
    assert status == 0 and "service account" not in out  # their passwords only once
    assert (tmp_path / "keys" / "classifier.box").read_bytes() == box


@pytest.mark.parametrize(
    ("node", "why"),
    [
        ("a/b", "must not contain any of"),
        ("a b", "whitespace"),
        ("classifier", "reserved"),
        ("monitor", "the monitor service's account"),
        ("x" * 200, "at most 64"),
        ("a:b", "':'"),
        ("", "non-empty"),
    ],
)
def test_bad_node_ids_are_refused_with_a_reason(tmp_path, node, why):
    status, out, err = nodes(tmp_path, "add", node)
    assert status == 2 and why in err and out == ""
    assert not (tmp_path / "broker" / "passwd").exists()


def test_list_remove_and_errors(tmp_path):
    nodes(tmp_path, "add", "door")
    nodes(tmp_path, "add", "kiosk", "--enroll")
    status, out, _ = nodes(tmp_path, "list")
    assert "door\tnode\tkey\n" in out and "kiosk\tnode\tkey\tenroll" in out
    assert "classifier\tservice" in out
    status, _, err = nodes(tmp_path, "add", "door")
    assert status == 2 and "exists" in err
    status, _, err = nodes(tmp_path, "remove", "kiosk")
    assert status == 0
    assert "kiosk" not in accounts.read_passwords(tmp_path / "broker" / "passwd")
    assert "kiosk" not in (tmp_path / "broker" / "acl").read_text()
    assert not KeyRing(tmp_path / "keys").node_sign_path("kiosk").exists()
    status, _, err = nodes(tmp_path, "remove", "kiosk")
    assert status == 2 and "no node 'kiosk'" in err


def test_passwd_replaces_a_password(tmp_path):
    nodes(tmp_path, "add", "door")
    old = accounts.read_passwords(tmp_path / "broker" / "passwd")["door"]
    status, out, _ = nodes(tmp_path, "passwd", "door")
    new = yaml.safe_load(out)["broker"]["password"]
    hashed = accounts.read_passwords(tmp_path / "broker" / "passwd")["door"]
    assert status == 0 and hashed != old and accounts.check_password(new, hashed)


def test_the_reload_signals_only_mosquitto(tmp_path):
    status, _, err = nodes(tmp_path, "--broker-pid", str(os.getpid()), "add", "door")
    assert status == 0 and "is not mosquitto" in err and "not signalled" in err
    status, _, err = nodes(tmp_path, "--pid-file", str(tmp_path / "none.pid"), "add", "hall")
    assert status == 0 and "no pid file" in err


def test_the_acl_gives_nodes_their_own_topics_only():
    acl = accounts.render_acl(["kiosk"])
    assert "pattern write faces/%u/embedding" in acl and "pattern read faces/%u/result" in acl
    assert "pattern write faces/+/" not in acl and "pattern read faces/+/" not in acl
    assert acl.index("user kiosk") > acl.index("user gallery")


def test_a_private_key_others_can_read_is_refused(tmp_path):
    ring = KeyRing(tmp_path)
    ring.make_node("door")
    os.chmod(ring.node_sign_path("door"), 0o644)
    with pytest.raises(KeyFileError, match="readable by others"):
        ring.node_signing_key("door")
    with pytest.raises(KeyFileError, match="no such key file"):
        ring.node_signing_key("hall")
    ring.node_sign_path("door").write_text("not base64!\n")
    os.chmod(ring.node_sign_path("door"), 0o600)
    with pytest.raises(KeyFileError, match="not a base64 SigningKey"):
        ring.node_signing_key("door")


def test_hash_matches_mosquittos_format():
    hashed = accounts.hash_password("pw", salt=bytes(12))
    # mosquitto_passwd's layout: $7$<iterations>$<16 chars of salt>$<88 chars of hash>
    _, seven, iterations, salt, digest = hashed.split("$")
    assert (seven, iterations, len(salt), len(digest)) == ("7", "101", 16, 88)
    with pytest.raises(accounts.AccountError):
        accounts.check_password("pw", "plain")
