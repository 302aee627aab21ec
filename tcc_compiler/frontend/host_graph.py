"""Rewrites of a host segment's ONNX graph so that ONNX Runtime runs it at memory speed.

ONNX Runtime (1.32, CPU) runs a Softmax over an axis followed by two or more dims through a
generic transposing path that is 50-80x slower than over an axis followed by one dim: YOLOv8's
DFL Softmax over axis 1 of [1, 16, 4, 8400] took 85 ms, the same values as [1, 16, 33600]
over axis 1 took 1.1 ms (one core, measured with ``onnxruntime.InferenceSession`` on the
development machine). Flattening the trailing dims is exact: Softmax normalises each line along
its axis independently, and a Reshape keeps every line's elements and order; ONNX Runtime runs
the Reshapes in place (no copy).

:func:`flatten_softmax_tails` wraps each such Softmax (opset >= 13 semantics, the axis alone)
in ``Reshape -> Softmax -> Reshape``. The host-time estimate is unchanged
(:mod:`tcc_compiler.target.host`: Reshape moves no bytes).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper


def flatten_softmax_tails(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``proto`` with every Softmax over an axis followed by >= 2 dims computed on
    the tensor reshaped to ``dims[:axis + 1] + [product of the trailing dims]``.

    Args:
        proto: an ONNX model whose Softmax inputs have static shapes in ``value_info`` or
            ``input`` (others are left alone); default-domain opset >= 13 (else unchanged:
            older Softmax flattens to 2-D by definition).

    Returns:
        (the rewritten model, number of Softmax nodes rewritten); ``proto`` is not changed.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    opset = max((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < 13:
        return out, 0
    g = out.graph
    dims = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
            for vi in list(g.input) + list(g.value_info) + list(g.output)
            if vi.type.tensor_type.HasField("shape")}
    nodes, count = [], 0
    for n in g.node:
        shape = dims.get(n.input[0]) if n.op_type == "Softmax" and n.domain in ("", "ai.onnx") \
            else None
        if not shape or any(d <= 0 for d in shape):
            nodes.append(n)
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1) % len(shape)
        if len(shape) - axis - 1 < 2:
            nodes.append(n)
            continue
        nodes.extend(_wrapped(g, n, shape, axis, count))
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    return out, count


def _wrapped(g: onnx.GraphProto, n: onnx.NodeProto, shape: list[int], axis: int,
             k: int) -> list[onnx.NodeProto]:
    """Reshape -> ``n`` -> Reshape, ``n``'s trailing dims after ``axis`` flattened; adds the
    two shape initializers to ``g``."""
    flat = shape[:axis + 1] + [math.prod(shape[axis + 1:])]
    base = f"{n.name or n.output[0]}_flat{k}"
    g.initializer.extend([numpy_helper.from_array(np.array(flat, np.int64), base + "_shape"),
                          numpy_helper.from_array(np.array(shape, np.int64), base + "_back")])
    x2, y2 = base + "_in", base + "_out"
    soft = helper.make_node("Softmax", [x2], [y2], name=n.name, axis=axis)  # axis >= 0
    return [helper.make_node("Reshape", [n.input[0], base + "_shape"], [x2], name=base + "_r"),
            soft,
            helper.make_node("Reshape", [y2, base + "_back"], [n.output[0]],
                             name=base + "_b")]
