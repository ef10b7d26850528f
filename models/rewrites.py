"""Exact rewrites of an ONNX graph, applied in memory when a model loads.

Each rewrite computes the same float products and sums, so the outputs are equal
values (a zero's sign may differ), from fewer CPU cycles; the file on disk, and so its
model id, is unchanged.

``branch_free_prelu``: ONNX Runtime's CPU ``PRelu`` picks ``x`` or ``slope·x`` element
by element with a branch, so its time depends on the signs in the data, and a real
face's feature maps, with signs that look random to the branch predictor, make it
the slowest op of SFace (docs/benchmarks.md). The same values come from ops without
a branch:

- every slope ≤ 1 and none 0: ``Max(x, slope·x)``: for ``x < 0``, ``slope·x ≥ x``, so
  the maximum is ``slope·x``; for ``x ≥ 0`` it is ``x`` (a zero slope would make
  ``0·inf`` a NaN);
- otherwise: ``Relu(x) + slope·Min(x, 0)``: one term is exactly zero, and adding a
  zero changes nothing.

A slope that is not finite, or not a float32 weight, leaves its ``PRelu`` as it is.

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
    names = {x for n in graph.node for x in (*n.input, *n.output)} | set(weights)
    names |= {v.name for v in (*graph.input, *graph.output)} | {n.name for n in graph.node}

    def fresh(base: str) -> str:
        name, n = base, 1
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.add(name)
        return name

    nodes, rewritten, zero = [], 0, ""
    for node in graph.node:
        slope = None
        if node.op_type == "PRelu" and node.domain in ("", "ai.onnx") and node.input[1] in weights:
            slope = numpy_helper.to_array(weights[node.input[1]])
        if slope is None or slope.dtype != np.float32 or not np.all(np.isfinite(slope)):
            nodes.append(node)
            continue
        (x, slope_name), y = node.input, node.output[0]
        tag = f"{y}_branch_free"  # an output name is unique in a graph
        if float(slope.max()) <= 1.0 and not np.any(slope == 0):
            sx = fresh(f"{tag}_sx")
            nodes += [
                helper.make_node("Mul", [x, slope_name], [sx], name=fresh(f"{tag}_mul")),
                helper.make_node("Max", [x, sx], [y], name=fresh(f"{tag}_max")),
            ]
        else:
            if not zero:
                zero = fresh(ZERO)
                graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
            pos, neg, sneg = fresh(f"{tag}_pos"), fresh(f"{tag}_neg"), fresh(f"{tag}_sneg")
            nodes += [
                helper.make_node("Relu", [x], [pos], name=fresh(f"{tag}_relu")),
                helper.make_node("Min", [x, zero], [neg], name=fresh(f"{tag}_min")),
                helper.make_node("Mul", [neg, slope_name], [sneg], name=fresh(f"{tag}_mul")),
                helper.make_node("Add", [pos, sneg], [y], name=fresh(f"{tag}_add")),
            ]
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten
