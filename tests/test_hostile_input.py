"""Property tests: whatever bytes, JSON or topic arrives, every decoder either returns a
valid message or raises :class:`WireError` with a known reason — never anything else."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from facewire.bus import codec, messages, topics
from facewire.bus.errors import REASONS, WireError
from facewire.bus.sealing import Opener, ResultSigner, ResultVerifier, Sealer
from tests.test_protocol import examples

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_TYPES = [
    getattr(messages, name)
    for name in messages.__all__
    if isinstance(getattr(messages, name), type)
    and issubclass(getattr(messages, name), messages.JsonMessage)
    and name != "JsonMessage"
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)


def refused_with_a_known_reason(call, *args) -> object:
    try:
        return call(*args)
    except WireError as exc:
        assert exc.reason in REASONS, exc.reason
        return None


def a_message(**over) -> codec.EmbeddingMessage:
    fields = dict(
        node="door",
        seq=1,
        frame_id=2,
        face_index=0,
        bbox=(1, 2, 30, 40),
        model_id="sface-1234abcd",
        captured_at=time.time(),
        stages={"detect": 1.5},
        quality=(1200.0, 80.0, 120.0),
        vector=np.full(8, 1 / math.sqrt(8), np.float32),
    )
    fields.update(over)
    return codec.EmbeddingMessage(**fields)


@QUICK
@given(st.binary(max_size=4096))
def test_any_bytes_are_an_embedding_or_a_reason(payload):
    msg = refused_with_a_known_reason(codec.decode, payload)
    if msg is not None:
        assert np.isfinite(msg.vector).all()


@QUICK
@given(st.data())
def test_damaged_real_messages_are_refused_with_a_reason(data):
    good = codec.encode(a_message())
    cut = data.draw(st.integers(0, len(good)))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)), max_size=4)
    )
    damaged = bytearray(good[:cut] + good[cut:])
    for at, xor in flips:
        damaged[at] ^= xor
    refused_with_a_known_reason(
        codec.decode, bytes(damaged[: data.draw(st.integers(0, len(damaged)))])
    )


@QUICK
@given(
    st.text(min_size=1, max_size=64),
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=64),
)
def test_valid_messages_round_trip(node, seq, values):
    try:
        topics.check_node_id(node)
    except WireError:
        return
    vector = np.asarray(values, np.float32)
    msg = a_message(node=node, seq=seq, vector=vector)
    back = codec.decode(codec.encode(msg, dtype="float32"))
    assert (back.node, back.seq) == (node, seq)
    np.testing.assert_array_equal(back.vector, vector)


@QUICK
@given(json_values, st.sampled_from(JSON_TYPES))
def test_any_json_is_a_message_or_a_reason(value, kind):
    try:
        text = json.dumps(value)
    except ValueError:
        return
    refused_with_a_known_reason(kind.decode, text)
    refused_with_a_known_reason(kind.decode, text.encode()[: len(text) // 2])


@QUICK
@given(st.binary(max_size=600), st.sampled_from(JSON_TYPES))
def test_any_bytes_as_json_are_a_message_or_a_reason(payload, kind):
    refused_with_a_known_reason(kind.decode, payload)


@QUICK
@given(st.text(max_size=300))
def test_any_topic_is_a_node_or_bad_topic(topic):
    node = refused_with_a_known_reason(topics.parse, topic)
    if node is not None:
        assert len(str(node).encode()) <= 64 and "/" not in str(node)


@pytest.fixture(scope="module")
def opener_and_sealer():
    node, box = SigningKey.generate(), PrivateKey.generate()
    return Opener(box, {"door": node.verify_key}), Sealer(node, box.public_key)


@QUICK
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_sealed_message_or_a_reason(opener_and_sealer, payload):
    opener, sealer = opener_and_sealer
    refused_with_a_known_reason(opener.open, "door", payload)
    # and the same bytes sealed by the node: the box opens, the codec judges
    refused_with_a_known_reason(opener.open, "door", sealer.seal(payload))


@QUICK
@given(st.binary(max_size=600))
def test_any_bytes_are_a_signed_result_or_a_reason(payload):
    verifier = ResultVerifier(ResultSigner(SigningKey.generate()).verify_key)
    assert refused_with_a_known_reason(verifier.verify, payload) is None


def test_oversized_json_and_long_keys_are_refused_before_they_cost_memory():
    (text,) = [t for k, t in examples() if k == "Result"]
    ok = json.loads(text)
    huge = json.dumps(ok | {"pad": "x" * (1 << 20)})
    with pytest.raises(WireError, match="bad_json.*at most"):
        messages.Result.decode(huge)
    long_key = json.dumps(ok | {"timings": {"k" * 65: 1.0}})
    with pytest.raises(WireError, match="over 64 bytes"):
        messages.Result.decode(long_key)
    messages.Result.decode(json.dumps(ok | {"timings": {"k" * 64: 1.0}}))
