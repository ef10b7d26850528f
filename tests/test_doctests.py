"""The package folders' doctests are collected under the installed names (``facewire.*``),
and a module that needs a missing optional extra is skipped, not an error."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

# collect models/ with torch blocked, as if the `export` extra were not installed
COLLECT = """
import sys
sys.modules["torch"] = None
import pytest
code = pytest.main(["-p", "no:cacheprovider", "--collect-only", "-q", "-rs", "models"])
print("imported:", sorted(m for m in sys.modules if m.split(".")[0] == "models"
                          or m == "facewire.models.commands"))
sys.exit(code)
"""


def test_doctests_are_collected_by_installed_name_and_skipped_without_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-c", COLLECT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    assert "models/face.py::facewire.models.face.Quality.measure" in ids
    assert "models/pipeline.py::facewire.models.pipeline.crop_tag" in ids
    assert "facewire.models.tools.clip_tower needs torch" in done.stdout
    # no second copy under the folder's name, and files without doctests not imported
    assert "imported: []" in done.stdout
