"""One converter per ONNX op type: ONNX NodeProto -> IR nodes.

Each converter reads the node's attributes with the opset's rules (ONNX operator docs,
https://onnx.ai/onnx/operators/) and raises :class:`Unsupported` with the constraint that
failed. Attributes that change per opset are handled here (Clip min/max attribute vs input,
BatchNormalization is_test/spatial/training_mode, Pad pads attribute vs input).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import (ActAttrs, Activation, ActKind, AxisAttrs, BatchNormAttrs,
                                 ConvAttrs, EltwiseAttrs, FcAttrs, GroupSoftmaxAttrs, NoAttrs, Op,
                                 PoolAttrs, RELU, ReshapeAttrs)
from tcc_compiler.ir.shapes import infer_shape

log = logging.getLogger(__name__)


class Unsupported(Exception):
    """A node the NPU cannot run; the message says which constraint failed and what to do."""


class Downstream(Exception):
    """A node reads the output of a node already reported as unsupported (not re-reported)."""


class Ctx:
    """Conversion state: ONNX tensor name -> IR value, plus pending pads to fold into convs."""

    def __init__(self, graph: Graph, where: str, opset: int):
        self.g = graph
        self.where = where
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.onnx_shapes: dict[str, tuple[int, ...]] = {}
        self.pending_pad: dict[str, tuple[Value, tuple[int, int, int, int], str]] = {}
        self.poisoned: set[str] = set()

    def poison(self, node: onnx.NodeProto) -> None:
        """Mark the outputs of a refused node. Outputs whose shape ONNX inferred get a
        stand-in value (never part of a graph that is returned) so that the nodes reading them
        are still checked on their own merits; the others make readers raise
        :class:`Downstream`."""
        for name in node.output:
            if not name:
                continue
            self.poisoned.add(name)
            shape = self.onnx_shapes.get(name)
            if shape and all(d > 0 for d in shape):
                self.values[name] = Value(name, shape, "float32")

    def add_const(self, name: str, arr: np.ndarray) -> Value:
        """Register a constant tensor under its ONNX name."""
        v = Value(name, arr.shape, str(arr.dtype), const=arr)
        self.values[name] = v
        return v

    def add_input(self, name: str, shape: tuple[int, ...]) -> Value:
        """Register the graph's image input."""
        v = Value(name, shape, "float32")
        self.values[name] = v
        self.g.inputs.append(v)
        return v

    def lookup(self, name: str) -> Value | None:
        """The IR value for an ONNX tensor name, None when unknown."""
        return self.values.get(name)

    def get(self, node: onnx.NodeProto, i: int) -> Value | None:
        """Input ``i`` of ``node`` as an IR value (None when omitted)."""
        if i >= len(node.input) or node.input[i] == "":
            return None
        v = self.values.get(node.input[i])
        if v is None:
            if node.input[i] in self.poisoned:
                raise Downstream(node.input[i])
            if node.input[i] in self.pending_pad:
                raise Unsupported("Pad output is read by a node that cannot absorb padding "
                                  "(only Conv and MaxPool can)")
            raise Unsupported(f"input '{node.input[i]}' is not produced by a supported node")
        return v

    def const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        """Input ``i`` as a constant array, None if omitted; Unsupported if not constant."""
        v = self.get(node, i)
        if v is None:
            return None
        if not v.is_const:
            raise Unsupported(f"{what} (input {i}) must be a constant initializer")
        return v.const

    def emit(self, op: Op, node: onnx.NodeProto, inputs: list[Value | None], attrs,
             out_name: str | None = None) -> Value:
        """Append one IR node for ``node`` and return its output value."""
        out_name = out_name or node.output[0]
        shape = infer_shape(op, attrs, [v.shape if v is not None else None for v in inputs])
        expect = self.onnx_shapes.get(out_name)
        if expect and all(d > 0 for d in expect) and tuple(expect) != tuple(shape):
            raise Unsupported(f"computed shape {shape} differs from ONNX shape {expect}")
        out = Value(out_name, shape, "float32")
        name = node.name or out_name
        if any(n.name == name for n in self.g.nodes):
            name = self.g.fresh_name(name)
        self.g.add_node(op, name, inputs, [out], attrs, source=[node.name or out_name])
        self.values[out_name] = out
        return out

    def alias(self, onnx_name: str, value: Value) -> None:
        """Make an ONNX tensor name refer to an existing value (Identity, Dropout, views)."""
        self.values[onnx_name] = value


