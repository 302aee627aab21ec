"""Converters of the elementwise ops: Relu, Clip, Add / Sum / Mul, Sub and Div.

Binary ops run on same-shape operands, a per-channel constant, or an ``[N, C, 1, 1]``
activation broadcast over ``[N, C, H, W]`` (a squeeze-excitation gate); Clip takes min/max as
attributes before opset 11 and as optional constant inputs from 11 (ONNX operator docs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tcc_compiler.frontend.activations import clip_lut
from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import ActAttrs, Activation, ActKind, EltwiseAttrs, Op, RELU


def relu(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Relu."""
    ctx.emit(Op.RELU, node, [ctx.get(node, 0)], ActAttrs(RELU))


def clip(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Clip: min/max attributes before opset 11, optional constant inputs from 11."""
    a = attrs_of(node)
    if ctx.opset < 11:
        flt_max = float(np.finfo(np.float32).max)  # the schema's defaults before opset 11
        lo, hi = float(a.get("min", -flt_max)), float(a.get("max", flt_max))
    else:
        lo_a, hi_a = ctx.const(node, 1, "min"), ctx.const(node, 2, "max")
        lo = float(lo_a) if lo_a is not None else float("-inf")
        hi = float(hi_a) if hi_a is not None else float("inf")
    big = 3.0e38  # FLT_MAX (the pre-11 defaults) and beyond count as unbounded
    lo, hi = (float("-inf") if lo <= -big else lo), (float("inf") if hi >= big else hi)
    if lo == float("-inf") and hi == float("inf"):  # no bounds: Clip is the identity
        ctx.alias(node.output[0], ctx.get(node, 0))
        return
    if lo == 0.0 and hi == float("inf"):
        act = RELU
    else:
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo > 0 or hi < 0:
            clip_lut(ctx, node, ctx.get(node, 0), lo, hi)   # one-sided or excluding 0
            return
        act = Activation(ActKind.CLIP, lo, hi)
    ctx.emit(Op.CLIP, node, [ctx.get(node, 0)], ActAttrs(act))


def binary(op: Op) -> Callable[[Ctx, onnx.NodeProto], None]:
    """The converter of Add / Sum / Mul as IR ``op``: a Sum of n inputs becomes n - 1 binary
    nodes (a Sum of one input an alias); operands as :func:`_operands` accepts them.

    Raises (from the converter):
        Unsupported: a missing input, or operand shapes the NPU cannot broadcast.
    """
    def convert(ctx: Ctx, node: onnx.NodeProto) -> None:
        ins = [ctx.get(node, i) for i in range(len(node.input))]
        if any(v is None for v in ins) or len(ins) < 1:
            raise Unsupported("missing input")
        acc = ins[0]
        if len(ins) == 1:  # Sum of one input
            ctx.alias(node.output[0], acc)
            return
        for k, v in enumerate(ins[1:], start=1):
            a, b = _operands(acc, v)
            last = k == len(ins) - 1
            name = node.output[0] if last else f"{node.output[0]}__sum{k}"
            acc = ctx.emit(op, node, [a, b], EltwiseAttrs(), out_name=name)
    return convert


def is_channel_vector(b: tuple[int, ...], a: tuple[int, ...]) -> bool:
    """True when shape ``b`` is [N, C, 1, 1] against a rank-4 ``a`` = [N, C, H, W] (a
    squeeze-excitation gate), H * W > 1."""
    return (len(a) == len(b) == 4 and b[:2] == a[:2] and b[2:] == (1, 1)
            and a[2] * a[3] > 1)


def _operands(a: Value, b: Value, commutative: bool = True) -> tuple[Value, Value]:
    """(full-shape activation, other operand) of a binary op; Unsupported when the shapes
    cannot run (only same shapes, per-channel constants and [N,C,1,1] activations broadcast
    over [N,C,H,W])."""
    if commutative and (a.is_const and not b.is_const or is_channel_vector(a.shape, b.shape)):
        a, b = b, a
    if a.is_const:
        raise Unsupported("constant first operand" if not commutative
                          else "both operands constant (should have been folded)")
    if b.is_const:
        _check_per_channel(a, b)
    elif a.shape != b.shape and not is_channel_vector(b.shape, a.shape):
        raise Unsupported(f"operand shapes {a.shape} and {b.shape}: only same-shape operands, "
                          "per-channel constants and an [N,C,1,1] activation broadcast over "
                          "[N,C,H,W] are supported")
    return a, b


def sub_op(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Sub: two activations -> sub; ``x - c`` -> add of ``-c``; ``c - x`` -> mul by -1 then
    add of ``c`` (both folded into affines by the passes)."""
    a, b = ctx.get(node, 0), ctx.get(node, 1)
    if a is None or b is None:
        raise Unsupported("missing input")
    if b.is_const and not a.is_const:
        nb = ctx.add_const(ctx.g.fresh_name(node.output[0] + "_neg"), -b.const)
        _check_per_channel(a, nb)
        ctx.emit(Op.ADD, node, [a, nb], EltwiseAttrs())
        return
    if a.is_const and not b.is_const:
        _check_per_channel(b, a)
        m1 = ctx.add_const(ctx.g.fresh_name(node.output[0] + "_m1"), np.float32(-1.0))
        neg = ctx.emit(Op.MUL, node, [b, m1], EltwiseAttrs(), out_name=node.output[0] + "__neg")
        ctx.emit(Op.ADD, node, [neg, a], EltwiseAttrs())
        return
    a, b = _operands(a, b, commutative=False)
    ctx.emit(Op.SUB, node, [a, b], EltwiseAttrs())


def div_op(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Div by a constant (scalar or per-channel, no zeros) -> mul by its reciprocal."""
    a = ctx.get(node, 0)
    c = ctx.const(node, 1, "divisor")
    if a is None or a.is_const:
        raise Unsupported("only an activation divided by a constant is supported")
    if np.any(np.asarray(c) == 0):
        raise Unsupported("division by a constant that holds 0")
    inv = ctx.add_const(ctx.g.fresh_name(node.output[0] + "_inv"),
                        (1.0 / np.asarray(c, dtype=np.float64)).astype(np.float32))
    _check_per_channel(a, inv)
    ctx.emit(Op.MUL, node, [a, inv], EltwiseAttrs())


def _check_per_channel(a: Value, b: Value) -> None:
    arr = b.const
    c = a.shape[1] if len(a.shape) >= 2 else 1
    if arr.size == 1:
        return
    if arr.size != c:
        raise Unsupported(f"constant operand of shape {arr.shape} is not per-channel for input "
                          f"{a.shape}")
    # must broadcast along axis 1 only
    shape = (1,) * (len(a.shape) - arr.ndim) + arr.shape
    if len(shape) != len(a.shape) or shape[1] != c:
        raise Unsupported(f"constant operand of shape {arr.shape} does not broadcast per channel")
