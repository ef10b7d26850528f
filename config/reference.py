"""The settings reference, ``docs/configuration.md``, rendered from ``config.schema``.

``facewire config reference > docs/configuration.md`` (or ``python -m
facewire.config.reference``) regenerates it; a test fails when the committed file
differs from what the schema gives.
"""

from __future__ import annotations

import sys

from facewire.config import OTHER_ENV, env_settings
from facewire.config.fields import Leaf, children, format_value, is_section, leaves, sections
from facewire.config.schema import SERVICES

COMMAND = "facewire config reference > docs/configuration.md"

INTRO = f"""\
# Configuration reference

<!-- Generated from config/schema.py by `{COMMAND}`; do not edit. -->

Every setting of every service: its dotted key (as in the YAML files), the
environment variable and the flag that set it, its type, default, range or choices.
Settings are applied in this order, later wins:

1. the defaults below,
2. the YAML file: `--config PATH`, else the shipped `config/<service>.yaml`. A file
   may name others under `include:` (paths relative to it), which it then overrides;
   the shipped `edge.yaml` and `classifier.yaml` both include `pipeline.yaml`, so the
   face pipeline the two must share is set in one place,
3. environment variables: `FACEWIRE_` and the dotted key in capitals with `_` for
   each `.`, e.g. `FACEWIRE_PIPELINE_DETECTOR_KIND=haar`; `FACEWIRE_BROKER` is
   `broker.url`. For a setting that may be `null`, an empty value means `null`,
4. the flags in the tables.

Each source is checked the same way: an unknown key, a value of the wrong type (a
whole number is needed where the type is `int`: `2.7` is refused, not truncated) or
out of range stops the service with a message naming the key, the value and what is
allowed. A `FACEWIRE_*` variable that is no setting of any service is an error too;
one that is a setting of another service is ignored, so services can share an
environment. `facewire config show <service>` prints the settings a service would
run with, and `facewire eval` takes the `pipeline` and `search` settings and flags.
"""


def render() -> str:
    out = [INTRO]
    used_by: dict[str, list[str]] = {}
    for service, cls in SERVICES.items():
        for key, _, _ in sections(cls):
            used_by.setdefault(key, []).append(service)
    for service, cls in SERVICES.items():
        out.append(f"## {service}\n")
        out.append(f"{_doc(cls)} File: `config/{service}.yaml`.\n")
        own = [leaf for leaf in leaves(cls) if "." not in leaf.key]
        out.append(_table(own, cls))
        subs = [name for name, (tp, _) in children(cls).items() if is_section(tp)]
        links = ", ".join(f"[{s}](#{s.replace('.', '')})" for s in subs)
        out.append(f"Sections: {links}.\n")
    out.append("## Sections\n")
    done: set[str] = set()
    for cls in SERVICES.values():
        for key, sub, meta in sections(cls):
            if key in done:
                continue
            done.add(key)
            out.append(f"### {key}\n")
            users = ", ".join(used_by[key])
            out.append(f"{_doc(sub) or meta.help} Used by: {users}.\n")
            depth = key.count(".") + 1
            own = [leaf for leaf in leaves(sub, key + ".") if leaf.key.count(".") == depth]
            out.append(_table(own, cls))
    out.append("## Other environment variables\n")
    out.append("Read by the commands, not settings of a service:\n")
    out.append("| variable | what |\n| --- | --- |")
    out += [f"| `{name}` | {_cell(text)} |" for name, text in OTHER_ENV.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


def _table(rows: list[Leaf], cls: type) -> str:
    env = env_settings(cls)
    names: dict[str, list[str]] = {}
    for name, leaf in env.items():
        names.setdefault(leaf.key, []).append(name)
    lines = [
        "| key | type | default | range / choices | env | flag | description |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for leaf in rows:
        envs = ", ".join(f"`{n}`" for n in sorted(names[leaf.key], key=len, reverse=True))
        flag = f"`{leaf.meta.flag}`" if leaf.meta.flag else ""
        bounds = leaf.bounds()
        lines.append(
            f"| `{leaf.key}` | {leaf.type_name()} | `{format_value(leaf.default)}` "
            f"| {_cell(bounds)} | {envs} | {flag} | {_cell(leaf.meta.help)} |"
        )
    return "\n".join(lines) + "\n"


def _doc(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(f"{cls.__name__}("):  # dataclass's generated signature
        return ""
    return doc.split("\n\n")[0].replace("\n", " ")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


if __name__ == "__main__":
    raise SystemExit(main())
