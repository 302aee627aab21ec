"""Converters of the spatial ops: Conv, BatchNormalization, MaxPool / AveragePool,
GlobalAveragePool, ReduceMean over H and W, and Pad (folded into the next Conv).

Attributes follow the opset rules of the ONNX operator docs (https://onnx.ai/onnx/operators/):
``auto_pad`` SAME_UPPER / SAME_LOWER / VALID, BatchNormalization's is_test / spatial /
training_mode, Pad's pads attribute (before opset 11) vs input. Layout NCHW, weights OIHW.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import (BatchNormAttrs, ConvAttrs, NoAttrs, Op, PoolAttrs,
                                 ReshapeAttrs)


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
    # the initializer's array itself when float32 (read-only, shared: constants are replaced,
    # never changed in place; ResNet-50: 100 MB not copied)
    wval = Value(wv, w.shape, "float32", const=np.asarray(w, np.float32))
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


def pool(kind: Op) -> Callable[[Ctx, onnx.NodeProto], None]:
    """The converter of MaxPool / AveragePool as IR ``kind`` (NCHW, 2-D, no dilation):
    ``ceil_mode=1`` becomes extra bottom/right padding, an AveragePool whose window is the
    whole unpadded map a global average pool.

    Raises (from the converter):
        Unsupported: a non-2-D kernel, MaxPool's Indices output, dilation, a zero Pad before
            it, or ceil_mode with count_include_pad=1 whose last window overhangs the padding.
    """
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
