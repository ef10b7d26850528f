"""Exact rewrites of an ONNX graph, applied in memory when a model loads.

Each rewrite gives equal outputs (the same float operations on the same values) from
fewer CPU cycles; the file on disk, and so its model id, is unchanged.

``branch_free_prelu``: ONNX Runtime's CPU ``PRelu`` picks ``x`` or ``slope·x`` element
by element with a branch, so its time depends on the signs in the data, and a real
face's feature maps, with signs that look random to the branch predictor, make it
the slowest op of SFace (docs/benchmarks.md). The same values come from ops without
a branch:

- every slope ≤ 1: ``Max(x, slope·x)``: for ``x < 0``, ``slope·x ≥ x``, so the maximum
  is ``slope·x``; for ``x ≥ 0`` it is ``x``;
- otherwise: ``Relu(x) + slope·Min(x, 0)``: one term is exactly zero, and adding a
  zero changes nothing.

>>> import numpy as np, onnx, onnxruntime as ort
>>> from onnx import helper, numpy_helper, TensorProto
>>> slope = numpy_helper.from_array(np.array([[[-0.5]], [[0.25]], [[1.5]]], np.float32), "s")
>>> graph = helper.make_graph(
...     [helper.make_node("PRelu", ["x", "s"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])], [slope])
>>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
>>> x = np.random.default_rng(0).normal(size=(1, 3, 2, 2)).astype(np.float32)
>>> run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
>>> before = run(model)
>>> branch_free_prelu(model)
1
>>> sorted({n.op_type for n in model.graph.node})
['Add', 'Min', 'Mul', 'Relu']
>>> bool(np.array_equal(run(model), before))
True
"""

from __future__ import annotations

from typing import Any

ZERO = "branch_free_prelu_zero"


def branch_free_prelu(model: Any) -> int:  # model: onnx.ModelProto
    """Replace each ``PRelu`` whose slope is a weight by branch-free ops; returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        x, slope_name = node.input
        if slope_name not in weights:  # a slope computed at run time: leave it
            nodes.append(node)
            continue
        slope = numpy_helper.to_array(weights[slope_name])
        if slope.dtype != np.float32:
            nodes.append(node)
            continue
        y, tag = node.output[0], f"{node.name or node.output[0]}_branch_free"
        if float(np.max(slope)) <= 1.0:
            nodes += [
                helper.make_node("Mul", [x, slope_name], [f"{tag}_sx"], name=f"{tag}_mul"),
                helper.make_node("Max", [x, f"{tag}_sx"], [y], name=f"{tag}_max"),
            ]
        else:
            nodes += [
                helper.make_node("Relu", [x], [f"{tag}_pos"], name=f"{tag}_relu"),
                helper.make_node("Min", [x, ZERO], [f"{tag}_neg"], name=f"{tag}_min"),
                helper.make_node(
                    "Mul", [f"{tag}_neg", slope_name], [f"{tag}_sneg"], name=f"{tag}_mul"
                ),
                helper.make_node("Add", [f"{tag}_pos", f"{tag}_sneg"], [y], name=f"{tag}_add"),
            ]
        rewritten += 1
    if rewritten:
        if ZERO not in weights and any(ZERO in n.input for n in nodes):
            graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), ZERO))
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten
