"""Converters of ReduceSum and ReduceMax over H and W of an NCHW map (ReduceMean is in
spatial.py): ReduceSum = global average pool times H*W (a constant scale the float passes
fold into a neighbouring conv, or run as a per-channel affine), ReduceMax = a max pool whose
window is the whole map. ``axes`` is an attribute before opset 13 (ReduceSum) / 18 (ReduceMax)
and an input after (https://onnx.ai/onnx/operators/). :mod:`tcc_compiler.frontend.converters`
merges :data:`REDUCE_CONVERTERS` into its table.
"""

from __future__ import annotations

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import EltwiseAttrs, NoAttrs, Op, PoolAttrs, ReshapeAttrs


def _hw_input(ctx: Ctx, node: onnx.NodeProto) -> tuple[Value, bool]:
    """(the NCHW input, keepdims) of a reduction that must be over exactly H and W.

    Raises:
        Unsupported: other axes, a non-constant axes input, or another rank.
    """
    a = attrs_of(node)
    x = ctx.get(node, 0)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = ctx.const(node, 1, "axes")
    if axes is None or int(a.get("noop_with_empty_axes", 0)):
        raise Unsupported(f"{node.op_type} without axes reduces every axis; only H and W "
                          "(2, 3) are supported")
    axes = sorted(int(v) % max(len(x.shape), 1) for v in np.asarray(axes).reshape(-1))
    if len(x.shape) != 4 or axes != [2, 3]:
        raise Unsupported(f"{node.op_type} over axes {axes}; only over H and W (2, 3) is "
                          "supported")
    return x, bool(int(a.get("keepdims", 1)))


def _finish(ctx: Ctx, node: onnx.NodeProto, y: Value, keep: bool) -> None:
    if keep:
        ctx.alias(node.output[0], y)
    else:
        ctx.emit(Op.RESHAPE, node, [y], ReshapeAttrs((y.shape[0], y.shape[1])))


def reduce_sum(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ReduceSum over H, W -> gap, then times H*W."""
    x, keep = _hw_input(ctx, node)
    base = node.output[0]
    mid = ctx.emit(Op.GAP, node, [x], NoAttrs(), out_name=base + "__mean")
    k = ctx.add_const(ctx.g.fresh_name(base + "__area"),
                      np.array(float(x.shape[2] * x.shape[3]), np.float32))
    _finish(ctx, node, ctx.emit(Op.MUL, node, [mid, k], EltwiseAttrs(),
                                out_name=base if keep else base + "__sum"), keep)


def reduce_max(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ReduceMax over H, W -> max pool with the whole map as its window."""
    x, keep = _hw_input(ctx, node)
    base = node.output[0]
    y = ctx.emit(Op.MAXPOOL, node, [x], PoolAttrs(kernel=(x.shape[2], x.shape[3])),
                 out_name=base if keep else base + "__max")
    _finish(ctx, node, y, keep)


REDUCE_CONVERTERS = {"ReduceSum": reduce_sum, "ReduceMax": reduce_max}
