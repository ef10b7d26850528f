"""Sealed embeddings and signed results (``bus.sealing``): what opens, what is refused."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from facewire.bus import codec
from facewire.bus.errors import WireError
from facewire.bus.sealing import (
    MAX_REMEMBERED,
    Opener,
    ResultSigner,
    ResultVerifier,
    Sealer,
    is_sealed,
)


def message(node: str = "door", seq: int = 1, captured_at: float | None = None) -> bytes:
    return codec.encode(
        codec.EmbeddingMessage(
            node=node,
            seq=seq,
            frame_id=seq,
            face_index=0,
            bbox=(10, 20, 80, 80),
            model_id="sface-1234abcd",
            captured_at=time.time() if captured_at is None else captured_at,
            stages={"detect": 1.0},
            quality=(6400.0, 150.0, 120.0),
            vector=np.full(128, 1 / np.sqrt(128), np.float32),
        )
    )


@pytest.fixture
def keys():
    door, porch, box = SigningKey.generate(), SigningKey.generate(), PrivateKey.generate()
    opener = Opener(box, {"door": door.verify_key, "porch": porch.verify_key}, window_s=30)
    return door, porch, box, opener


def refused(opener: Opener, node: str, payload: bytes, **kw) -> str:
    with pytest.raises(WireError) as err:
        opener.open(node, payload, **kw)
    return err.value.reason


def test_a_sealed_message_opens_only_at_the_classifier_and_hides_the_vector(keys):
    door, _, box, opener = keys
    plain = message()
    sealed = Sealer(door, box.public_key).seal(plain)
    assert is_sealed(sealed) and not is_sealed(plain)
    # the vector's bytes appear nowhere in what the broker sees
    assert plain[-64:] not in sealed
    msg, first_seen = opener.open("door", sealed)
    assert msg == codec.decode(plain) and first_seen is None
    # sealing the same message twice gives different bytes (a random nonce)
    assert Sealer(door, box.public_key).seal(plain) != sealed


def test_forged_damaged_and_misaddressed_messages_are_refused(keys):
    door, porch, box, opener = keys
    sealed = Sealer(door, box.public_key).seal(message())
    assert refused(opener, "door", message()) == "unsealed"
    assert refused(opener, "garden", sealed) == "unknown_node"
    flipped = bytearray(sealed)
    flipped[-5] ^= 1
    assert refused(opener, "door", bytes(flipped)) == "bad_seal"
    assert refused(opener, "door", sealed[:30]) == "bad_seal"
    # porch's key on door's topic: porch cannot speak for door
    assert refused(opener, "door", Sealer(porch, box.public_key).seal(message())) == "bad_seal"
    # porch's own box naming door inside
    assert refused(opener, "porch", Sealer(porch, box.public_key).seal(message())) == (
        "bad_metadata"
    )
    # sealed to another classifier
    other = PrivateKey.generate().public_key
    assert refused(opener, "door", Sealer(door, other).seal(message())) == "bad_seal"


def test_stale_and_repeated_messages(keys):
    door, _, box, opener = keys
    seal = Sealer(door, box.public_key).seal
    now = time.time()
    assert refused(opener, "door", seal(message(captured_at=now - 31)), now=now) == "stale"
    assert refused(opener, "door", seal(message(captured_at=now + 31)), now=now) == "stale"
    first = seal(message(seq=5, captured_at=now))
    assert opener.open("door", first, now=now)[1] is None
    # replayed (the same bytes) or sealed again: a repeat, with when it came first
    assert opener.open("door", first, now=now + 1)[1] == now
    assert opener.open("door", seal(message(seq=5, captured_at=now)), now=now + 1)[1] == now
    # the same seq at another capture time (an edge restarted): a new message
    assert opener.open("door", seal(message(seq=5, captured_at=now + 2)), now=now + 2)[1] is None
    # after the window the replay is stale, not new
    assert refused(opener, "door", first, now=now + 40) == "stale"


def test_the_replay_memory_is_bounded_and_what_it_forgot_is_stale(keys):
    door, _, box, opener = keys
    seal = Sealer(door, box.public_key).seal
    now = time.time()
    oldest = message(seq=0, captured_at=now - 10)
    opener.open("door", seal(oldest), now=now)
    for seq in range(1, MAX_REMEMBERED + 1):
        opener._remember("door", (seq, now - 5), now)
    assert refused(opener, "door", seal(oldest), now=now) == "stale"
    seen, order, _ = opener._seen["door"]
    assert len(seen) == len(order) == MAX_REMEMBERED


def test_node_keys_can_change_while_running(keys):
    door, porch, box, opener = keys
    opener.set_node_keys({"door": door.verify_key})
    assert opener.nodes == ["door"]
    assert refused(opener, "porch", Sealer(porch, box.public_key).seal(message("porch"))) == (
        "unknown_node"
    )


def test_any_bytes_are_refused_with_a_reason_never_a_crash(keys):
    door, _, box, opener = keys
    rng = np.random.default_rng(3)
    good = Sealer(door, box.public_key).seal(message())
    for n in range(2000):
        kind = n % 3
        if kind == 0:
            payload = rng.bytes(int(rng.integers(0, 2000)))
        elif kind == 1:
            payload = b"FS\x01" + rng.bytes(int(rng.integers(0, 1200)))
        else:
            cut = bytearray(good[: int(rng.integers(0, len(good)))])
            payload = bytes(cut)
        with pytest.raises(WireError):
            opener.open("door", payload)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65])
def test_every_result_of_a_batch_verifies_on_its_own(n):
    signer = ResultSigner(SigningKey.generate())
    texts = [json.dumps({"node": "door", "seq": i, "name": "ann"}).encode() for i in range(n)]
    signed = signer.sign(texts)
    verifier = ResultVerifier(signer.verify_key)
    for text, out in zip(texts, signed, strict=True):
        assert json.loads(out)["seq"] == json.loads(text)["seq"]  # still plain JSON
        assert verifier.verify(out) == text
    # one signature check per batch: the others climb to a root already verified
    assert len(verifier._roots) == 1


def test_forged_results_are_refused():
    signer = ResultSigner(SigningKey.generate())
    a, b = signer.sign([b'{"node":"door","name":"ann"}', b'{"node":"door","name":"bob"}'])
    verifier = ResultVerifier(signer.verify_key)
    with pytest.raises(WireError, match="unsigned"):
        verifier.verify(b'{"node":"door","name":"ann"}')
    with pytest.raises(WireError, match="bad_signature"):
        verifier.verify(a.replace(b'"ann"', b'"eve"'))
    # b's signature fields on a's text
    at = b.rfind(b',"sig":')
    with pytest.raises(WireError, match="bad_signature"):
        verifier.verify(a[: a.rfind(b',"sig":')] + b[at:])
    # signed by someone else
    (forged,) = ResultSigner(SigningKey.generate()).sign([b'{"node":"door","name":"ann"}'])
    with pytest.raises(WireError, match="bad_signature"):
        verifier.verify(forged)
    with pytest.raises(WireError, match="bad_signature"):
        verifier.verify(a[: a.rfind(b',"sig":')] + b',"sig":{"s":"x"}}')
