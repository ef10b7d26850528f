"""Typed configuration for every facewire service.

Each service has a dataclass with defaults (``config.schema``) and a YAML file beside
this module (``config/<service>.yaml``). Values are applied in this order, later wins:

1. the dataclass defaults,
2. the YAML file (``--config PATH`` or the shipped default),
3. environment variables ``FACEWIRE_<SECTION>_<KEY>`` (e.g. ``FACEWIRE_PIPELINE_ALIGN=0``),
   plus ``FACEWIRE_BROKER=mqtt://host:port`` for the broker address,
4. command-line flags.

An unknown key is an error that names the key and the keys that are allowed, so a
typo never silently falls back to a default.

>>> from facewire.config import load, schema
>>> cfg = load(schema.ClassifierConfig, data={"search": {"k": 3}})
>>> cfg.search.k
3
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facewire.config import schema
from facewire.config.schema import BrokerConfig

__all__ = ["ConfigError", "load", "default_path", "schema", "BrokerConfig", "to_dict"]

CONFIG_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, env var or flag that does not fit the schema."""


def default_path(service: str) -> Path:
    """The shipped YAML for ``service`` (``edge``, ``classifier``, ``monitor``)."""
    return CONFIG_DIR / f"{service}.yaml"


def load(
    cls: type[T],
    path: str | os.PathLike[str] | None = None,
    *,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` from defaults, a YAML file, env vars and dotted ``overrides``.

    ``overrides`` maps dotted keys to values, e.g. ``{"pipeline.align": False}``;
    ``None`` values are ignored so argparse defaults can be passed straight through.
    """
    merged: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {p}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        _deep_merge(merged, loaded)
    if data:
        _deep_merge(merged, dict(data))
    env = os.environ if env is None else env
    _deep_merge(merged, _from_env(cls, env))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(merged, dotted, value)
    return _build(cls, merged, where=cls.__name__)


def to_dict(obj: Any) -> dict[str, Any]:
    """The config as plain data (for logs and status messages); hides passwords."""
    out = dataclasses.asdict(obj)

    def scrub(d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                scrub(v)
            elif k == "password" and v:
                d[k] = "***"

    scrub(out)
    return out


# --- internals -------------------------------------------------------------------------


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = dict(v) if isinstance(v, Mapping) else v


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        d = d.setdefault(key, {})
    d[last] = value


def _from_env(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """Collect ``FACEWIRE_<SECTION>_<KEY>`` for the fields ``cls`` actually has."""
    out: dict[str, Any] = {}
    broker_url = env.get("FACEWIRE_BROKER")
    hints = typing.get_type_hints(cls)
    if broker_url and "broker" in hints:
        out["broker"] = {"url": broker_url}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type,unused-ignore]
        sub = hints[f.name]
        if dataclasses.is_dataclass(sub):
            for g in dataclasses.fields(sub):
                key = f"FACEWIRE_{f.name}_{g.name}".upper()
                if key in env:
                    out.setdefault(f.name, {})[g.name] = env[key]
        else:
            key = f"FACEWIRE_{f.name}".upper()
            if key in env and f.name != "broker":
                out[f.name] = env[key]
    return out


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "validate", None)
        if check is not None:
            check()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return _build(tp, value, where)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        seq = [_coerce(item, v, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | str) and str(value).lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, int | str) and str(value).lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a {tp.__name__}, got {value!r}") from None
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value
