"""The binary embedding message (``faces/<node>/embedding``), version 1.

An 8-byte header, a metadata block, then the raw vector; everything little-endian.
The full byte layout and a test vector are in ``docs/protocol.md``.

==========  ======  ===============================================================
offset      type    field
==========  ======  ===============================================================
0           2 B     magic ``b"FW"``
2           u8      version (1)
3           u8      dtype code: 1 = float16, 2 = float32
4           u16     dim (1..4096)
6           u16     M = metadata block length in bytes
8           M B     metadata block (seq, frame, face, bbox, time, quality, strings,
                    stages); bytes after the known fields are ignored
8 + M       dim×s   the vector (s = 2 for float16, 4 for float32)
==========  ======  ===============================================================

A 512-d float16 message is about 1.1 KB; encode + decode take a few microseconds.

>>> import numpy as np
>>> msg = EmbeddingMessage(
...     node="door", seq=7, frame_id=1234, face_index=0, bbox=(120, 80, 96, 96),
...     model_id="sface-1a2b3c4d", captured_at=1700000000.25,
...     stages={"detect": 4.5, "embed": 12.25}, quality=(9216.0, 150.5, 128.0),
...     vector=np.array([0.5, -0.5, 0.5, -0.5], dtype=np.float32))
>>> payload = encode(msg)                       # float16 by default
>>> len(payload), payload[:2]
(95, b'FW')
>>> decode(payload) == msg
True
>>> try:
...     decode(payload[:20])
... except WireError as exc:
...     print(exc.reason, "-", exc.detail)
truncated - payload ends inside the metadata block (20 of 87 bytes)

Decoding never trusts the payload: every failure is a
:class:`~facewire.bus.errors.WireError` whose ``reason`` the classifier reports on
``faces/<node>/error`` as is. The checks run in the order of :data:`CHECKS`. Whether
the vector is L2-normalised, and whether its model id is the gallery's, is for the
classifier to decide, not the codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facewire.bus.errors import WireError

MAGIC = b"FW"
VERSION = 1
MAX_DIM = 4096
MAX_STRING = 64  # bytes (UTF-8) of node and model_id, enforced both ways
MAX_STAGES = 16
MAX_STAGE_NAME = 32  # bytes (ascii)

#: dtype code on the wire → numpy dtype (always little-endian)
DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f2"), 2: np.dtype("<f4")}
_DTYPE_CODES = {"float16": 1, "float32": 2}
_LIMITS = {code: float(np.finfo(dt).max) for code, dt in DTYPES.items()}

#: The decoder's reasons, in the order it checks them.
CHECKS = (
    "truncated",
    "bad_magic",
    "bad_version",
    "bad_dtype",
    "bad_dim",
    "bad_metadata",
    "non_finite",
)

# magic, version, dtype code, dim, metadata length
_HEADER = struct.Struct("<2sBBHH")
# seq, frame_id, face_index, bbox x, y (int16), w, h (uint16), captured_at, quality ×3
_FIXED = struct.Struct("<IIBhhHHd3f")
_U8 = struct.Struct("<B")
_F32 = struct.Struct("<f")


@dataclass(frozen=True, eq=False, slots=True)
class EmbeddingMessage:
    """One face's embedding and where it came from (read-only once built).

    ``stages`` are per-stage durations in milliseconds measured on the edge (e.g.
    ``detect``, ``mesh``, ``align``, ``embed``, ``encode``); ``quality`` is (face area
    in px, blur = variance of the Laplacian, mean brightness 0..255). ``captured_at``
    is unix seconds on the edge's clock. ``bbox`` is (x, y, w, h) in frame pixels.
    """

    node: str
    seq: int
    frame_id: int
    face_index: int
    bbox: tuple[int, int, int, int]
    model_id: str
    captured_at: float
    stages: dict[str, float]
    quality: tuple[float, float, float]
    vector: np.ndarray = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.vector.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EmbeddingMessage):
            return NotImplemented
        return (
            self.node == other.node
            and self.seq == other.seq
            and self.frame_id == other.frame_id
            and self.face_index == other.face_index
            and tuple(self.bbox) == tuple(other.bbox)
            and self.model_id == other.model_id
            and self.captured_at == other.captured_at
            and self.stages == other.stages
            and tuple(self.quality) == tuple(other.quality)
            and self.vector.shape == other.vector.shape
            and bool(np.array_equal(self.vector, other.vector))
        )

    __hash__ = None  # type: ignore[assignment]

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready data (``docs/protocol.md``'s decoded test vector)."""
        return {
            "node": self.node,
            "seq": self.seq,
            "frame_id": self.frame_id,
            "face_index": self.face_index,
            "bbox": list(self.bbox),
            "model_id": self.model_id,
            "captured_at": self.captured_at,
            "stages": dict(self.stages),
            "quality": list(self.quality),
            "dim": self.dim,
            "vector": self.vector.tolist(),
        }


