"""Per-channel affine ops (y = a[c] * x + b[c]) as depthwise 1x1 convolutions.

BatchNormalization, Mul/Add by a per-channel constant and leftover standalone activations
become depthwise 1x1 convs: the NPU runs them exactly (the per-channel weight quantizes
losslessly to +-127), and the folding passes can merge them into neighbouring convs.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import NO_ACT, Activation, ConvAttrs, Op


def make_affine(graph: Graph, src: Node, x: Value, scale: np.ndarray, shift: np.ndarray,
                act: Activation = NO_ACT) -> Node:
    """Insert ``act(scale[c] * x + shift[c])`` as a depthwise 1x1 conv right after ``src``.

    Args:
        src: the node being replaced (its name, position and provenance are reused).
        x: NCHW input value with C channels. scale, shift: float64 [C].

    Returns:
        The new node; its output is a fresh value shaped like ``x``.
    """
    c = x.shape[1]
    w = Value(graph.fresh_name(f"{src.name}_affine_w"), (c, 1, 1, 1), "float32",
              const=np.asarray(scale, np.float64).reshape(c, 1, 1, 1).astype(np.float32))
    b = Value(graph.fresh_name(f"{src.name}_affine_b"), (c,), "float32",
              const=np.asarray(shift, np.float64).reshape(c).astype(np.float32))
    out = Value(graph.fresh_name(src.output.name + "_affine"), x.shape, "float32")
    idx = graph.nodes.index(src)
    return graph.add_node(Op.CONV, graph.fresh_name(src.name + "_affine"), [x, w, b], [out],
                          ConvAttrs(kernel=(1, 1), group=c, act=act), source=src.source,
                          index=idx)


def is_affine(node: Node) -> bool:
    """True for a depthwise 1x1 conv without padding, stride or shortcut (a per-channel affine)."""
    if node.op is not Op.CONV:
        return False
    a = node.attrs
    x = node.inputs[0]
    return (a.kernel == (1, 1) and a.strides == (1, 1) and a.pads == (0, 0, 0, 0)
            and a.group == x.shape[1] == node.output.shape[1] and node.input(3) is None)


def affine_params(node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(scale [C], shift [C]) of an affine node, float64."""
    return (node.inputs[1].const.reshape(-1).astype(np.float64),
            node.inputs[2].const.reshape(-1).astype(np.float64))
