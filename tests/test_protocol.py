"""docs/protocol.md's JSON examples against bus/messages.py: every one decodes into its
type, and encodes back to the same JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from facewire.bus import messages
from facewire.bus.errors import REASONS, WireError
from facewire.bus.result_text import ResultEncoder

PROTOCOL_MD = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- message: (\w+) -->\n```json\n(.*?)\n```", re.S)


def examples() -> list[tuple[str, str]]:
    found = EXAMPLE.findall(PROTOCOL_MD.read_text())
    assert len(found) >= 7, "the page lost its marked examples"
    return found


@pytest.mark.parametrize(("kind", "text"), examples())
def test_every_example_round_trips(kind: str, text: str) -> None:
    cls = getattr(messages, kind)
    decoded = cls.decode(text.encode())
    assert decoded.as_dict() == json.loads(text)
    again = cls.decode(decoded.encode())
    assert again == decoded


def test_every_json_message_type_has_an_example() -> None:
    kinds = {kind for kind, _ in examples()}
    types = {
        name
        for name in messages.__all__
        if isinstance(getattr(messages, name), type)
        and issubclass(getattr(messages, name), messages.JsonMessage)
        and name != "JsonMessage"
    }
    assert types <= kinds


def test_reasons_are_documented_in_check_order() -> None:
    text = PROTOCOL_MD.read_text()
    at = [text.find(f"| `{r}` |") for r in REASONS]
    assert -1 not in at, [r for r, i in zip(REASONS, at, strict=True) if i < 0]
    assert at == sorted(at)


def test_fast_result_text_decodes_to_the_same_result() -> None:
    (text,) = [t for k, t in examples() if k == "Result"]
    ref = messages.Result.decode(text)
    names = np.array(["alice", "bob"])
    enc = ResultEncoder(names, ref.model, 0.363, ref.gallery)
    stages = {k: v for k, v in ref.timings.items() if k in messages.EDGE_STAGES}
    fast = enc.encode(
        ref.node, ref.seq, ref.frame, ref.face, ref.bbox, ref.captured_at, stages,
        0, [0, 0, 1], [n.score for n in ref.neighbours], ref.score, True,
        ref.timings["queue"], ref.timings["search"], ref.timings["total_classifier"],
        ref.classified_at, ref.track, ref.track_frames, ref.track_name,
    )  # fmt: skip
    assert messages.Result.decode(fast) == ref


@pytest.mark.parametrize(
    ("kind", "payload", "reason", "words"),
    [
        ("Result", b"\xff\xfe", "bad_json", "not UTF-8"),
        ("Result", b"[1, 2]", "bad_json", "expected a JSON object"),
        ("Result", b'{"node": "door", "seq": 1, "name": "x", "model": "m"}', "bad_field",
         "'score' is required"),
        ("Result", b'{"node": "door", "seq": -1, "name": "x", "score": 1, "model": "m"}',
         "bad_field", "'seq' must be an integer >= 0"),
        ("Result", b'{"node": "door", "seq": 1, "name": "' + b"x" * 200 + b'", "score": 1,'
         b' "model": "m"}', "bad_field", "over 128 bytes"),
        ("Result", b'{"node": "door", "seq": 1, "name": "x", "score": NaN, "model": "m"}',
         "bad_field", "'score' is required"),
        ("EdgeStatus", b'{"node": "door", "state": "sleeping"}', "bad_field", "'state'"),
        ("ErrorReport", b'{"node": "d", "reason": "boom", "detail": "x", "count": 1}',
         "bad_field", "unknown reason"),
        ("ThresholdStats", b'{"threshold": 0.4, "histogram": {"edges": [0, 1], "counts": '
         b'[1, 2]}}', "bad_field", "len(counts) + 1"),
        ("ClassifierStatus", b'{"state": "online", "gallery": {"identities": 1}}',
         "bad_field", "'vectors' is required"),
    ],
)  # fmt: skip
def test_malformed_messages_say_why(kind: str, payload: bytes, reason: str, words: str) -> None:
    with pytest.raises(WireError) as info:
        getattr(messages, kind).decode(payload)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_unknown_keys_are_ignored() -> None:
    status = messages.EdgeStatus.decode(b'{"node": "d", "state": "online", "future": [1]}')
    assert status.as_dict() == {"node": "d", "state": "online"}