def attrs_of(node: onnx.NodeProto) -> dict:
    """The node's attributes as a plain dict of Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(v, n, default):
    return tuple(int(x) for x in v) if v is not None else (default,) * n


def _auto_pads(auto_pad: str, hw, kernel, strides, dilations) -> tuple[int, int, int, int]:
    """Explicit (t, l, b, r) pads for ONNX auto_pad SAME_UPPER / SAME_LOWER / VALID."""
    if auto_pad in ("", "NOTSET"):
        raise AssertionError
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    out = []
    for i in range(2):
        o = -(-hw[i] // strides[i])
        total = max(0, (o - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - hw[i])
        small, big = total // 2, total - total // 2
        out.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


def _spatial(ctx: Ctx, node: onnx.NodeProto, x: Value, kernel, a: dict):
    if len(x.shape) != 4:
        raise Unsupported(f"input rank {len(x.shape)}; only 2-D spatial (NCHW) is supported")
    strides = _ints(a.get("strides"), 2, 1)
    dil = _ints(a.get("dilations"), 2, 1)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", ""):
        pads = _auto_pads(auto, x.shape[2:], kernel, strides, dil)
    else:
        p = _ints(a.get("pads"), 4, 0)
        if len(p) != 4:  # checked before indexing: a 3-value pads was an IndexError (exit 1)
            raise Unsupported(f"pads {list(p)} has {len(p)} values; a 2-D kernel takes 4")
        pads = (p[0], p[1], p[2], p[3])
    if len(strides) != 2 or len(dil) != 2 or len(pads) != 4:
        raise Unsupported("only 2-D kernels are supported")
    return strides, pads, dil


def _take_pending_pad(ctx: Ctx, node: onnx.NodeProto, pads):
    """If the data input comes from a folded Pad, return (real input, pads summed)."""
    name = node.input[0]
    if name in ctx.pending_pad:
        src, extra, _ = ctx.pending_pad[name]
        return src, tuple(p + e for p, e in zip(pads, extra))
    return None, pads


def conv(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Conv (opset 1/11): weights and bias constant; auto_pad, group, dilations supported."""
    a = attrs_of(node)
    src = ctx.pending_pad.get(node.input[0])
    x = src[0] if src else ctx.get(node, 0)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias")
    if w.ndim != 4:
        raise Unsupported(f"weight rank {w.ndim}; only 2-D convolution is supported")
    kernel = tuple(int(k) for k in w.shape[2:])
    strides, pads, dil = _spatial(ctx, node, x, kernel, a)
    if src:
        pads = tuple(p + e for p, e in zip(pads, src[1]))
    group = int(a.get("group", 1))
    if x.shape[1] != w.shape[1] * group:
        raise Unsupported(f"input has {x.shape[1]} channels, weight expects "
                          f"{w.shape[1]} x group {group}")
    wv = ctx.g.fresh_name(node.input[1])
    wval = Value(wv, w.shape, "float32", const=w.astype(np.float32))
    bias = b if b is not None else np.zeros(w.shape[0], np.float32)
    bval = Value(ctx.g.fresh_name((node.input[2] if b is not None else wv + "_bias")),
                 bias.shape, "float32", const=bias.astype(np.float32))
    attrs = ConvAttrs(kernel=kernel, strides=strides, pads=pads, dilations=dil, group=group)
    ctx.emit(Op.CONV, node, [x, wval, bval], attrs)


