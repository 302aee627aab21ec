"""Converters of Gemm / MatMul (fully connected, ``[N, K] x [K, M]`` with constant weights,
stored as ``[M, K, 1, 1]``), Softmax (over the last axis, or a channel-group softmax of an NCHW
tensor) and ArgMax.
"""

from __future__ import annotations

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import AxisAttrs, FcAttrs, GroupSoftmaxAttrs, Op, ReshapeAttrs


def gemm(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Gemm -> fc: alpha/beta folded into the constant B and C; transA must be 0."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    if int(a.get("transA", 0)):
        raise Unsupported("transA=1 is not supported (the activation must be the left operand)")
    b = ctx.const(node, 1, "B")
    c = ctx.const(node, 2, "C")
    if b.ndim != 2 or len(x.shape) != 2:
        raise Unsupported("only 2-D Gemm is supported")
    w = b.T if not int(a.get("transB", 0)) else b
    alpha = float(a.get("alpha", 1.0))
    if alpha != 1.0 or w.dtype != np.float32:   # (float32 weights times 1.0: themselves)
        w = w.astype(np.float64) * alpha
    m = w.shape[0]
    if w.shape[1] != x.shape[1]:  # checked before C, whose check needs the right M
        raise Unsupported(f"B of shape {list(b.shape)} (transB={int(a.get('transB', 0))}) "
                          f"does not match input {list(x.shape)}")
    if c is not None and c.size != 1 and (c.size != m or c.shape[-1] != m):
        raise Unsupported(f"bias C of shape {list(c.shape)} is not per-output (M={m})")
    bias = np.zeros(m) if c is None else np.broadcast_to(
        c.astype(np.float64).reshape(-1), (m,)).copy()
    bias = bias * float(a.get("beta", 1.0))
    _emit_fc(ctx, node, x, w, bias)


def matmul(ctx: Ctx, node: onnx.NodeProto) -> None:
    """MatMul with a constant right operand [K, M] -> fc (a following Add folds into bias)."""
    x = ctx.get(node, 0)
    b = ctx.const(node, 1, "B")
    if b.ndim != 2 or len(x.shape) != 2:
        raise Unsupported("only [N,K] x [K,M] MatMul with a constant right operand is supported")
    _emit_fc(ctx, node, x, b.T.astype(np.float64), np.zeros(b.shape[1]))


def _emit_fc(ctx, node, x: Value, w: np.ndarray, bias: np.ndarray) -> None:
    if w.shape[1] != x.shape[1]:
        raise Unsupported(f"weight K={w.shape[1]} does not match input {x.shape}")
    wv = Value(ctx.g.fresh_name(node.input[1]), (w.shape[0], w.shape[1], 1, 1), "float32",
               const=np.asarray(w.reshape(w.shape[0], w.shape[1], 1, 1), np.float32))
    bv = Value(ctx.g.fresh_name(node.output[0] + "_bias"), (w.shape[0],), "float32",
               const=bias.astype(np.float32))
    ctx.emit(Op.FC, node, [x, wv, bv], FcAttrs())


def softmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Softmax: host-side op at the graph end, over one axis followed only by size-1 dims.

    Before opset 13 ONNX flattens the input to 2-D at ``axis`` (default 1) and normalises over
    all of ``dims[axis:]``; from 13 it normalises over ``axis`` (default -1) alone. The two
    agree with a softmax over ``axis`` when every dim after it is 1 (e.g. axis 1 of the
    [1, 1000, 1, 1] a global pool gives, as SqueezeNet has): that is the form accepted.
    """
    x = ctx.get(node, 0)
    rank = len(x.shape)
    axis = int(attrs_of(node).get("axis", 1 if ctx.opset < 13 else -1))
    if not -rank <= axis < rank:
        raise Unsupported(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    src = _group_softmax_source(ctx, x, axis)
    if src is not None:
        g = x.shape[2]
        y = ctx.emit(Op.GROUP_SOFTMAX, node, [src], GroupSoftmaxAttrs(g),
                     out_name=f"{node.output[0]}_grouped")
        ctx.emit(Op.RESHAPE, node, [y], ReshapeAttrs(x.shape))
        return
    if any(d != 1 for d in x.shape[axis + 1:]):
        raise Unsupported(f"Softmax over axis {axis} of {x.shape}: only a softmax over the "
                          "last axis, or an axis followed by size-1 dims, is supported")
    ctx.emit(Op.SOFTMAX, node, [x], AxisAttrs(axis=-1 if axis == rank - 1 else axis))


def _group_softmax_source(ctx: Ctx, x: Value, axis: int) -> Value | None:
    """The NCHW tensor ``[N, C, H, W]`` whose channel groups a Softmax normalises, or None:
    the Softmax reads a Reshape of it to ``[N, C / g, g, H * W]`` and normalises axis 2
    alone (opset >= 13, or H * W = 1), i.e. each pixel's channels ``[k * g, (k + 1) * g)``
    together -- the NPU's group softmax (YOLOv8's DFL as frontend/dfl.py rewrites it)."""
    src = x.producer.inputs[0] if x.producer is not None and x.producer.op is Op.RESHAPE \
        else None
    if src is None or len(src.shape) != 4 or len(x.shape) != 4 or axis != 2:
        return None
    n, c, h, w = src.shape
    g = x.shape[2]
    if g < 2 or x.shape != (n, c // g, g, h * w) or c % g or (ctx.opset < 13 and h * w != 1):
        return None
    return src


def argmax(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ArgMax: host-side op at the graph end."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    if int(a.get("select_last_index", 0)):
        raise Unsupported("select_last_index=1 is not supported")
    ctx.emit(Op.ARGMAX, node, [x], AxisAttrs(axis=int(a.get("axis", 0)),
                                              keepdims=bool(int(a.get("keepdims", 1)))))
