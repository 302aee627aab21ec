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


def set_const(graph: Graph, node: Node, idx: int, arr: np.ndarray, tag: str) -> None:
    """Replace (or add) ``node``'s input ``idx`` with a new float32 constant holding ``arr``,
    named after the input it replaces (else ``<node><tag>``)."""
    old = node.input(idx)
    v = Value(graph.fresh_name(old.name if old is not None else node.name + tag), arr.shape,
              "float32", const=arr.astype(np.float32))
    graph.set_input(node, idx, v)


def scale_into(graph: Graph, p: Node, a: np.ndarray, c: np.ndarray) -> None:
    """Fold the per-channel affine ``a * y + c`` into conv/fc ``p``'s output: weights (OIHW /
    [O, I]) scaled by ``a[o]``, bias ``a * b + c`` (float64, stored float32). Non-finite
    results are refused by name after the passes (frontend/magnitudes.py)."""
    w = p.inputs[1].const.astype(np.float64)
    b = p.inputs[2].const.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        set_const(graph, p, 1, w * a.reshape((-1,) + (1,) * (w.ndim - 1)), "_w")
        set_const(graph, p, 2, b * a + c, "_b")


def absorb(graph: Graph, p: Node, aff: Node) -> None:
    """Remove affine ``aff`` folded into its producer ``p``: ``p`` takes its source names and
    ``aff``'s readers read ``p``'s output."""
    p.source = p.source + tuple(s for s in aff.source if s not in p.source)
    graph.replace_all_uses_with(aff.output, p.output)
    graph.remove_node(aff)