def batchnorm(ctx: Ctx, node: onnx.NodeProto) -> None:
    """BatchNormalization (opsets 6-15): inference form only; extra outputs must be unused."""
    a = attrs_of(node)
    if int(a.get("training_mode", 0)) != 0:
        raise Unsupported("training_mode=1; export the model in eval mode")
    if int(a.get("is_test", 1)) == 0 and ctx.opset < 7:
        raise Unsupported("is_test=0 (training); export the model in eval mode")
    if int(a.get("spatial", 1)) != 1:
        raise Unsupported("spatial=0 (per-element statistics) is not supported")
    if 7 <= ctx.opset < 14 and any(o for o in node.output[1:]):
        # opsets 7-13: listing mean/var/saved_* outputs selects training mode, in which ONNX
        # normalises with the batch's statistics (even when nobody reads those outputs)
        raise Unsupported("lists its training outputs (running mean/var), which makes it a "
                          "training-mode BatchNormalization using batch statistics; export the "
                          "model in eval mode")
    x = ctx.get(node, 0)
    params = [ctx.const(node, i, nm) for i, nm in enumerate(
        ["scale", "B", "mean", "var"], start=1)]
    c = x.shape[1]
    vals = []
    for arr, nm in zip(params, ["scale", "B", "mean", "var"]):
        if arr is None or arr.size != c:
            raise Unsupported(f"{nm} must hold {c} values")
        vals.append(Value(ctx.g.fresh_name(f"{node.name or node.output[0]}_{nm}"), (c,),
                          "float32", const=arr.reshape(c).astype(np.float32)))
    eps = float(a.get("epsilon", 1e-5))
    ctx.emit(Op.BATCHNORM, node, [x] + vals, BatchNormAttrs(epsilon=eps))


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
            from tcc_compiler.frontend.activations import clip_lut
            clip_lut(ctx, node, ctx.get(node, 0), lo, hi)   # one-sided or excluding 0
            return
        act = Activation(ActKind.CLIP, lo, hi)
    ctx.emit(Op.CLIP, node, [ctx.get(node, 0)], ActAttrs(act))


def _binary(op: Op):
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


