"""Who may import whom (DESIGN.md, "Layout"): the services talk only over the broker,
``models`` knows nothing of MQTT and ``bus`` nothing of models; the monitor uses the bus
alone. Tooling (the CLI, ``facewire eval``, benchmarks) may import everything, and
nothing running imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: folder → the facewire packages its modules may import (besides itself and the
#: ``facewire`` top level's ``config`` and ``__version__``)
ALLOWED = {
    "bus": {"config"},
    "models": {"config"},
    "config": set(),
    "edge": {"bus", "models", "config"},
    "classifier": {"bus", "models", "config"},
    "monitor": {"bus", "config"},
}
#: tooling no running service imports
TOOLING = {"evaluation", "bench", "devtools", "cli", "demo"}


def imports(path: Path) -> list[str]:
    """The ``facewire.<package>`` names a module imports (at any depth)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "facewire" and len(parts) > 1:
                found.append(parts[1])
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_part_imports_only_what_it_may(folder: str) -> None:
    allowed = ALLOWED[folder] | {folder, "__version__"}
    wrong = [
        f"{path.relative_to(ROOT)} imports facewire.{name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imports(path)
        if name not in allowed
    ]
    assert not wrong, "\n".join(wrong)


def test_no_running_service_imports_tooling() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports facewire.{name}"
        for folder in ALLOWED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in imports(path)
        if name in TOOLING
    ]
    assert not wrong, "\n".join(wrong)


def test_the_rule_sees_an_import_across_services(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from facewire.edge.quality import passes\nimport facewire.monitor.app\n"
        "from facewire import config\nfrom .local import x\n"
    )
    assert imports(module) == ["edge", "edge", "monitor", "config"]
