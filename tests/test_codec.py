"""The binary embedding message (bus/codec.py) and its documentation (docs/protocol.md)."""

from __future__ import annotations

import doctest
import json
import random
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facewire.bus import codec
from facewire.bus.codec import EmbeddingMessage, decode, encode
from facewire.bus.errors import WireError

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# Offsets of the test vector / any message with node "door" and model "sface-1a2b3c4d"
HEADER = 8
NODE_AT = 46  # first byte of the node string
STAGES_AT = 65  # stage count


def make_msg(dim: int = 512, seed: int = 0, **kw: Any) -> EmbeddingMessage:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal(dim).astype(np.float32)
    vec /= np.linalg.norm(vec)
    fields: dict[str, Any] = dict(
        node="door",
        seq=4_000_000_000,
        frame_id=123_456,
        face_index=3,
        bbox=(-5, 470, 96, 112),
        model_id="sface-1a2b3c4d",
        captured_at=1_700_000_000.123456,
        stages={"detect": 4.5, "mesh": 6.25, "align": 0.375, "embed": 12.0, "encode": 0.015625},
        quality=(9216.0, 150.5, 128.25),
        vector=vec,
    )
    fields.update(kw)
    return EmbeddingMessage(**fields)


def code_of(payload: bytes) -> str:
    with pytest.raises(WireError) as info:
        decode(payload)
    assert info.value.reason in codec.CHECKS
    return info.value.reason


# -- round trips ---------------------------------------------------------------------


def test_round_trip_float32_is_exact() -> None:
    msg = make_msg()
    payload = encode(msg, dtype="float32")
    assert len(payload) == HEADER + 37 + 1 + 4 + 1 + 14 + 1 + 5 * 5 + 4 + 5 + 5 + 6 + 6 + 512 * 4
    out = decode(payload)
    assert out == msg
    assert out.vector.dtype == np.float32 and out.vector.shape == (512,)
    assert out.dim == 512
    assert out.vector.flags.writeable
    # every metadata field, explicitly
    assert (out.node, out.seq, out.frame_id, out.face_index) == ("door", 4_000_000_000, 123_456, 3)
    assert out.bbox == (-5, 470, 96, 112)
    assert out.model_id == "sface-1a2b3c4d"
    assert out.captured_at == 1_700_000_000.123456  # float64 on the wire: exact
    assert out.stages == msg.stages and list(out.stages) == list(msg.stages)  # order kept
    assert out.quality == (9216.0, 150.5, 128.25)


