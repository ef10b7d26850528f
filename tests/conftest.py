from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "dataset"
#: the people of the small gallery tests copy (``gallery_dir``)
GALLERY_PEOPLE = ("ORL_s01", "ORL_s02", "ORL_s03")

#: Modules whose tests cross a process or network boundary, export models, build
#: wheels or drive a browser: the full suite runs them, the fast tier
#: (``-m "not slow"``) does not. Tests using the ``mosquitto`` fixture are slow too.
SLOW_MODULES = frozenset(
    {
        "test_bench",
        "test_bench_screen",
        "test_broker_auth",
        "test_client",
        "test_clip_export",
        "test_compose",
        "test_demo",
        "test_doctor",
        "test_end_to_end",
        "test_faults",
        "test_fuzz_live",
        "test_eval",
        "test_monitor",
        "test_monitor_browser",
        "test_monitor_html",
        "test_packaging",
        "test_screenshots",
        "test_sealed",
        "test_sface_prepare",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if name in SLOW_MODULES or "mosquitto" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker on a free port for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


@pytest.fixture
def gallery_dir(tmp_path: Path) -> Path:
    """A gallery of three people of the sample, copied: a test may change it."""
    import shutil

    root = tmp_path / "gallery"
    for person in GALLERY_PEOPLE:
        shutil.copytree(DATASET / "gallery" / person, root / person)
    return root
