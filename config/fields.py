"""What a setting is: a dataclass field with its help, range and flag in the metadata.

``schema`` declares every setting with ``setting()`` and every section with
``section()``; the loader, the flags and the reference read them back with
``leaves()`` and check values with ``coerce()``. The field's type annotation is its
type: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` for choices, and
``X | None`` for a setting that may be empty (``null``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

META = "facewire"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}
NULL = {"", "null", "none", "~"}  # a string meaning "empty" for an optional setting


@dataclass(frozen=True)
class Meta:
    help: str = ""
    min: float | None = None  # inclusive bounds
    max: float | None = None
    gt: float | None = None  # exclusive lower bound
    flag: str = ""  # the command-line flag of every service that has this setting
    metavar: str = ""
    check: Callable[[Any], None] | None = None  # raises ValueError with the reason
    secret: bool = False  # hidden in to_dict()
    hint: str = ""  # sections: shown when the section is given as something else


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    flag: str = "",
    metavar: str = "",
    check: Callable[[Any], None] | None = None,
    secret: bool = False,
) -> Any:
    """A setting: ``x: int = setting(5, "what it does", min=1, flag="--x")``."""
    meta = Meta(help, min, max, gt, flag, metavar, check, secret)
    return field(default=default, metadata={META: meta})


def section(cls: Callable[[], Any], help: str, *, hint: str = "") -> Any:
    """A nested group of settings (``pipeline``, ``broker`` …)."""
    return field(default_factory=cls, metadata={META: Meta(help, hint=hint)})


def meta_of(f: dataclasses.Field[Any]) -> Meta:
    return f.metadata.get(META) or Meta()


class Invalid(ValueError):
    """A value that does not fit its setting; the text says what is allowed."""


@dataclass(frozen=True)
class Leaf:
    """One setting, found by walking a config class."""

    key: str  # dotted, e.g. "pipeline.detector.kind"
    type: Any
    default: Any
    meta: Meta

    @property
    def env(self) -> str:
        return "FACEWIRE_" + self.key.replace(".", "_").upper()

    @property
    def optional(self) -> bool:
        return _split_optional(self.type)[1]

    @property
    def choices(self) -> tuple[Any, ...]:
        base = _split_optional(self.type)[0]
        return typing.get_args(base) if typing.get_origin(base) is typing.Literal else ()

    @property
    def words(self) -> tuple[str, ...]:
        """For ``float | Literal["auto"]``: the words a number may be replaced by."""
        return _split_words(self.type)[1]

    def type_name(self) -> str:
        base, optional = _split_optional(self.type)
        if self.words:
            base = _split_words(self.type)[0]
            return f"{base.__name__} or {' or '.join(self.words)}"
        name = "choice" if self.choices else getattr(base, "__name__", str(base))
        return f"{name} or null" if optional else name

    def bounds(self) -> str:
        """The range or the choices alone: ``>= 1``, ``-1..1``, ``haar, yunet``."""
        m = self.meta
        if self.choices:
            return ", ".join(str(c) for c in self.choices)
        if m.min is not None and m.max is not None:
            return f"{_num(m.min)}..{_num(m.max)}"
        if m.gt is not None:
            return f"> {_num(m.gt)}"
        if m.min is not None:
            return f">= {_num(m.min)}"
        if m.max is not None:
            return f"<= {_num(m.max)}"
        return ""

    def allowed(self) -> str:
        """What a value must be, for errors: ``a whole number >= 1``."""
        base, optional = _split_optional(self.type)
        if self.words:
            base = _split_words(self.type)[0]
        if self.choices:
            text = f"one of {self.bounds()}"
        elif base is bool:
            text = "true or false"
        elif base is str:
            text = "a string"
        else:
            text = "a whole number" if base is int else "a number"
            bounds = self.bounds()
            if ".." in bounds:
                text += f" within {bounds}"
            elif bounds:
                text += f" {bounds}"
        if self.words:
            text += ", or " + " or ".join(self.words)
        return f"{text}, or null" if optional else text

    def coerce(self, value: Any) -> Any:
        """``value`` as this setting's type, range-checked; raises ``Invalid``."""
        base, optional = _split_optional(self.type)
        if self.words:
            word = _choice(self.words, value)
            if word is not _BAD:
                return word
            base = _split_words(self.type)[0]
        if value is None or (optional and isinstance(value, str) and value.strip().lower() in NULL):
            if optional:
                return None
            raise Invalid(f"expected {self.allowed()}")
        if self.choices:
            out = _choice(self.choices, value)
        else:
            out = _SCALARS[base](value) if base in _SCALARS else value
        if out is _BAD:
            raise Invalid(f"expected {self.allowed()}")
        m = self.meta
        if isinstance(out, int | float) and not isinstance(out, bool):
            low_ok = (m.min is None or out >= m.min) and (m.gt is None or out > m.gt)
            if not low_ok or (m.max is not None and out > m.max):
                raise Invalid(f"expected {self.allowed()}")
        if m.check is not None:
            try:
                m.check(out)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        return out