def test_round_trip_float16() -> None:
    msg = make_msg(seed=1)
    payload = encode(msg)  # float16 is the default
    assert payload[3] == 1
    assert len(payload) == len(encode(msg, dtype="float32")) - 512 * 2
    out = decode(payload)
    assert out.vector.dtype == np.float32
    np.testing.assert_array_equal(out.vector, msg.vector.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(out.vector, msg.vector, atol=1e-3)
    exact = make_msg(seed=1, vector=out.vector)
    assert decode(encode(exact)) == exact


def test_round_trip_edge_values() -> None:
    msg = make_msg(
        dim=1,
        node="Küche-1",  # utf-8, more bytes than characters
        seq=0,
        frame_id=2**32 - 1,
        face_index=255,
        bbox=(-32768, 32767, 0, 65535),
        model_id="m" * 64,
        stages={},
        quality=(0.0, 0.0, 255.0),
        vector=np.array([1.0]),  # float64 input is fine
    )
    assert decode(encode(msg)) == msg
    big = make_msg(dim=codec.MAX_DIM, stages={f"s{i}": float(i) for i in range(codec.MAX_STAGES)})
    assert decode(encode(big, "float32")) == big


def test_float32_values_survive_as_float32() -> None:
    stages = {"detect": 1.1}  # not representable in float32: comes back rounded
    out = decode(encode(make_msg(stages=stages)))
    assert out.stages["detect"] == pytest.approx(1.1, rel=1e-6)
    assert out.stages["detect"] == float(np.float32(1.1))


def test_unknown_trailing_metadata_is_skipped() -> None:
    """Bytes after the stages inside the metadata block are a compatible extension."""
    msg = make_msg(dim=4)
    payload = encode(msg, "float32")
    dim, meta_len = struct.unpack_from("<HH", payload, 4)
    vec_at = HEADER + meta_len
    extended = (
        payload[:6]
        + struct.pack("<H", meta_len + 3)
        + payload[HEADER:vec_at]
        + b"\x01\x02\x03"
        + payload[vec_at:]
    )
    assert decode(extended) == msg


# -- rejections ----------------------------------------------------------------------


def test_truncated_at_every_point_before_the_vector() -> None:
    payload = encode(make_msg(dim=8))
    meta_end = HEADER + struct.unpack_from("<H", payload, 6)[0]
    for cut in range(meta_end):
        assert code_of(payload[:cut]) == "truncated", cut


def test_truncated_or_padded_vector_is_bad_dim() -> None:
    payload = encode(make_msg(dim=8))
    for cut in (1, 2, 15):
        assert code_of(payload[:-cut]) == "bad_dim"
    assert code_of(payload + b"\x00\x00") == "bad_dim"
    assert code_of(payload + b"\x00") == "bad_dim"


def test_bad_magic_version_dtype() -> None:
    payload = encode(make_msg(dim=8))
    assert code_of(b"XW" + payload[2:]) == "bad_magic"
    assert code_of(b"fw" + payload[2:]) == "bad_magic"
    for version in (0, 2, 255):
        assert code_of(payload[:2] + bytes([version]) + payload[3:]) == "bad_version"
    for dtype in (0, 3, 255):
        assert code_of(payload[:3] + bytes([dtype]) + payload[4:]) == "bad_dtype"


def test_bad_dim_in_header() -> None:
    payload = encode(make_msg(dim=8))
    for dim in (0, 4097, 65535):
        assert code_of(payload[:4] + struct.pack("<H", dim) + payload[6:]) == "bad_dim"
    # the header says 9 (or 7) values, the payload carries 8
    for dim in (7, 9):
        assert code_of(payload[:4] + struct.pack("<H", dim) + payload[6:]) == "bad_dim"
    # the dtype says float32: 8 float16 values are only 4 float32 ones
    assert code_of(payload[:3] + b"\x02" + payload[4:]) == "bad_dim"


def test_expected_dim_other_than_the_vectors_is_bad_dim() -> None:
    payload = encode(make_msg(dim=128))
    assert decode(payload, expected_dim=128).dim == 128
    with pytest.raises(WireError) as info:
        decode(payload, expected_dim=512)
    assert info.value.reason == "bad_dim" and info.value.seq == 4_000_000_000
    assert "128 dimensions, expected 512" in info.value.detail


def _with_vector_bytes(payload: bytes, index: int, raw: bytes) -> bytes:
    meta_end = HEADER + struct.unpack_from("<H", payload, 6)[0]
    at = meta_end + index * len(raw)
    return payload[:at] + raw + payload[at + len(raw) :]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_non_finite_vector(value: float, dtype: str) -> None:
    msg = make_msg(dim=16, seq=42)
    payload = encode(msg, dtype)
    raw = np.array([value], dtype=dtype).tobytes()
    bad = _with_vector_bytes(payload, 5, raw)
    with pytest.raises(WireError) as info:
        decode(bad)
    assert info.value.reason == "non_finite"
    assert (info.value.node, info.value.seq) == ("door", 42)  # known: reportable on …/error
    assert isinstance(info.value, ValueError)


def test_bad_utf8_node_and_model() -> None:
    payload = encode(make_msg(dim=4, seq=9))
    bad_node = payload[:NODE_AT] + b"\xff\xfe" + payload[NODE_AT + 2 :]
    with pytest.raises(WireError) as info:
        decode(bad_node)
    assert info.value.reason == "bad_metadata"
    assert info.value.seq == 9 and info.value.node is None
    bad_model = payload[: NODE_AT + 5] + b"\xc3\x28" + payload[NODE_AT + 7 :]
    assert code_of(bad_model) == "bad_metadata"


def test_bad_stage_name() -> None:
    payload = encode(make_msg(dim=4))
    name_at = STAGES_AT + 2  # count, name length, name
    assert payload[name_at : name_at + 6] == b"detect"
    assert code_of(payload[:name_at] + b"\xe9" + payload[name_at + 1 :]) == "bad_metadata"
    # a zero-length stage name
    assert code_of(payload[: STAGES_AT + 1] + b"\x00" + payload[STAGES_AT + 2 :]) == "bad_metadata"
    # more stages than allowed
    assert code_of(payload[:STAGES_AT] + b"\x11" + payload[STAGES_AT + 1 :]) == "bad_metadata"


def test_inconsistent_metadata_lengths() -> None:
    payload = encode(make_msg(dim=4))
    meta_len = struct.unpack_from("<H", payload, 6)[0]
    # M too short for the fixed fields
    short = payload[:6] + struct.pack("<H", 10) + payload[8:]
    assert code_of(short) == "bad_metadata"
    # M shorter than the strings + stages it should hold (stages run past the block)
    assert code_of(payload[:6] + struct.pack("<H", meta_len - 4) + payload[8:]) == "bad_metadata"
    # a string length running past the block
    assert code_of(payload[: NODE_AT - 1] + b"\xf0" + payload[NODE_AT:]) == "bad_metadata"
    # M longer than the whole payload
    assert code_of(payload[:6] + struct.pack("<H", 60000) + payload[8:]) == "truncated"


def test_random_corruption_only_raises_codec_error() -> None:
    rnd = random.Random(0)
    payload = bytearray(encode(make_msg(dim=32)))
    for _ in range(3000):
        bad = bytearray(payload)
        for _ in range(rnd.randint(1, 4)):
            bad[rnd.randrange(len(bad))] = rnd.randrange(256)
        bad = bad[: rnd.randint(0, len(bad))] if rnd.random() < 0.3 else bad
        try:
            decode(bytes(bad))
        except WireError as exc:
            assert exc.reason in codec.CHECKS


def test_encode_rejects_what_decode_would() -> None:
    with pytest.raises(WireError, match="bad_dim"):
        encode(make_msg(vector=np.zeros((2, 4), np.float32)))
    with pytest.raises(WireError, match="bad_dim"):
        encode(make_msg(vector=np.zeros(0, np.float32)))
    with pytest.raises(WireError, match="bad_dim"):
        encode(make_msg(vector=np.zeros(4097, np.float32)))
    with pytest.raises(WireError, match="non_finite"):
        encode(make_msg(vector=np.array([0.0, np.nan])))
    with pytest.raises(WireError, match="non_finite"):  # overflows float16
        encode(make_msg(vector=np.array([0.0, 1e5])))
    assert decode(encode(make_msg(vector=np.array([0.0, 1e5])), "float32")).vector[1] == 1e5
    with pytest.raises(WireError, match="bad_dtype"):
        encode(make_msg(), dtype="float64")
    bad_fields: list[dict[str, Any]] = [
        {"node": "n" * 65},
        {"model_id": "é" * 33},
        {"seq": -1},
        {"seq": 2**32},
        {"face_index": 256},
        {"bbox": (0, 0, -1, 10)},
        {"bbox": (0, 0, 10)},
        {"stages": {f"s{i}": 1.0 for i in range(17)}},
        {"stages": {"détect": 1.0}},
        {"stages": {"": 1.0}},
        {"stages": {"x" * 33: 1.0}},
        {"quality": (1.0, 2.0)},
    ]
    for fields in bad_fields:
        with pytest.raises(WireError, match="bad_metadata"):
            encode(make_msg(**fields))


def test_decoder_enforces_the_documented_limits() -> None:
    """Node and model ids ≤ 64 bytes and stage names ≤ 32, on the way in as well."""
    payload = encode(make_msg(dim=4, seq=5))
    # a node id of 65 bytes: rewrite the node string and its length byte
    meta_len = struct.unpack_from("<H", payload, 6)[0]
    long_node = b"n" * 65
    bad = (
        payload[:6]
        + struct.pack("<H", meta_len - 4 + 65)
        + payload[8 : NODE_AT - 1]
        + bytes([65])
        + long_node
        + payload[NODE_AT + 4 :]
    )
    with pytest.raises(WireError) as info:
        decode(bad)
    assert info.value.reason == "bad_metadata" and "node is 65 bytes" in info.value.detail
    # a stage name of 33 bytes
    name_at = STAGES_AT + 1
    long_stage = (
        payload[:6]
        + struct.pack("<H", meta_len + 27)
        + payload[8:name_at]
        + bytes([33])
        + b"x" * 33
        + payload[name_at + 7 :]
    )
    with pytest.raises(WireError) as info:
        decode(long_stage)
    assert info.value.reason == "bad_metadata" and "33 bytes" in info.value.detail


def test_module_doctest() -> None:
    assert doctest.testmod(codec).failed == 0


# -- the documented test vector --------------------------------------------------------


def _block_after(marker: str) -> str:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    found = re.findall(rf"<!-- test-vector: {marker} -->\s*\n```\w*\n(.*?)\n```", text, re.S)
    assert len(found) == 1, f"docs/protocol.md needs exactly one '{marker}' test-vector block"
    return str(found[0])


def doc_bytes() -> bytes:
    out = bytearray()
    for line in _block_after("bytes").splitlines():
        offset, *octets = line.split()
        assert int(offset, 16) == len(out), f"hex dump offset {offset} out of step"
        out += bytes.fromhex("".join(octets))
    return bytes(out)


def doc_fields() -> list[tuple[int, bytes, str, str]]:
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    section = text.split("<!-- test-vector: fields -->", 1)[1]
    rows = []
    for line in section.strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].isdigit():
            continue
        rows.append((int(cells[0]), bytes.fromhex(cells[1].strip("`")), cells[2], cells[3]))
    return rows


