"""Collects the doctests of the package folders (``bus/``, ``models/``, …).

pytest's own ``--doctest-modules`` would import ``models/face.py`` as ``models.face``,
a second copy beside the installed ``facewire.models.face``; here each file is imported
under its installed name (pyproject's ``package-dir``). Only files holding ``>>>`` (or
named on the command line) are imported, and a module that needs an optional extra
which is not installed (torch, transformers, Pillow, selenium) is skipped, not an
error.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Generator
from pathlib import Path
from types import ModuleType

import pytest
from _pytest.doctest import DoctestModule

ROOT = Path(__file__).resolve().parent
_PACKAGE_DIR: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]
# repository folder → installed package, for the top-level folders
FOLDERS = {folder: package for package, folder in _PACKAGE_DIR.items() if "/" not in folder}
# import names of the `export` and `dev` extras
OPTIONAL = frozenset({"torch", "transformers", "PIL", "selenium"})


def module_name(path: Path) -> str | None:
    """``facewire.models.tools.prepare`` for ``models/tools/prepare.py``; ``None``
    outside the package folders."""
    try:
        parts = path.resolve().relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] not in FOLDERS:
        return None
    names = [FOLDERS[parts[0]], *parts[1:]]
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


class PackageDoctests(DoctestModule):
    """A package module's doctests, the module imported by its installed name."""

    def _getobj(self) -> ModuleType:
        name = module_name(self.path)
        assert name is not None
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] in OPTIONAL:
                pytest.skip(f"{name} needs {exc.name}, an optional extra not installed here")
            raise


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(
    file_path: Path, parent: pytest.Collector
) -> Generator[None, list[pytest.Collector], list[pytest.Collector]]:
    collected = yield
    if file_path.suffix != ".py" or module_name(file_path) is None:
        return collected
    # pytest's own collectors (a file named on the command line, --doctest-modules)
    # would import it under its folder's name
    kept = [c for c in collected if not isinstance(c, pytest.Module)]
    if file_path.name in ("__main__.py", "conftest.py"):
        return kept
    if parent.session.isinitpath(file_path) or b">>>" in file_path.read_bytes():
        kept.append(PackageDoctests.from_parent(parent, path=file_path))
    return kept
