"""The installed distribution is `facewire` alone: no `config`, `models` or `bus` at the
top of anyone's site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("facewire-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_top_level_is_facewire_alone(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"facewire"}
    top_level = next(n for n in wheel.namelist() if n.endswith("top_level.txt"))
    assert wheel.read(top_level).decode().split() == ["facewire"]


def test_wheel_carries_every_part_and_its_data(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for module in (
        "bus/codec.py",
        "edge/daemon.py",
        "classifier/service.py",
        "monitor/app.py",
        "models/pipeline.py",
        "config/schema.py",
        "bench/pipeline.py",
        "models/tools/prepare.py",
        "devtools/broker.py",
    ):
        assert f"facewire/{module}" in names, module
    for data in ("config/edge.yaml", "config/classifier.yaml", "monitor/templates/log.html"):
        assert f"facewire/{data}" in names, data
    assert not [n for n in names if n.endswith(".onnx")], "model files are build artefacts"


def test_parts_import_only_under_facewire(tmp_path: Path) -> None:
    # outside the repository, so its folders are not on sys.path
    code = (
        "import importlib.util as u, facewire.bus.codec, facewire.models, facewire.config\n"
        "print([m for m in ('bus', 'models', 'config', 'edge', 'classifier', 'monitor', 'bench')"
        " if u.find_spec(m) is not None])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_services_run_without_the_tooling(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """A runtime image may leave out model preparation, benches and devtools."""
    site = tmp_path / "site"
    wheel.extractall(site)
    for tooling in ("facewire/models/tools", "facewire/bench", "facewire/devtools"):
        assert (site / tooling).is_dir()
        for f in sorted((site / tooling).rglob("*"), reverse=True):
            f.rmdir() if f.is_dir() else f.unlink()
        (site / tooling).rmdir()
    code = (
        "import sys\n"
        # this checkout's editable install must not fill in what the copy lacks
        "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]\n"
        f"sys.path.insert(0, {str(site)!r})\n"
        "import importlib\n"
        "for m in ('facewire.edge.__main__', 'facewire.classifier.__main__',\n"
        "          'facewire.monitor.cli', 'facewire.monitor.app', 'facewire.models.pipeline'):\n"
        "    assert importlib.import_module(m).__file__.startswith(sys.path[0]), m\n"
        "from facewire.cli import main\n"
        "raise SystemExit(main(['classifier', '--help']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "facewire classifier" in done.stdout