def _utf8(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > MAX_STRING:
        raise WireError("bad_metadata", f"{what} is {len(raw)} bytes, at most {MAX_STRING}")
    return raw


def encode(msg: EmbeddingMessage, dtype: str = "float16") -> bytes:
    """The wire bytes of ``msg``, its vector stored as ``dtype`` (float16 or float32).

    Raises :class:`~facewire.bus.errors.WireError` (a ``ValueError``) for a message
    that could not be decoded again: bad vector, non-finite values, out-of-range fields,
    long strings.
    """
    code = _DTYPE_CODES.get(dtype if isinstance(dtype, str) else np.dtype(dtype).name)
    if code is None:
        raise WireError("bad_dtype", f"dtype {dtype!r}: must be 'float16' or 'float32'")
    vec = np.asarray(msg.vector)
    if vec.ndim != 1 or not 0 < vec.shape[0] <= MAX_DIM:
        raise WireError("bad_dim", f"vector shape {vec.shape}: must be 1-D with 1..{MAX_DIM}")
    # One reduction catches NaN (the comparison is False), ±inf, and values that would
    # overflow the wire dtype (|x| > 65504 becomes inf in float16).
    if not float(np.abs(vec).max()) <= _LIMITS[code]:
        raise WireError("non_finite", f"vector contains NaN, infinity or values beyond {dtype}")
    data = vec.astype(DTYPES[code], copy=False).tobytes()

    node = _utf8(msg.node, "node")
    model = _utf8(msg.model_id, "model_id")
    if len(msg.stages) > MAX_STAGES:
        raise WireError("bad_metadata", f"{len(msg.stages)} stages, at most {MAX_STAGES}")
    try:
        x, y, w, h = msg.bbox
        area, blur, brightness = msg.quality
        parts = [
            _FIXED.pack(
                msg.seq,
                msg.frame_id,
                msg.face_index,
                x,
                y,
                w,
                h,
                msg.captured_at,
                area,
                blur,
                brightness,
            ),
            _U8.pack(len(node)),
            node,
            _U8.pack(len(model)),
            model,
            _U8.pack(len(msg.stages)),
        ]
        for name, ms in msg.stages.items():
            raw = name.encode("ascii")
            if not 0 < len(raw) <= MAX_STAGE_NAME:
                raise WireError("bad_metadata", f"stage name {name!r}: 1..{MAX_STAGE_NAME} bytes")
            parts += (_U8.pack(len(raw)), raw, _F32.pack(ms))
    except (struct.error, ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError("bad_metadata", f"cannot encode metadata: {exc}") from exc
    meta = b"".join(parts)
    return b"".join((_HEADER.pack(MAGIC, VERSION, code, vec.shape[0], len(meta)), meta, data))


# node ids, model ids, stage names: the same in every message of a node
_TEXTS: dict[str, dict[bytes, str]] = {"utf-8": {}, "ascii": {}}


def _text(raw: bytes, encoding: str) -> str:
    cache = _TEXTS[encoding]
    text = cache.get(raw)
    if text is None:
        text = raw.decode(encoding)
        if len(cache) < 4096:  # bounded: a flood of new names must not grow it
            cache[raw] = text
    return text


def decode(payload: bytes, expected_dim: int | None = None) -> EmbeddingMessage:
    """Parse an embedding message; the vector comes back as float32.

    ``expected_dim`` (e.g. the gallery's) makes any other vector size ``bad_dim``.

    Raises :class:`~facewire.bus.errors.WireError` with ``reason`` one of: ``truncated``
    (ends before the end of the metadata block), ``bad_magic``, ``bad_version``, ``bad_dtype``,
    ``bad_dim`` (dim 0 or > 4096, or the bytes after the metadata are not exactly
    dim × itemsize), ``bad_metadata`` (inconsistent lengths, bad utf-8/ascii),
    ``non_finite`` (NaN or ±inf in the vector).
    """
    if not isinstance(payload, bytes):  # bytearray / memoryview: slices must be hashable
        payload = bytes(payload)
    n = len(payload)
    if n < _HEADER.size:
        raise WireError("truncated", f"payload is {n} bytes, the header alone is {_HEADER.size}")
    magic, version, code, dim, meta_len = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise WireError("bad_magic", f"payload starts with {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError("bad_version", f"version {version}, this decoder reads {VERSION}")
    dt = DTYPES.get(code)
    if dt is None:
        raise WireError("bad_dtype", f"dtype code {code}: must be 1 (float16) or 2 (float32)")
    if not 0 < dim <= MAX_DIM:
        raise WireError("bad_dim", f"dim {dim}: must be 1..{MAX_DIM}")
    end = _HEADER.size + meta_len
    if n < end:
        raise WireError("truncated", f"payload ends inside the metadata block ({n} of {end} bytes)")

    node: str | None = None
    seq: int | None = None
    try:
        if meta_len < _FIXED.size:
            raise WireError("bad_metadata", f"metadata block of {meta_len} bytes is too short")
        seq, frame_id, face_index, x, y, w, h, captured_at, area, blur, bright = _FIXED.unpack_from(
            payload, _HEADER.size
        )
        pos = _HEADER.size + _FIXED.size
        strings: list[str] = []
        for _ in range(2):
            if pos >= end:
                raise WireError("bad_metadata", "metadata block ends inside a string")
            length = payload[pos]
            pos += 1
            if length > MAX_STRING:
                what = "model_id" if strings else "node"
                raise WireError("bad_metadata", f"{what} is {length} bytes, at most {MAX_STRING}")
            if pos + length > end:
                raise WireError("bad_metadata", "metadata block ends inside a string")
            strings.append(_text(payload[pos : pos + length], "utf-8"))
            pos += length
        node, model_id = strings
        if pos >= end:
            raise WireError("bad_metadata", "metadata block ends before the stage count")
        count = payload[pos]
        pos += 1
        if count > MAX_STAGES:
            raise WireError("bad_metadata", f"{count} stages, at most {MAX_STAGES}")
        stages: dict[str, float] = {}
        for _ in range(count):
            if pos >= end:
                raise WireError("bad_metadata", "metadata block ends inside the stages")
            length = payload[pos]
            pos += 1
            if not 0 < length <= MAX_STAGE_NAME:
                raise WireError(
                    "bad_metadata", f"stage name of {length} bytes: 1..{MAX_STAGE_NAME}"
                )
            if pos + length + 4 > end:
                raise WireError("bad_metadata", "metadata block ends inside the stages")
            name = _text(payload[pos : pos + length], "ascii")
            (stages[name],) = _F32.unpack_from(payload, pos + length)
            pos += length + 4
    except UnicodeDecodeError as exc:
        raise WireError("bad_metadata", f"undecodable string: {exc}", node=node, seq=seq) from exc
    except WireError as exc:
        raise WireError(exc.reason, exc.detail, node=node, seq=seq) from None

    expected = dim * dt.itemsize
    if n - end != expected:
        raise WireError(
            "bad_dim",
            f"dim {dim} needs {expected} vector bytes, payload has {n - end}",
            node=node,
            seq=seq,
        )
    if expected_dim is not None and dim != expected_dim:
        raise WireError(
            "bad_dim", f"vector has {dim} dimensions, expected {expected_dim}", node=node, seq=seq
        )
    vec = np.frombuffer(payload, dtype=dt, count=dim, offset=end).astype(np.float32)
    if not np.isfinite(vec).all():
        raise WireError("non_finite", "vector contains NaN or infinity", node=node, seq=seq)
    return EmbeddingMessage(
        node=node,
        seq=seq,
        frame_id=frame_id,
        face_index=face_index,
        bbox=(x, y, w, h),
        model_id=model_id,
        captured_at=captured_at,
        stages=stages,
        quality=(area, blur, bright),
        vector=vec,
    )
