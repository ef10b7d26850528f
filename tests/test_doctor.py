"""``facewire doctor``, ``facewire status`` and ``facewire edge install-service``
(issue 13, items 5 and 6): against the compose services run as real processes, a real
broker's refusals, real model files (one tampered with) and a gallery with faults."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from facewire.devtools.broker import free_port
from facewire.edge.service_unit import Unit, render_unit
from tests.compose_rig import EDGE_NODE, ROOT, Stack, wait_for

DATASET = ROOT / "dataset"


def facewire(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "facewire", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("doctor")).start()
    try:
        classifier = s.services["classifier"]
        wait_for(lambda: "classifier: connected to" in classifier.output(), 240, "it", classifier)
        edge = s.start_edge(DATASET / "probes" / "ORL_s02")
        wait_for(lambda: "sent" in edge.output() or edge.proc.poll() is None, 30, "the edge")
        yield s
    finally:
        s.stop()


def operator_env(stack: Stack, **extra: str) -> dict[str, str]:
    """What an operator on the server has: the monitor's account, the CA."""
    env = stack.services["monitor"].environment()
    env.update(extra)
    return env


def test_status_prints_the_nodes_and_the_classifier(stack: Stack) -> None:
    def shown() -> subprocess.CompletedProcess[str] | None:
        done = facewire("status", "--wait", "1.5", env=operator_env(stack))
        return done if done.returncode == 0 and EDGE_NODE in done.stdout else None

    done = wait_for(shown, 60, "the node's status", *stack.services.values())
    out = done.stdout
    assert "state      online" in out
    assert "22 people" in out and "sface-" in out
    line = next(x for x in out.splitlines() if x.strip().startswith(EDGE_NODE))
    assert "online" in line and "sface-" in line


def test_doctor_passes_on_a_healthy_deployment(stack: Stack) -> None:
    done = facewire("doctor", "--dataset", str(DATASET / "gallery"), env=operator_env(stack))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ok    TLS: certificate checked for 127.0.0.1" in out
    assert "ok    logged in as monitor" in out
    assert "ok    22 people, 132 photos with a face" in out
    assert "the classifier is online with sface-" in out
    assert f"node {EDGE_NODE} (online) runs sface-" in out
    assert "0 problem(s)" in out


def test_doctor_says_what_is_wrong_with_the_broker(stack: Stack) -> None:
    env = operator_env(stack, FACEWIRE_BROKER_PASSWORD="not-the-password")
    done = facewire("doctor", "--no-gallery", env=env)
    assert done.returncode == 1
    assert "FAIL  login refused" in done.stdout and "facewire nodes passwd" in done.stdout
    # the wrong CA
    other = stack.work / "other-ca"
    from facewire import certs_cli
    from tests.secrets_rig import run_cli

    assert run_cli(certs_cli.main, "--dir", str(other), "init")[0] == 0
    env = operator_env(stack, FACEWIRE_BROKER_CA_CERTS=str(other / "tls" / "ca.crt"))
    done = facewire("doctor", "--no-gallery", env=env)
    assert done.returncode == 1 and "FAIL  TLS: the broker's certificate" in done.stdout
    # nobody there
    env = operator_env(stack, FACEWIRE_BROKER=f"mqtts://127.0.0.1:{free_port()}")
    done = facewire("doctor", "--no-gallery", env=env)
    assert done.returncode == 1 and "FAIL  cannot reach 127.0.0.1" in done.stdout
    assert "start mosquitto" in done.stdout