def is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def children(cls: type) -> dict[str, tuple[Any, dataclasses.Field[Any]]]:
    """Field name → (resolved type, field), in declaration order."""
    h = hints(cls)
    return {f.name: (h[f.name], f) for f in dataclasses.fields(cls)}


def leaves(cls: type, prefix: str = "") -> Iterator[Leaf]:
    """Every setting of ``cls``, depth first, sections after a level's own settings."""
    kids = children(cls)
    for name, (tp, f) in kids.items():
        if not is_section(tp):
            yield Leaf(prefix + name, tp, f.default, meta_of(f))
    for name, (tp, _) in kids.items():
        if is_section(tp):
            yield from leaves(tp, f"{prefix}{name}.")


def sections(cls: type, prefix: str = "") -> Iterator[tuple[str, type, Meta]]:
    """Every section below ``cls`` as (dotted key, class, meta)."""
    for name, (tp, f) in children(cls).items():
        if is_section(tp):
            yield prefix + name, tp, meta_of(f)
            yield from sections(tp, f"{prefix}{name}.")


def format_value(value: Any) -> str:
    """A value as it is written in YAML: ``true``, ``null``, ``""``, ``0.5``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if value == "":
        return '""'
    return str(value)


# --- internals -------------------------------------------------------------------------

_BAD = object()


def _num(x: float) -> str:
    return f"{x:g}"


def _split_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return inner[0], len(inner) < len(args)
    return tp, False


def _split_words(tp: Any) -> tuple[Any, tuple[str, ...]]:
    """``float | Literal["auto"]`` → ``(float, ("auto",))``; anything else → ``(tp, ())``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        words = [a for a in args if typing.get_origin(a) is typing.Literal]
        rest = [a for a in args if a not in words]
        if len(words) == 1 and len(rest) == 1 and rest[0] in _SCALARS:
            return rest[0], typing.get_args(words[0])
    return tp, ()


def _to_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in TRUE:
            return True
        if s in FALSE:
            return False
    return _BAD


def _to_float(v: Any) -> Any:
    if isinstance(v, bool):
        return _BAD
    if isinstance(v, int | float):
        out = float(v)
    elif isinstance(v, str):
        try:
            out = float(v.strip())
        except ValueError:
            return _BAD
    else:
        return _BAD
    return out if math.isfinite(out) else _BAD


def _to_int(v: Any) -> Any:
    # a whole number only: 2.7 (or "2.7") is refused instead of becoming 2
    if isinstance(v, bool):
        return _BAD
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    f = _to_float(v)
    return int(f) if f is not _BAD and f.is_integer() else _BAD


def _to_str(v: Any) -> Any:
    # YAML's yes/no/on/off are booleans; a string setting given one is a mistake
    if isinstance(v, str):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return _BAD


def _choice(choices: tuple[Any, ...], v: Any) -> Any:
    if isinstance(v, bool) and {"on", "off"} <= set(choices):
        return "on" if v else "off"  # YAML 1.1 reads an unquoted on/off as a boolean
    for c in choices:
        if type(v) is type(c) and v == c:
            return c
    if isinstance(v, str):
        for c in choices:
            if str(c) == v.strip():
                return c
    return _BAD


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}
