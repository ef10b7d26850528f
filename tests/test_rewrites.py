"""Graph rewrites at load time: the same numbers from the real SFace file, on real faces."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from facewire.config.schema import PipelineConfig
from facewire.models import FacePipeline
from facewire.models.embedders import file_model_id, get_embedder, session_options
from facewire.models.files import list_photos
from facewire.models.rewrites import branch_free_prelu
from tests.conftest import DATASET


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Aligned, masked crops of real faces, as the edge makes them."""
    from facewire.models.tools.face_landmark import prepare_face_landmark
    from facewire.models.tools.prepare import prepare_sface, prepare_yunet

    prepare_sface()
    prepare_yunet()
    prepare_face_landmark()
    pipeline = FacePipeline(PipelineConfig())
    try:
        out = []
        for person in sorted((DATASET / "probes").iterdir())[:6]:
            for photo in list_photos(person)[:2]:
                out += [f.crop for f in pipeline.get(cv2.imread(str(photo))) if f.crop is not None]
    finally:
        pipeline.close()
    assert len(out) >= 10
    return out


def test_sface_loads_without_prelu_and_gives_the_same_numbers(crops):
    embedder = get_embedder("sface")
    assert embedder.rewritten == 27
    on_disk = onnx.load(str(embedder.path))
    assert sum(n.op_type == "PRelu" for n in on_disk.graph.node) == 27
    as_shipped = ort.InferenceSession(
        str(embedder.path), session_options(), providers=["CPUExecutionProvider"]
    )
    batch = embedder.preprocess(crops)
    for one in (batch, batch[:1], batch[3:4]):  # a batch and single crops
        want = as_shipped.run(None, {"data": one})[0]
        got = embedder.session.run(None, {"data": one})[0]
        assert np.array_equal(got, want)
    # the file is untouched, so vectors stay comparable with every gallery made before
    assert embedder.model_id == file_model_id("sface", embedder.path)
    rewritten = on_disk
    assert branch_free_prelu(rewritten) == 27
    assert not any(n.op_type == "PRelu" for n in rewritten.graph.node)
    # 25 of SFace's PRelu ops have every slope ≤ 1 (Mul + Max); two have a slope
    # above 1 and take Relu + Min + Mul + Add
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Max") == 25 and ops.count("Relu") == 2


def test_a_prelu_whose_slope_is_computed_is_left_alone():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "s"], ["y"])],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert branch_free_prelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["PRelu"]


def _prelu_model(slopes: np.ndarray):
    from onnx import TensorProto, helper, numpy_helper

    c = len(slopes)
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "s"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, c, 7, 7])],
        [numpy_helper.from_array(slopes.reshape(c, 1, 1), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "slopes, form",
    [
        ([-0.8, 0.25, 1.0, 0.5], "Max"),  # every slope ≤ 1
        ([-0.8, 0.0, 0.25, 1.0, 1.12], "Relu"),  # one above 1, one zero
        ([0.0, 0.5, 0.25, 0.1], "Relu"),  # a zero slope: 0·inf would be a NaN in Max
    ],
)
def test_every_value_gives_prelu_s_answer(slopes, form):
    rng = np.random.default_rng(1)
    chosen = np.array(slopes, np.float32)
    x = rng.normal(size=(2, len(chosen), 7, 7)).astype(np.float32) * 100
    x[:, :, 0, :4] = [0.0, -0.0, np.inf, -np.inf]
    x[:, :, 1, 0] = np.nan
    x[:, :, 1, 1] = 1e-42  # a denormal
    model = _prelu_model(chosen)
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert branch_free_prelu(model) == 1
    assert form in [n.op_type for n in model.graph.node]
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    # equal values, NaN where PRelu gives NaN (a zero's sign may differ)
    assert np.array_equal(got, want, equal_nan=True)
    slope = chosen.reshape(1, -1, 1, 1)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(want, np.where(x > 0, x, slope * x), equal_nan=True)


def test_a_slope_that_is_not_finite_is_left_alone():
    model = _prelu_model(np.array([0.5, np.inf], np.float32))
    assert branch_free_prelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["PRelu"]


def test_as_shipped_loads_the_file_unchanged(monkeypatch):
    from facewire.models.embedders import OnnxEmbedder

    monkeypatch.setattr(OnnxEmbedder, "rewrites_enabled", False)
    assert get_embedder("sface").rewritten == 0
