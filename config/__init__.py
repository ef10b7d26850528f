"""Typed configuration for every facewire service.

Each service has a dataclass (``config.schema``), where every setting's type, default,
range and help are written once, and a YAML file beside this module
(``config/<service>.yaml``). Values are applied in this order, later wins:

1. the defaults in ``config.schema``,
2. the YAML file (``--config PATH`` or the shipped one) after the files it names under
   ``include:`` (the shipped edge and classifier files include ``pipeline.yaml``, the
   face pipeline both must run),
3. environment variables ``FACEWIRE_<KEY>`` with the dotted key's dots as ``_``
   (``FACEWIRE_PIPELINE_DETECTOR_KIND=haar``), plus ``FACEWIRE_BROKER=mqtt://host:port``
   for ``broker.url``,
4. command-line flags (``config.cli``).

Every source is checked the same way: an unknown key, a value of the wrong type or
out of range is an error that names the key, the value and what is allowed. So is a
``FACEWIRE_*`` variable that is no setting of any service (one of another service is
ignored: services share environments). ``docs/configuration.md`` lists every setting
(``facewire config reference``).

>>> from facewire.config import load, schema
>>> cfg = load(schema.ClassifierConfig, data={"search": {"k": 3}}, env={})
>>> cfg.search.k
3
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facewire.config import schema
from facewire.config.fields import Invalid, Leaf, children, is_section, leaves, meta_of
from facewire.config.schema import BrokerConfig

__all__ = ["ConfigError", "load", "default_path", "schema", "BrokerConfig", "to_dict"]

CONFIG_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "FACEWIRE_"
# FACEWIRE_* variables that are read elsewhere and are no setting of a service.
OTHER_ENV: dict[str, str] = {
    "FACEWIRE_LOG": "log level of every command (DEBUG, INFO, WARNING …; default INFO)",
    "FACEWIRE_MODELS_DIR": "where model files live when pipeline.models_dir is empty",
    "FACEWIRE_BENCH_RESULTS": "benchmarks: folder for the JSON results",
    "FACEWIRE_VENV": "dev.sh: the virtualenv to use (default .venv)",
}
T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, env var or flag that does not fit the schema."""


def default_path(service: str) -> Path:
    """The shipped YAML for ``service`` (``edge``, ``classifier``, ``monitor``,
    ``pipeline``)."""
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
    layers: list[dict[str, Any]] = []
    if path is not None:
        layers += [_checked(cls, d, source) for source, d in _read_yaml(Path(path))]
    if data:
        layers.append(_checked(cls, data, "data"))
    layers.append(_from_env(cls, os.environ if env is None else env))
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(nested, dotted, value)
    layers.append(_checked(cls, nested, "overrides"))
    merged: dict[str, Any] = {}
    for layer in layers:
        _deep_merge(merged, layer)
    return _build(cls, merged, "")


def to_dict(obj: Any) -> dict[str, Any]:
    """The config as plain data (for logs and status messages); hides passwords."""
    out = dataclasses.asdict(obj)

    def scrub(cls: type, d: dict[str, Any]) -> None:
        for name, (tp, f) in children(cls).items():
            if is_section(tp):
                scrub(tp, d[name])
            elif meta_of(f).secret and d[name]:
                d[name] = "***"
            elif isinstance(d[name], str):
                d[name] = _redact(d[name])

    scrub(type(obj), out)
    return out


def env_settings(cls: type) -> dict[str, Leaf]:
    """Environment variable → the setting of ``cls`` it sets."""
    out = {leaf.env: leaf for leaf in leaves(cls)}
    if "FACEWIRE_BROKER_URL" in out:
        out["FACEWIRE_BROKER"] = out["FACEWIRE_BROKER_URL"]
    return out


def check_env(env: Mapping[str, str], cls: type | None = None) -> None:
    """Raise ``ConfigError`` for each ``FACEWIRE_*`` variable that is no setting of any
    service (nor of ``cls``) and not one of ``OTHER_ENV``."""
    known = set(OTHER_ENV)
    for c in [*schema.SERVICES.values(), *([cls] if cls else [])]:
        known |= set(env_settings(c))
    bad = [n for n in sorted(env) if n.startswith(ENV_PREFIX) and n not in known]
    if bad:
        raise ConfigError("\n".join(_unknown_env(n, cls) for n in bad))


