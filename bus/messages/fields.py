"""Reading and checking a JSON message's fields, and what every message type has.

Every failure is a :class:`~facewire.bus.errors.WireError` naming the field and why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from facewire.bus.errors import WireError

#: The answer for a face that matches nobody in the gallery well enough.
UNKNOWN = "unknown"

#: What the edge measures, in the order it runs them.
EDGE_STAGES = ("capture", "detect", "mesh", "align", "embed", "encode")
#: What the classifier adds: arrival → taken by the worker, the batch's k-NN search,
#: arrival → result published.
CLASSIFIER_STAGES = ("queue", "search", "total_classifier")

MAX_NODE = 64  # bytes, as in the embedding message and the topic
MAX_MODEL = 64
MAX_NAME = 128  # an identity's name
MAX_TEXT = 1000  # free text: an error's detail, a version string
MAX_ITEMS = 4096  # entries of any list or object in a message
MAX_KEY = 64  # bytes of a key of a name → value object (node ids, stage names)
#: A JSON message's size at most, checked before it is parsed (the deployment
#: broker's max_packet_size is the same).
MAX_PAYLOAD = 1 << 20


T = TypeVar("T", bound="JsonMessage")


# --- reading fields ----------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Fields:
    """Typed access to one JSON object's fields, each failure naming the field."""

    __slots__ = ("data", "what")

    def __init__(self, data: Any, what: str) -> None:
        if not isinstance(data, dict):
            raise WireError(
                "bad_json", f"{what}: expected a JSON object, got {type(data).__name__}"
            )
        if len(data) > MAX_ITEMS:
            raise WireError("bad_field", f"{what}: {len(data)} keys, at most {MAX_ITEMS}")
        self.data = data
        self.what = what

    def _bad(self, key: str, must: str, value: Any) -> WireError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return WireError("bad_field", f"{self.what}: '{key}' must be {must}, got {shown}")

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise WireError("bad_field", f"{self.what}: '{key}' is required")
            return None
        return self.data[key]

    def text(self, key: str, limit: int = MAX_TEXT, required: bool = True) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self._bad(key, "a non-empty string", value)
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise WireError("bad_field", f"{self.what}: '{key}' is over {limit} bytes")
        return value

    def number(self, key: str, required: bool = True) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not _finite(value):
            raise self._bad(key, "a finite number", value)
        return float(value)

    def integer(self, key: str, required: bool = True, minimum: int = 0) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}", value)
        return value

    def boolean(self, key: str, required: bool = True) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def obj(self, key: str, required: bool = False) -> Any:
        value = self._get(key, required)
        return None if value is None else _Fields(value, f"{self.what}.{key}")

    def array(self, key: str, required: bool = False) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) > MAX_ITEMS:
            raise self._bad(key, f"a list of at most {MAX_ITEMS} items", value)
        return value

    def counts(self, key: str) -> dict[str, int]:
        """An object of name → count (e.g. per-node queue depths)."""
        sub = self.obj(key)
        if sub is None:
            return {}
        sub.short_keys(key)
        return {k: sub.integer(k) for k in sub.data}

    def numbers(self, key: str) -> dict[str, float | None]:
        """An object of name → number or null (e.g. timings)."""
        sub = self.obj(key)
        if sub is None:
            return {}
        sub.short_keys(key)
        return {k: sub.number(k, required=False) for k in sub.data}

    def short_keys(self, key: str) -> None:
        for k in self.data:
            if len(k.encode("utf-8", "surrogatepass")) > MAX_KEY:
                raise WireError(
                    "bad_field", f"{self.what}: a key of '{key}' is over {MAX_KEY} bytes"
                )


def _parse(payload: bytes | str, what: str) -> _Fields:
    if len(payload) > MAX_PAYLOAD:
        raise WireError("bad_json", f"{what}: {len(payload)} bytes, at most {MAX_PAYLOAD}")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
        # NaN / Infinity are not JSON; an unknown value is null
        data = json.loads(text, parse_constant=lambda _c: None)
    except UnicodeDecodeError as exc:
        raise WireError("bad_json", f"{what}: not UTF-8 ({exc.reason})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise WireError("bad_json", f"{what}: not JSON ({exc})") from None
    return _Fields(data, what)


def _compact(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


class JsonMessage:
    """What every JSON message type has: ``decode``, ``encode`` and ``as_dict``."""

    __slots__ = ()
    #: what a decoding error calls this message
    KIND: ClassVar[str] = "message"

    @classmethod
    def decode(cls: type[T], payload: bytes | str) -> T:
        return cls.from_fields(_parse(payload, cls.KIND))

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return cls.from_fields(_Fields(dict(data), cls.KIND))

    @classmethod
    def from_fields(cls: type[T], f: _Fields) -> T:
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> str:
        """The JSON text (compact, keys in protocol order)."""
        return _compact(self.as_dict())


State = Literal["online", "offline"]


def read_state(f: _Fields) -> State:
    state = f.text("state", 16)
    if state not in ("online", "offline"):
        raise WireError("bad_field", f"{f.what}: 'state' must be 'online' or 'offline'")
    return state  # type: ignore[no-any-return,unused-ignore]
