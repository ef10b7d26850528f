"""Preparing SFace from its PyPI wheel gives a file onnxruntime runs as is."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from facewire.models.embedders import get_embedder
from facewire.models.files import read_sidecar, sha256
from facewire.models.tools.prepare import SFACE_FILE, prepare_sface


def test_prepared_sface_loads_and_runs_batches(tmp_path):
    path = prepare_sface(tmp_path)
    assert path == tmp_path / SFACE_FILE
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["data"]
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    info = read_sidecar(path)
    assert info["sha256"] == sha256(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (3, 3, 112, 112)).astype(np.float32)
    out = session.run(None, {"data": x})[0]
    assert out.shape == (3, 128) and np.isfinite(out).all()
    emb = get_embedder("sface", str(tmp_path))
    assert emb.model_id == f"sface-{info['sha256'][:8]}"
    assert emb.dim == 128


def test_missing_model_says_how_to_make_it(tmp_path):
    import pytest

    from facewire.models.embedders import ModelFileMissing

    with pytest.raises(ModelFileMissing, match="facewire models export clip"):
        get_embedder("clip-vit-b32", str(tmp_path))
    with pytest.raises(ModelFileMissing, match="facewire models prepare sface"):
        get_embedder("sface", str(tmp_path))


def test_a_broken_model_file_says_which_and_how_to_make_it_again(tmp_path):
    import pytest

    from facewire.models.embedders import ModelFileBroken, OnnxEmbedder, model_path

    whole = model_path("sface").read_bytes()
    (tmp_path / "sface.onnx").write_bytes(whole[: len(whole) // 3])  # cut short
    for rewrites in (True, False):  # read by onnx to be rewritten, or by ONNX Runtime
        OnnxEmbedder.rewrites_enabled = rewrites
        try:
            with pytest.raises(ModelFileBroken, match="does not load") as caught:
                get_embedder("sface", str(tmp_path))
        finally:
            OnnxEmbedder.rewrites_enabled = True
        message = str(caught.value)
        assert str(tmp_path / "sface.onnx") in message
        assert "facewire models prepare sface" in message


def test_face_landmark_conversion_reads_tflite_with_a_checked_wheel(tmp_path):
    """``prepare face_landmark`` reads mediapipe's .tflite file with the ``tflite``
    wheel it downloads, and only with the wheel file whose hash it knows."""
    import pytest

    from facewire.models.mesh import LANDMARK_INPUT
    from facewire.models.tools.face_landmark import (
        TFLITE_WHEEL,
        TFLITE_WHEEL_SHA256,
        prepare_face_landmark,
    )
    from facewire.models.tools.fetch import fetch_wheel

    with pytest.raises(RuntimeError, match="sha256"):
        fetch_wheel(TFLITE_WHEEL, tmp_path / "wrong", "0" * 64)
    path = prepare_face_landmark(tmp_path)
    info = read_sidecar(path)
    assert TFLITE_WHEEL_SHA256 in info["reader"] and info["sha256"] == sha256(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    grey = np.full((1, LANDMARK_INPUT, LANDMARK_INPUT, 3), 0.5, np.float32)
    landmarks, face_flag = session.run(None, {"input": grey})
    assert landmarks.size == 468 * 3 and face_flag.size == 1
    assert face_flag.reshape(-1)[0] < 0  # a grey square is no face (logit below 0)


def test_prepare_all_downloads_nothing_when_the_files_are_there(tmp_path):
    import os
    import subprocess
    import sys

    for name in ("sface.onnx", "yunet.onnx", "face_landmark.onnx"):
        (tmp_path / name).write_bytes(b"already prepared")
    done = subprocess.run(
        [sys.executable, "-m", "facewire", "models", "--models-dir", str(tmp_path)]
        + ["prepare", "all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{name}: {tmp_path / (name + '.onnx')}" for name in ("sface", "yunet", "face_landmark")
    ]
