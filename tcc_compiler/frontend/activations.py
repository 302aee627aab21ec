"""Converters of the unary activations run as int8 lookup tables (IR op ``lut``).

Attribute defaults follow the ONNX operator docs (https://onnx.ai/onnx/operators/):
HardSigmoid alpha 0.2 beta 0.5, LeakyRelu alpha 0.01, Elu alpha 1.0, Gelu approximate "none".
:mod:`tcc_compiler.frontend.converters` merges :data:`LUT_CONVERTERS` into its table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import LutAttrs, LutFunc, Op


def _simple(func: LutFunc, alpha_key: str = "", alpha_default: float = 0.0,
            beta_key: str = "", beta_default: float = 0.0):
    """A converter for a parameterless (or attribute-parameterised) unary activation."""
    def convert(ctx: Ctx, node: onnx.NodeProto) -> None:
        a = attrs_of(node)
        alpha = float(a.get(alpha_key, alpha_default)) if alpha_key else 0.0
        beta = float(a.get(beta_key, beta_default)) if beta_key else 0.0
        ctx.emit(Op.LUT, node, [ctx.get(node, 0)], LutAttrs(func, alpha, beta))
    return convert


def gelu(ctx: Ctx, node: onnx.NodeProto) -> None:
    """Gelu (opset 20): approximate "none" (erf form) or "tanh"."""
    approx = attrs_of(node).get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    if approx not in ("none", "tanh"):
        raise Unsupported(f"Gelu approximate='{approx}' unknown (expected none or tanh)")
    func = LutFunc.GELU if approx == "none" else LutFunc.GELU_TANH
    ctx.emit(Op.LUT, node, [ctx.get(node, 0)], LutAttrs(func))


def prelu(ctx: Ctx, node: onnx.NodeProto) -> None:
    """PRelu with a constant slope: scalar, or one value per channel broadcasting along axis 1
    (ONNX [C, 1, 1] or [C]); becomes one table per channel."""
    x = ctx.get(node, 0)
    slope = ctx.const(node, 1, "slope")
    if slope is None:
        raise Unsupported("PRelu needs a slope input")
    c = x.shape[1] if len(x.shape) >= 2 else 1
    flat = np.asarray(slope, dtype=np.float32).reshape(-1)
    if flat.size != 1:
        shape = (1,) * (len(x.shape) - slope.ndim) + tuple(slope.shape)
        if flat.size != c or len(shape) != len(x.shape) or shape[1] != c:
            raise Unsupported(f"PRelu slope of shape {tuple(slope.shape)} is neither scalar nor "
                              f"per-channel for input {x.shape}")
    if np.all(flat == flat[0]):
        flat = flat[:1]          # one shared table when every channel has the same slope
    sv = Value(ctx.g.fresh_name(f"{node.name or node.output[0]}_slope"), (flat.size,),
               "float32", const=flat)
    ctx.emit(Op.LUT, node, [x, sv], LutAttrs(LutFunc.PRELU))


def clip_lut(ctx: Ctx, node: onnx.NodeProto, x: Value, lo: float, hi: float) -> None:
    """Clip bounds the relu/clip epilogue cannot express (one-sided, or a range excluding 0)
    as a lookup table ``clip(x, lo, hi)`` (infinite bounds allowed)."""
    ctx.emit(Op.LUT, node, [x], LutAttrs(LutFunc.CLIP, lo, hi))


#: ONNX op type -> converter, merged into ``converters.CONVERTERS``.
LUT_CONVERTERS: dict[str, Callable[[Ctx, onnx.NodeProto], None]] = {
    "Sigmoid": _simple(LutFunc.SIGMOID),
    "Tanh": _simple(LutFunc.TANH),
    "HardSigmoid": _simple(LutFunc.HARDSIGMOID, "alpha", 0.2, "beta", 0.5),
    "HardSwish": _simple(LutFunc.HARDSWISH),
    "LeakyRelu": _simple(LutFunc.LEAKYRELU, "alpha", 0.01),
    "Elu": _simple(LutFunc.ELU, "alpha", 1.0),
    "Softplus": _simple(LutFunc.SOFTPLUS),
    "Mish": _simple(LutFunc.MISH),
    "Erf": _simple(LutFunc.ERF),
    "Gelu": gelu,
    "PRelu": prelu,
}
