from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "dataset"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh broker on a free port for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()