# --- internals -------------------------------------------------------------------------


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[str, Any]]:
    """(source, data) of ``path`` and of the files it includes, included ones first."""
    real = path.resolve()
    if real in seen:
        raise ConfigError(f"{path}: included again by itself (include loop)")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        by = f" (included by {seen[-1]})" if seen else ""
        raise ConfigError(f"config file not found: {path}{by}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    include = loaded.pop("include", [])
    names = [include] if isinstance(include, str) else include
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: include = {include!r}: expected a file name or a list of them")
    out: list[tuple[str, Any]] = []
    for name in names:  # relative to the including file, like a shell's source
        out += _read_yaml(path.parent / Path(name).expanduser(), (*seen, real))
    out.append((str(path), loaded))
    return out


def _checked(cls: type, data: Any, source: str, prefix: str = "") -> dict[str, Any]:
    """``data`` checked against ``cls`` and coerced to its types, as a nested dict."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of settings, got {data!r}")
    kids = children(cls)
    out: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in kids:
            raise ConfigError(f"{source}: unknown key {key}; {_allowed(prefix, str(name), kids)}")
        tp, f = kids[name]
        if is_section(tp):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            if value is None:  # a section whose keys are all commented out
                value = {}
            if not isinstance(value, Mapping):
                hint = meta_of(f).hint
                raise ConfigError(
                    f"{source}: {key} = {value!r}: expected a section with the keys "
                    f"{', '.join(children(tp))}" + (f" ({hint})" if hint else "")
                )
            out[name] = _checked(tp, value, source, key + ".")
        else:
            out[name] = _coerced(Leaf(key, tp, f.default, meta_of(f)), value, source)
    return out


def _coerced(leaf: Leaf, value: Any, source: str) -> Any:
    try:
        return leaf.coerce(value)
    except Invalid as exc:
        raise ConfigError(f"{source}: {leaf.key} = {_shown(leaf, value)}: {exc}") from None


def _shown(leaf: Leaf, value: Any) -> str:
    if leaf.meta.secret:
        return "'***'"
    return repr(_redact(value) if isinstance(value, str) else value)


def _redact(text: str) -> str:
    """``text`` with the password of a ``scheme://user:password@host`` URL hidden."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", text)


def _allowed(prefix: str, name: str, kids: Mapping[str, Any]) -> str:
    level = prefix.rstrip(".")
    close = difflib.get_close_matches(name, list(kids), n=1)
    guess = f"did you mean {prefix}{close[0]}? " if close else ""
    where = f"in {level}" if level else "at the top level"
    return f"{guess}allowed {where}: {', '.join(sorted(kids))}"


def _from_env(cls: type, env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of ``cls`` in ``env``; other services' variables are left alone."""
    check_env(env, cls)
    own = env_settings(cls)
    out: dict[str, Any] = {}
    for name in sorted(env):  # FACEWIRE_BROKER before FACEWIRE_BROKER_URL: the longer wins
        leaf = own.get(name)
        if leaf is not None:
            _set_dotted(out, leaf.key, _coerced(leaf, env[name], name))
    return out


def _tree(classes: list[type]) -> dict[str, Any]:
    """Field names of all ``classes`` merged: name → subtree (section) or None."""
    out: dict[str, Any] = {}
    for cls in classes:
        for name, (tp, _) in children(cls).items():
            if is_section(tp):
                out[name] = {**(out.get(name) or {}), **_tree([tp])}
            else:
                out.setdefault(name, None)
    return out


def _unknown_env(name: str, cls: type | None) -> str:
    """One line: the variable, the key it would be, what that level allows."""
    classes = [*schema.SERVICES.values(), *([cls] if cls else [])]
    node, path = _tree(classes), []
    rest = name[len(ENV_PREFIX) :].lower()
    while True:  # the field names hold underscores too: follow the sections that fit
        subs = [k for k, v in node.items() if v is not None and rest.startswith(k + "_")]
        if not subs:
            break
        k = max(subs, key=len)
        path.append(k)
        node, rest = node[k], rest[len(k) + 1 :]
    key = ".".join([*path, rest])
    prefix = "".join(p + "." for p in path)
    if isinstance(node.get(rest), dict):
        what = f"{key} is a section, not a setting"
    else:
        what = f"no service has a setting {key}"
    names = sorted({n for c in classes for n in env_settings(c)})
    close = difflib.get_close_matches(name, names, n=1)
    guess = f"did you mean {close[0]}? " if close else ""
    level = prefix.rstrip(".")
    where = f"in {level}" if level else "at the top level"
    return f"{name}: {what}; {guess}allowed {where}: {', '.join(sorted(node))}"


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            _deep_merge(into[k], v)
        else:
            into[k] = dict(v) if isinstance(v, Mapping) else v


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        nxt = d.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {key} is a setting, not a section")
        d = nxt
    d[last] = value


def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    """``cls`` from checked ``data``, then its cross-field checks (``validate()``)."""
    kids = children(cls)
    kwargs: dict[str, Any] = {}
    for name, (tp, _) in kids.items():
        if is_section(tp):
            kwargs[name] = _build(tp, data.get(name, {}), f"{prefix}{name}.")
        elif name in data:
            kwargs[name] = data[name]
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "validate", None)
        if check is not None:
            check()
    except ValueError as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc
    return obj
