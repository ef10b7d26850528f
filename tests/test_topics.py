"""Topic names and node-id rules (bus/topics.py)."""

from __future__ import annotations

import doctest

import pytest
from paho.mqtt.client import topic_matches_sub

from facewire.bus import topics
from facewire.bus.errors import WireError


def test_per_node_topics() -> None:
    assert topics.embedding("door") == "faces/door/embedding"
    assert topics.result("door") == "faces/door/result"
    assert topics.status("door") == "faces/door/status"
    assert topics.error("door") == "faces/door/error"


def test_constants_and_filters() -> None:
    assert topics.CLASSIFIER_STATUS == "faces/classifier/status"
    assert topics.THRESHOLDS == "faces/stats/thresholds"
    assert topics.EMBEDDINGS == "faces/+/embedding"
    assert topics.RESULTS == "faces/+/result"
    assert topics.STATUSES == "faces/+/status"
    assert topics.ERRORS == "faces/+/error"
    for make, filt in [
        (topics.embedding, topics.EMBEDDINGS),
        (topics.result, topics.RESULTS),
        (topics.status, topics.STATUSES),
        (topics.error, topics.ERRORS),
    ]:
        assert topic_matches_sub(filt, make("n1"))
    assert not topic_matches_sub(topics.EMBEDDINGS, topics.result("n1"))


def test_node_of_and_kind_of() -> None:
    assert topics.node_of("faces/door/embedding") == "door"
    assert topics.kind_of("faces/door/embedding") == "embedding"
    assert topics.node_of(topics.CLASSIFIER_STATUS) == "classifier"
    for bad in ["faces/door", "faces//status", "other/door/status", "faces/a/b/c", ""]:
        with pytest.raises(ValueError):
            topics.node_of(bad)


def test_classifier_status_matches_statuses_but_is_not_a_node() -> None:
    assert topic_matches_sub(topics.STATUSES, topics.CLASSIFIER_STATUS)
    assert not topics.is_node_topic(topics.CLASSIFIER_STATUS)
    assert not topics.is_node_topic(topics.THRESHOLDS)
    assert not topics.is_node_topic("nonsense")
    assert topics.is_node_topic(topics.status("door"))


def test_shared() -> None:
    assert topics.shared(topics.EMBEDDINGS, "classifier") == "$share/classifier/faces/+/embedding"
    assert topics.shared(topics.EMBEDDINGS, "") == topics.EMBEDDINGS
    assert topics.unshared("$share/classifier/faces/+/embedding") == topics.EMBEDDINGS
    assert topics.unshared(topics.EMBEDDINGS) == topics.EMBEDDINGS
    with pytest.raises(ValueError):
        topics.shared(topics.EMBEDDINGS, "a/b")


@pytest.mark.parametrize("node", ["door", "edge-1", "cam_2.hall", "Küche", "x" * 64, "ü" * 32])
def test_valid_node_ids(node: str) -> None:
    assert topics.check_node_id(node) == node


@pytest.mark.parametrize(
    "node",
    [
        "",
        "a/b",
        "a+b",
        "a#",
        "$sys",
        "a b",
        "tab\there",
        "nl\n",
        "nul\x00",
        "x" * 65,
        "ü" * 33,  # 66 bytes of UTF-8: the limit is in bytes, as in the embedding message
        "classifier",
        "stats",
        "gallery",
    ],
)
def test_invalid_node_ids(node: str) -> None:
    with pytest.raises(WireError) as info:
        topics.check_node_id(node)
    assert info.value.reason == "bad_topic"
    with pytest.raises(ValueError):
        topics.embedding(node)
    with pytest.raises(WireError):
        topics.parse(f"faces/{node}/embedding", "embedding")


@pytest.mark.parametrize(
    "topic",
    ["faces//embedding", "faces/door/result", "faces/a/b/embedding", "other/door/embedding", ""],
)
def test_parse_refuses_other_topics(topic: str) -> None:
    with pytest.raises(WireError) as info:
        topics.parse(topic, "embedding")
    assert info.value.reason == "bad_topic"


def test_doctests() -> None:
    assert doctest.testmod(topics).failed == 0
