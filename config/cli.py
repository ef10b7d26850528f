"""Command-line flags made from the schema, and ``facewire config``.

A setting with ``flag=`` in ``config.schema`` gets that flag, its help and its
default from there; ``overrides_from(args)`` turns the parsed flags back into dotted
overrides for ``config.load``. The edge and the classifier (and ``eval``) take the
same pipeline flags, because they come from the same settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

from facewire.config.fields import Invalid, Leaf, format_value, leaves
from facewire.config.schema import SERVICES

DEST = "setting:"  # argparse dest prefix of a setting's flag; the rest is its dotted key
PIPELINE_FLAGS = (
    "pipeline.model",
    "pipeline.detector.kind",
    "pipeline.mesh",
    "pipeline.align",
    "pipeline.on_mesh_miss",
)
SEARCH_FLAGS = ("search.threshold", "search.k")


def find_setting(key: str, cls: type | None = None) -> Leaf:
    """The setting ``key`` of ``cls`` (default: of whichever service has it)."""
    for c in [cls] if cls else SERVICES.values():
        for leaf in leaves(c):
            if leaf.key == key:
                return leaf
    raise KeyError(f"no setting {key!r}")


def add_setting_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    key: str,
    flag: str | None = None,
    *,
    cls: type | None = None,
) -> argparse.Action:
    """Add the flag of setting ``key`` (its name, help and shown default from the schema).

    A boolean's flag sets it: ``--loop`` to true, ``--no-mesh`` to false. Values are
    checked like the YAML's, so ``--queue-size 2.7`` is refused.
    """
    leaf = find_setting(key, cls)
    name = leaf.meta.flag
    if flag is not None and flag != name:
        raise ValueError(f"{key}: the schema names its flag {name or 'nothing'}, not {flag}")
    if not name:
        raise ValueError(f"{key} has no flag in the schema")
    dest = DEST + key
    if leaf.type is bool:
        off = name.startswith("--no-")
        text = f"turn off {key}: {leaf.meta.help}" if off else leaf.meta.help
        return parser.add_argument(
            name, dest=dest, action="store_const", const=not off, default=None, help=_esc(text)
        )
    shown = "" if leaf.default in ("", None) else f" (default: {format_value(leaf.default)})"
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": _esc(leaf.meta.help + shown)}
    if leaf.choices and all(isinstance(c, str) for c in leaf.choices):
        kwargs["choices"] = list(leaf.choices)  # argparse's own "invalid choice" message
    else:
        kwargs["type"] = _converter(leaf)
        kwargs["metavar"] = leaf.meta.metavar or name.lstrip("-").replace("-", "_").upper()
    return parser.add_argument(name, **kwargs)


def add_setting_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    keys: Iterable[str] | None = None,
) -> None:
    """The flags of ``keys`` (default: of every setting of ``cls`` that has one)."""
    for key in keys if keys is not None else [x.key for x in leaves(cls) if x.meta.flag]:
        add_setting_flag(parser, key, cls=cls)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted key → value of every setting flag that was given on the command line."""
    return {
        k[len(DEST) :]: v for k, v in vars(args).items() if k.startswith(DEST) and v is not None
    }


def add_broker_argument(p: argparse.ArgumentParser) -> None:
    add_setting_flag(p, "broker.url")


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    for key in PIPELINE_FLAGS:
        add_setting_flag(p, key)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    for key in SEARCH_FLAGS:
        add_setting_flag(p, key)


def main(argv: list[str] | None = None) -> int:
    """``facewire config``: the settings reference, or a service's effective settings."""
    p = argparse.ArgumentParser(
        prog="facewire config",
        description="Every setting is in config/schema.py: default, range, help. "
        "`reference` prints them all (docs/configuration.md is its output); `show` "
        "prints what a service would run with here (file < FACEWIRE_* env).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("reference", help="every setting of every service, as Markdown")
    show = sub.add_parser("show", help="a service's effective settings, as YAML")
    show.add_argument("service", choices=list(SERVICES))
    show.add_argument("--config", default=None, help="YAML config (default: the shipped one)")
    args = p.parse_args(argv)
    if args.command == "reference":
        from facewire.config.reference import render

        sys.stdout.write(render())
        return 0
    import yaml

    from facewire import config

    try:
        cfg = config.load(SERVICES[args.service], args.config or config.default_path(args.service))
    except config.ConfigError as exc:
        print(f"facewire config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump(config.to_dict(cfg), sort_keys=False))
    return 0


def _esc(text: str) -> str:
    return text.replace("%", "%%")  # argparse formats help with %


def _converter(leaf: Leaf) -> Any:
    def convert(text: str) -> Any:
        try:
            return leaf.coerce(text)
        except Invalid as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None

    convert.__name__ = leaf.key
    return convert


if __name__ == "__main__":
    raise SystemExit(main())
