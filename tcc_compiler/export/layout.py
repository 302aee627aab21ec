"""QDQ forms of the data-movement ops (channel concat and slice, interleave, resize): each
moves int8 bytes and shares its operands' quantization (quant/groups.py), so its ONNX form
works on the dequantized floats (exact: dequantization is the same affine map on every
operand) and needs no Q/DQ pair of its own; a bilinear resize, which interpolates, is
re-quantized with the shared parameters. Added to the QDQ exporter's rule table by
:func:`register`."""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.ops import Op, ResizeMode


def _concat(b, n, xf: str) -> None:
    ins = [b.float_of[id(v)] for v in n.inputs]
    y = b.node("Concat", ins, b.uniq(f"{n.name}_cat"), n.name, axis=n.attrs.axis)
    b.finish_float(n.output, y, n.name)


def _slice(b, n, xf: str) -> None:
    a = n.attrs
    st = b.const(b.uniq(f"{n.name}_starts"), np.array([a.start], np.int64))
    en = b.const(b.uniq(f"{n.name}_ends"), np.array([a.end], np.int64))
    ax = b.const(b.uniq(f"{n.name}_axes"), np.array([a.axis], np.int64))
    y = b.node("Slice", [xf, st, en, ax], b.uniq(f"{n.name}_slice"), n.name)
    b.finish_float(n.output, y, n.name)


#: LSBs added before a bilinear resize's QuantizeLinear so that its ties round half up as the
#: NPU's do: half_pixel / asymmetric x2 and x4 values are multiples of 1/64 LSB, so 1/128
#: moves only ties (align_corners weights are rounded on the NPU: the export is within 1 LSB).
BILINEAR_TIE_LSB = 1 / 128


def _resize(b, n, xf: str) -> None:
    """Nearest: a repeat (asymmetric/floor), no Q/DQ of its own; bilinear: ONNX's linear
    Resize with the op's coordinate mode, re-quantized with the shared parameters (the NPU
    rounds the interpolated value, numerics/resize.py)."""
    a = n.attrs
    sc = b.const(b.uniq(f"{n.name}_scales"),
                 np.array([1, 1, a.scale_h, a.scale_w], np.float32))
    if a.mode is ResizeMode.BILINEAR:
        kw = dict(mode="linear", coordinate_transformation_mode=a.coord.value)
    else:
        kw = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")
    y = b.node("Resize", [xf, "", sc], b.uniq(f"{n.name}_resize"), n.name, **kw)
    if a.mode is ResizeMode.BILINEAR:
        b.qdq(n.output, b.round_half_up(y, BILINEAR_TIE_LSB, n.output, n.name), n.name)
    else:
        b.finish_float(n.output, y, n.name)


def _shuffle(b, n, xf: str) -> None:
    """Reshape [N, g, C/g, H, W], Transpose(0, 2, 1, 3, 4), Reshape back (ShuffleNet's form)."""
    nb, c, h, w = n.output.shape
    g = n.attrs.groups
    s5 = b.const(b.uniq(f"{n.name}_split"), np.array([nb, g, c // g, h, w], np.int64))
    y = b.node("Reshape", [xf, s5], b.uniq(f"{n.name}_groups"), n.name + "_groups")
    y = b.node("Transpose", [y], b.uniq(f"{n.name}_swap"), n.name, perm=[0, 2, 1, 3, 4])
    s4 = b.const(b.uniq(f"{n.name}_merge"), np.array(n.output.shape, np.int64))
    y = b.node("Reshape", [y, s4], b.uniq(f"{n.name}_shuffled"), n.name + "_merge")
    b.finish_float(n.output, y, n.name)


def _interleave(b, n, xf: str) -> None:
    """Phases concatenated along channels in row-major phase order, then DepthToSpace (DCR:
    input channel (r * s + c) * C + k -> output (y * s + r, x * s + c, k)); one stride."""
    a = n.attrs
    if a.sh != a.sw:
        raise InternalError(f"QDQ export: interleave '{n.name}' with strides {a.sh}x{a.sw} "
                            "has no DepthToSpace form")
    ins = [b.float_of[id(v)] for v in n.inputs]
    cat = b.node("Concat", ins, b.uniq(f"{n.name}_phases"), n.name + "_phases", axis=1)
    y = b.node("DepthToSpace", [cat], b.uniq(f"{n.name}_d2s"), n.name, blocksize=a.sh,
               mode="DCR")
    b.finish_float(n.output, y, n.name)


def register(rules: dict) -> None:
    """Add the data-movement exporters to the QDQ exporter's rule table."""
    rules.update({Op.CONCAT: _concat, Op.SLICE: _slice, Op.RESIZE: _resize,
                  Op.INTERLEAVE: _interleave, Op.SHUFFLE: _shuffle})
