"""bus.result_text: the fast result text parses to exactly the reference dict, and
decodes as a Result."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from facewire.bus.messages import UNKNOWN, Result
from facewire.bus.result_text import ResultEncoder

NAMES = ["ann", 'bo"b', "zoë \\ 李", "unknown-ish", "%s %d"]


def result_dict(names: list[str], model_id: str, threshold: float, **kw: Any) -> dict[str, Any]:
    """The reference: the result as a plain dict, the obvious way (what json.dumps of
    it would give, NaN/inf as null since they are not JSON)."""

    def num(v: float, digits: int) -> float | None:
        return round(v, digits) if math.isfinite(v) else None

    timings = {f"{k}_ms": num(v, 3) for k, v in kw["stages"].items()}  # the one key rule
    timings.update(
        queue_ms=num(kw["queue_ms"], 3),
        search_ms=num(kw["search_ms"], 3),
        total_classifier_ms=num(kw["total_ms"], 3),
    )
    known = kw["known"] and kw["winner"] >= 0
    return {
        "node": kw["node"],
        "seq": kw["seq"],
        "frame": kw["frame"],
        "face": kw["face"],
        "name": names[kw["winner"]] if known else UNKNOWN,
        "score": num(kw["score"], 4),
        "threshold": threshold,
        "model": model_id,
        "neighbours": [
            {"name": names[c], "score": num(s, 4)}
            for c, s in zip(kw["codes"], kw["sims"], strict=True)
            if c >= 0
        ],
        "bbox": list(kw["bbox"]),
        "captured_at": kw["captured_at"] if math.isfinite(kw["captured_at"]) else None,
        "timings": timings,
        "classified_at": kw["classified_at"],
        "gallery": None,
        "track": None,
        "track_frames": None,
        "track_name": None,
    }


def both(enc: ResultEncoder, **kw: object) -> tuple[object, dict[str, object]]:
    text = enc.encode(**kw)  # type: ignore[arg-type]
    ref = result_dict(NAMES, "sface@1234abcd", 0.363, **kw)  # type: ignore[arg-type]
    return json.loads(text), ref


def case(rng: np.random.Generator, **over: object) -> dict[str, object]:
    k = 5
    codes = rng.integers(0, len(NAMES), k).tolist()
    sims = sorted((rng.uniform(-1, 1, k)).astype(np.float32).tolist(), reverse=True)
    kw: dict[str, object] = dict(
        node="door-1",
        seq=int(rng.integers(0, 2**32)),
        frame=int(rng.integers(0, 2**32)),
        face=int(rng.integers(0, 255)),
        bbox=tuple(int(v) for v in rng.integers(-100, 2000, 4)),
        captured_at=float(1.7e9 + rng.uniform(0, 1e6)),
        stages={"capture": float(np.float32(rng.uniform(0, 50))), "embed": 33.123456},
        winner=codes[0],
        codes=codes,
        sims=sims,
        score=float(sims[0]),
        known=bool(rng.integers(0, 2)),
        queue_ms=float(rng.uniform(0, 5)),
        search_ms=float(rng.uniform(0, 5)),
        total_ms=float(rng.uniform(0, 10)),
        classified_at=float(1.7e9 + rng.uniform(0, 1e6)),
    )
    kw.update(over)
    return kw


def test_random_results_parse_to_the_reference() -> None:
    rng = np.random.default_rng(0)
    enc = ResultEncoder(NAMES, "sface@1234abcd", 0.363)
    for _ in range(2000):
        kw = case(rng)
        got, ref = both(enc, **kw)
        assert got == ref
        result = Result.decode(enc.encode(**kw))  # type: ignore[arg-type]
        assert result.as_dict() == ref


@pytest.mark.parametrize(
    "over",
    [
        # a gallery smaller than k, or an IVF search that found fewer: FAISS pads with -1
        {"codes": [2, -1, -1, -1, -1], "sims": [0.9, -3.4e38, -3.4e38, -3.4e38, -3.4e38]},
        {"winner": -1, "codes": [-1], "sims": [-3.4e38], "score": -1.0, "known": False},
        # odd stage names (quotes, %, already *_ms) and no stages at all
        {"stages": {'we"ird%s': 1.0, "embed_ms": 2.0, "%.3f": 3.0}},
        {"stages": {}},
        # values from the wire that JSON cannot hold become null, never invalid JSON
        {"stages": {"detect": math.nan, "embed": math.inf}, "captured_at": math.nan},
        {"node": 'quo"te\\node', "known": True},
    ],
)
def test_edge_cases_parse_to_the_reference(over: dict[str, object]) -> None:
    enc = ResultEncoder(NAMES, "sface@1234abcd", 0.363)
    got, ref = both(enc, **case(np.random.default_rng(1), **over))
    assert got == ref
    text = enc.encode(**case(np.random.default_rng(1), **over))  # type: ignore[arg-type]
    assert "NaN" not in text and "Infinity" not in text


def test_unknown_below_threshold_and_names_above() -> None:
    enc = ResultEncoder(NAMES, "m", 0.5)
    kw = case(np.random.default_rng(2), winner=1, codes=[1, 0], sims=[0.7, 0.2], score=0.7)
    assert json.loads(enc.encode(**{**kw, "known": True}))["name"] == 'bo"b'  # type: ignore[arg-type]
    assert json.loads(enc.encode(**{**kw, "known": False}))["name"] == "unknown"  # type: ignore[arg-type]