def _pool(kind: Op):
    def convert(ctx: Ctx, node: onnx.NodeProto) -> None:
        a = attrs_of(node)
        src = ctx.pending_pad.get(node.input[0])
        x = src[0] if src else ctx.get(node, 0)
        kernel = _ints(a.get("kernel_shape"), 2, 1)
        if len(kernel) != 2:
            raise Unsupported("only 2-D pooling is supported")
        if kind is Op.MAXPOOL and len(node.output) > 1 and node.output[1]:
            raise Unsupported("the Indices output is not supported")
        strides, pads, dil = _spatial(ctx, node, x, kernel, a)
        if dil != (1, 1):
            raise Unsupported("dilated pooling is not supported")
        if src:
            raise Unsupported("a zero Pad before pooling cannot be folded (MaxPool pads with "
                              "-inf, AveragePool's divisor would change)")
        h, w = x.shape[2:]
        if int(a.get("ceil_mode", 0)):
            explicit = pads
            pads = list(pads)
            for i, size in enumerate((h, w)):
                span = size + pads[i] + pads[i + 2] - kernel[i]
                out_ceil = -(-span // strides[i]) + 1
                # ONNX: the last window must start inside the input or left padding
                if (out_ceil - 1) * strides[i] >= size + pads[i]:
                    out_ceil -= 1
                need = (out_ceil - 1) * strides[i] + kernel[i] - (size + pads[i] + pads[i + 2])
                pads[i + 2] += max(0, need)
            pads = tuple(pads)
            if kind is Op.AVGPOOL and pads != explicit and int(a.get("count_include_pad", 0)):
                # count_include_pad=0 excludes the overhang like any padding (exact divisor
                # per pixel); with 1, ONNX Runtime divides by the window clipped to the
                # explicit padding, a rule the NPU does not implement
                raise Unsupported("AveragePool with ceil_mode=1 and count_include_pad=1 whose "
                                  "last window overhangs the padding is not supported; use "
                                  "ceil_mode=0 or count_include_pad=0")
        cip = bool(int(a.get("count_include_pad", 0)))
        if kind is Op.AVGPOOL and kernel == (h, w) and pads == (0, 0, 0, 0):
            ctx.emit(Op.GAP, node, [x], NoAttrs())
            return
        ctx.emit(kind, node, [x], PoolAttrs(kernel=kernel, strides=strides, pads=pads,
                                             count_include_pad=cip))
    return convert


def gap(ctx: Ctx, node: onnx.NodeProto) -> None:
    """GlobalAveragePool."""
    x = ctx.get(node, 0)
    if len(x.shape) != 4:
        raise Unsupported("only NCHW inputs are supported")
    ctx.emit(Op.GAP, node, [x], NoAttrs())


def reduce_mean(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ReduceMean over H and W -> global average pool (+ reshape when keepdims=0)."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1:
        axes = ctx.const(node, 1, "axes")
    axes = sorted(int(v) % len(x.shape) for v in (axes if axes is not None else []))
    if len(x.shape) != 4 or axes != [2, 3]:
        raise Unsupported(f"ReduceMean over axes {axes}; only over H and W (2, 3) is supported")
    keep = int(a.get("keepdims", 1))
    if keep:
        ctx.emit(Op.GAP, node, [x], NoAttrs())
    else:
        mid = ctx.emit(Op.GAP, node, [x], NoAttrs(), out_name=node.output[0] + "__gap")
        ctx.emit(Op.RESHAPE, node, [mid], ReshapeAttrs((x.shape[0], x.shape[1])))


def _resolve_shape(x: Value, shape, allowzero: int = 0) -> tuple[int, ...]:
    shape = [int(s) for s in shape]
    out = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            out.append(x.shape[i])
        else:
            out.append(s)
    total = int(np.prod(x.shape))
    if out.count(-1) > 1:
        raise Unsupported("more than one -1 in the target shape")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        if known == 0 or total % known:
            raise Unsupported(f"cannot reshape {x.shape} to {shape}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != total:
        raise Unsupported(f"cannot reshape {x.shape} to {shape}")
    return tuple(out)


def reshape(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Reshape (shape attribute before opset 5, constant input after); 0 and -1 resolved."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    shape = a.get("shape") if "shape" in a else ctx.const(node, 1, "shape")
    if shape is None:
        raise Unsupported("target shape must be constant")
    out = _resolve_shape(x, shape, int(a.get("allowzero", 0)))
    emit_view(ctx, node, x, out)


def emit_view(ctx: Ctx, node, x: Value, out: tuple[int, ...]) -> None:
    """``node``'s output as a view of ``x`` in shape ``out`` (NCHW element order): an alias
    when the shape is unchanged (also for a view of a view back to the original's shape), a
    reshaped constant, or an IR ``reshape``."""
    src = x.producer
    if src is not None and src.op is Op.RESHAPE and out == src.inputs[0].shape:
        x = src.inputs[0]   # a view of a view back to the original shape: the original
    if out == x.shape:
        ctx.alias(node.output[0], x)
    elif x.is_const:
        ctx.add_const(node.output[0], x.const.reshape(out))
    else:
        ctx.emit(Op.RESHAPE, node, [x], ReshapeAttrs(out))


def flatten(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Flatten(axis)."""
    x = ctx.get(node, 0)
    axis = int(attrs_of(node).get("axis", 1))
    if not -len(x.shape) <= axis <= len(x.shape):
        raise Unsupported(f"axis {axis} out of range for rank {len(x.shape)}")
    axis = axis + len(x.shape) if axis < 0 else axis  # ONNX: negative counts from the back
    lead = int(np.prod(x.shape[:axis])) if axis else 1
    emit_view(ctx, node, x, (lead, int(np.prod(x.shape[axis:]))))


def squeeze_like(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Squeeze / Unsqueeze: pure views once shapes are known."""
    x = ctx.get(node, 0)
    out = ctx.onnx_shapes.get(node.output[0])
    if not out or any(d < 0 for d in out):
        raise Unsupported("output shape unknown after shape inference")
    emit_view(ctx, node, x, tuple(out))


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
    w = w.astype(np.float64) * float(a.get("alpha", 1.0))
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
               const=w.reshape(w.shape[0], w.shape[1], 1, 1).astype(np.float32))
    bv = Value(ctx.g.fresh_name(node.output[0] + "_bias"), (w.shape[0],), "float32",
               const=bias.astype(np.float32))
    ctx.emit(Op.FC, node, [x, wv, bv], FcAttrs())


def pad(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Pad (constant mode, spatial only) -> folded into the consuming Conv's padding.

    Zero padding before a Conv equals the Conv's own zero padding. A Pad with another value,
    mode, or on N/C axes is refused."""
    a = attrs_of(node)
    x = ctx.get(node, 0)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = a.get("pads") if ctx.opset < 11 else ctx.const(node, 1, "pads")
    value = float(a.get("value", 0.0)) if ctx.opset < 11 else (
        float(ctx.const(node, 2, "constant_value") or 0.0) if len(node.input) > 2 else 0.0)
    if pads is None or len(pads) != 8 or len(x.shape) != 4:
        raise Unsupported("only 4-D Pad with constant pads is supported")
    p = [int(v) for v in pads]
    if mode != "constant" or value != 0.0 or p[0] or p[1] or p[4] or p[5] or min(p) < 0:
        raise Unsupported("only zero-valued constant spatial padding (folded into the next "
                          "Conv) is supported")
    ctx.pending_pad[node.output[0]] = (x, (p[2], p[3], p[6], p[7]), "zero")


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


def identity(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Identity / Dropout (inference): the output is the input.

    Dropout in training mode (opset 6 ``is_test=0``; from opset 12 a constant ``training_mode``
    input that is true while ``ratio`` is not 0) drops random elements and is refused; a
    ``training_mode`` computed by the graph is refused by :meth:`Ctx.const`."""
    if node.op_type == "Dropout":
        a = attrs_of(node)
        if ctx.opset < 7 and int(a.get("is_test", 1)) == 0:
            raise Unsupported("is_test=0 (training: drops random elements); export the model "
                              "in eval mode")
        if ctx.opset >= 12:
            training = ctx.const(node, 2, "training_mode")
            ratio = ctx.const(node, 1, "ratio")
            ratio = 0.5 if ratio is None else float(ratio)  # the schema's default
            if training is not None and bool(training) and ratio != 0.0:
                raise Unsupported(f"training_mode=true with ratio {ratio} (drops random "
                                  "elements); export the model in eval mode")
        if len(node.output) > 1 and node.output[1]:
            log.debug("Dropout %s: mask output ignored", node.name)
    ctx.alias(node.output[0], ctx.get(node, 0))


def constant(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Constant left after folding (e.g. an unused one): register its value."""
    a = attrs_of(node)
    if "value" in a:
        ctx.add_const(node.output[0], onnx.numpy_helper.to_array(a["value"]))
    else:
        raise Unsupported("only tensor-valued Constant is supported")


#: Why common ops outside :data:`CONVERTERS` are refused, and what to do (shown to users and
#: listed in SUPPORTED_OPS.md). The NPU runs conv / fc / add / max+avg pool / global pool with
#: a fused relu or clip epilogue (``tcc_compiler.ir.ops.NPU_OPS``); nothing else.
REFUSED_OPS: dict[str, str] = {
    "LRN": "local response normalization has no NPU command; remove it (most networks that "
           "use it lose little accuracy without it) or run that part on the host",
    "LSTM": "recurrent layers are not image ops; not supported",
    "GRU": "recurrent layers are not image ops; not supported",
    "InstanceNormalization": "normalization with data-dependent statistics is not foldable "
                             "into constants; not supported",
    "LayerNormalization": "normalization with data-dependent statistics is not foldable into "
                          "constants; not supported",
}


def unknown_op_reason(op_type: str) -> str:
    """The refusal reason for an op type without a converter (one clause, no newline)."""
    why = REFUSED_OPS.get(op_type)
    if why:
        return f"op type not supported: {why} (see SUPPORTED_OPS.md)"
    return "op type not supported by tccc (see SUPPORTED_OPS.md)"


CONVERTERS: dict[str, Callable[[Ctx, onnx.NodeProto], None]] = {
    "Conv": conv,
    "BatchNormalization": batchnorm,
    "Relu": relu,
    "Clip": clip,
    "Add": _binary(Op.ADD),
    "Sum": _binary(Op.ADD),
    "Mul": _binary(Op.MUL),
    "Sub": sub_op,
    "Div": div_op,
    "MaxPool": _pool(Op.MAXPOOL),
    "AveragePool": _pool(Op.AVGPOOL),
    "GlobalAveragePool": gap,
    "ReduceMean": reduce_mean,
    "Flatten": flatten,
    "Reshape": reshape,
    "Squeeze": squeeze_like,
    "Unsqueeze": squeeze_like,
    "Gemm": gemm,
    "MatMul": matmul,
    "Pad": pad,
    "Softmax": softmax,
    "ArgMax": argmax,
    "Identity": identity,
    "Dropout": identity,
    "Constant": constant,
}


def _merge_lut_converters() -> None:
    """Add the lookup-table activations (frontend/activations.py, which imports this module,
    hence the late import)."""
    from tcc_compiler.frontend.activations import LUT_CONVERTERS
    from tcc_compiler.frontend.channels import CHANNEL_CONVERTERS
    from tcc_compiler.frontend.convtranspose import CONVTRANSPOSE_CONVERTERS
    from tcc_compiler.frontend.reduce import REDUCE_CONVERTERS
    from tcc_compiler.frontend.resize import RESIZE_CONVERTERS
    CONVERTERS.update(LUT_CONVERTERS)
    CONVERTERS.update(REDUCE_CONVERTERS)
    CONVERTERS.update(CONVTRANSPOSE_CONVERTERS)
    CONVERTERS.update(RESIZE_CONVERTERS)
    CONVERTERS.update(CHANNEL_CONVERTERS)


_merge_lut_converters()