def test_doctor_finds_a_model_file_that_is_not_what_its_sidecar_says(
    stack: Stack, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for name in ("sface.onnx", "face_landmark.onnx", "yunet.onnx"):
        shutil.copy(ROOT / "models" / name, models / name)
        shutil.copy(ROOT / "models" / f"{name}.json", models / f"{name}.json")
    data = bytearray((models / "yunet.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (models / "yunet.onnx").write_bytes(bytes(data))
    env = operator_env(stack, FACEWIRE_PIPELINE_MODELS_DIR=str(models))
    done = facewire("doctor", "--no-gallery", env=env)
    assert done.returncode == 1
    assert "FAIL  yunet:" in done.stdout and "is not the file its sidecar describes" in done.stdout
    assert "facewire models prepare yunet --force" in done.stdout
    assert "ok    sface: sface.onnx" in done.stdout


def test_doctor_finds_an_edge_that_disagrees_on_the_model(stack: Stack, tmp_path: Path) -> None:
    edge = tmp_path / "edge.yaml"
    edge.write_text("node: porch\npipeline:\n  align: false\n")
    done = facewire("doctor", "--no-gallery", "--edge-config", str(edge), env=operator_env(stack))
    assert done.returncode == 1
    assert "FAIL  the edge config's pipeline makes sface-" in done.stdout
    assert "(wrong_model)" in done.stdout


def test_doctor_reports_the_gallery_s_faults(tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    src = DATASET / "gallery"
    # one person split into two folders: a near-duplicate pair
    photos = sorted((src / "ORL_s01").rglob("*.jpg"))
    (gallery / "ORL_s01").mkdir(parents=True)
    (gallery / "ORL_s01_again").mkdir()
    for i, p in enumerate(photos):
        shutil.copy(p, gallery / ("ORL_s01" if i % 2 else "ORL_s01_again") / p.name)
    shutil.copytree(src / "ORL_s02", gallery / "ORL_s02")
    # one photo only
    (gallery / "ORL_s03").mkdir()
    shutil.copy(sorted((src / "ORL_s03").rglob("*.jpg"))[0], gallery / "ORL_s03" / "one.jpg")
    # a photo without a face, and a person with nothing usable
    blank = np.full((240, 200, 3), 128, np.uint8)
    cv2.imwrite(str(gallery / "ORL_s02" / "wall.jpg"), blank)
    (gallery / "Nobody").mkdir()
    cv2.imwrite(str(gallery / "Nobody" / "wall.jpg"), blank)
    done = facewire("doctor", "--no-broker", "--dataset", str(gallery), env=None)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "warn  ORL_s02/wall.jpg: no face found" in out
    assert "FAIL  Nobody: no photo with a face" in out
    assert "warn  ORL_s03: one photo only" in out
    assert "warn  ORL_s01 and ORL_s01_again look like one person" in out
    assert "ORL_s02 and" not in out  # different people are not flagged
    # the cache the classifier keeps was used and refreshed, not bypassed
    assert (gallery / ".facewire-cache" / "sface.npz").exists()


# --- the Raspberry Pi's service -----------------------------------------------------


def test_install_service_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("node: door\n")
    exe = str(Path(sys.executable).parent / "facewire")
    done = facewire(
        "edge", "install-service", "--dry-run", "--unit-dir", str(tmp_path / "units"),
        "--config", str(config), "--exec", exe,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "units" / "facewire-edge.service"
    assert f"wrote {unit}" in done.stdout
    assert "would run: systemctl daemon-reload" in done.stdout
    assert "would run: systemctl enable facewire-edge.service" in done.stdout
    text = unit.read_text()
    sections: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = {}
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            sections[current].setdefault(key, []).append(value)
    svc = sections["Service"]
    assert svc["ExecStart"] == [f"{exe} edge --config {config}"]
    assert svc["User"] == ["facewire"] and svc["SupplementaryGroups"] == ["video"]
    assert svc["Restart"] == ["on-failure"] and svc["StandardOutput"] == ["journal"]
    assert "char-video4linux rw" in svc["DeviceAllow"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]
    if shutil.which("systemd-analyze"):
        check = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
        )
        mine = [x for x in check.stderr.splitlines() if str(unit) in x]
        assert check.returncode == 0 and not mine, check.stderr


def test_install_service_refuses_bad_input(tmp_path: Path) -> None:
    done = facewire("edge", "install-service", "--dry-run", "--unit-dir", str(tmp_path),
                    "--config", "relative/edge.yaml")  # fmt: skip
    assert done.returncode == 2 and "must be absolute" in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_repository_unit_is_the_one_install_service_writes() -> None:
    assert (ROOT / "deploy" / "facewire-edge.service").read_text() == render_unit(Unit())