def doc_decoded() -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(_block_after("decoded"))
    return decoded


def test_doc_vector_decodes_to_the_documented_values() -> None:
    payload = doc_bytes()
    want = doc_decoded()
    msg = decode(payload)
    assert payload[3] == {"float16": 1, "float32": 2}[str(want["dtype"])]
    assert msg.dim == want["dim"]
    got = {
        "node": msg.node,
        "seq": msg.seq,
        "frame_id": msg.frame_id,
        "face_index": msg.face_index,
        "bbox": list(msg.bbox),
        "model_id": msg.model_id,
        "captured_at": msg.captured_at,
        "stages": msg.stages,
        "quality": list(msg.quality),
        "dtype": want["dtype"],
        "dim": msg.dim,
        "vector": msg.vector.tolist(),
    }
    assert got == want
    assert list(msg.stages) == list(want["stages"])


def test_encode_reproduces_the_doc_vector() -> None:
    want = doc_decoded()
    msg = EmbeddingMessage(
        node=str(want["node"]),
        seq=want["seq"],
        frame_id=want["frame_id"],
        face_index=want["face_index"],
        bbox=tuple(want["bbox"]),
        model_id=str(want["model_id"]),
        captured_at=want["captured_at"],
        stages=want["stages"],
        quality=tuple(want["quality"]),
        vector=np.array(want["vector"], dtype=np.float32),
    )
    assert encode(msg, dtype=str(want["dtype"])) == doc_bytes()


def test_doc_field_table_matches_the_bytes() -> None:
    payload = doc_bytes()
    rows = doc_fields()
    assert rows, "no field rows found"
    at = 0
    for offset, raw, field, _value in rows:
        assert offset == at, f"field table: {field} at {offset}, expected {at}"
        assert payload[offset : offset + len(raw)] == raw, f"field table: {field}"
        at += len(raw)
    assert at == len(payload)
    # the documented values of a few fields, in the table too
    values = {(field, offset): value for offset, _raw, field, value in rows}
    assert values[("M", 6)] == str(struct.unpack_from("<H", payload, 6)[0])
    assert values[("captured_at", 25)] == repr(decode(payload).captured_at)
