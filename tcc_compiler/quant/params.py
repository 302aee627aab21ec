"""Lowered integer parameters of each quantized op (what the NPU's epilogue needs).

The emitter writes these into the binaries and the golden model computes with them, from one
function per op kind, so both use the same multipliers by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcc_compiler.errors import InternalError, ModelError
from tcc_compiler.ir.graph import Node, Value
from tcc_compiler.ir.ops import ActKind, LutFunc, Op
from tcc_compiler.isa.spec import WIDE_B, WIDE_IN, WIDE_OUT, WIDE_W_MULT_LIMIT
from tcc_compiler.numerics import (dequantize_tensor, quantize_multiplier, window_counts,
                                   quantize_multipliers_shared, quantize_tensor)
from tcc_compiler.numerics.requant import (narrow_multipliers, quantize_multipliers,
                                           quantize_multipliers_shared_pairs)
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.eltwise import EwKind
from tcc_compiler.numerics.kernels import int_range
from tcc_compiler.numerics.lut import build_knots, build_tables
from tcc_compiler.numerics.softmax import softmax_table


def int_dtype(v: Value) -> type:
    """The numpy integer type an NPU activation ``v`` is held in: np.int16 for an int16 value
    (mixed precision), np.int32 for a raw conv output, else np.int8."""
    return {"int16": np.int16, "int32": np.int32}.get(v.dtype, np.int8)


def wide_bits(*pairs: tuple[Value | None, int]) -> int:
    """The ``wide`` field (isa/spec.py WIDE_*) of an op: the OR of ``bit`` over the (value, bit)
    pairs whose value is int16."""
    return sum(bit for v, bit in pairs if v is not None and v.dtype == "int16")


@dataclass(frozen=True)
class ConvQuant:
    """Integer epilogue of a conv/fc. Arrays are per output channel [O].

    Attributes:
        bias: int32. mult, sc_mult: int64 (< 2**31). shift: int64 (1..62).
        zp_in, zp_out, zp_sc: zero points. act_lo, act_hi: clamp bounds in the output type.
        out_int32: True when the output is the raw int32 ``acc + bias``.
        wide: CONV_CFG ``wide`` bits (int16 input / output / shortcut; 0 = all int8).
        wide_w: int16 weights (CONV_CFG flags bit7): a 64-bit accumulator that does not wrap
            and every ``mult`` below ``isa.spec.WIDE_W_MULT_LIMIT``.
        clamp_lo, clamp_hi: int64 [O] per-channel clamp offsets 0..255 of the parameter
            records (output clamped to ``[-128 + clamp_lo, 127 - clamp_hi]`` after
            ``act_lo``/``act_hi``), from the node's per-channel clamp (input 5); None without.
        two_slope: a LEAKY activation run as the two-slope epilogue (CONV_CFG out_mode
            bit2): ``sc_mult`` then holds the multipliers below zero (no shortcut),
            ``round(slope * s_x * s_w[c] / s_y * 2**shift[c])`` (specs/quantization.md,
            "Two-slope epilogue").
    """

    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    sc_mult: np.ndarray
    zp_in: int
    zp_out: int
    zp_sc: int
    act_lo: int
    act_hi: int
    out_int32: bool
    wide: int = 0
    wide_w: bool = False
    clamp_lo: np.ndarray | None = None
    clamp_hi: np.ndarray | None = None
    two_slope: bool = False

    @property
    def out_dtype(self) -> type:
        """np.int16 when the requantized output is int16 (wide bit1), else np.int8."""
        return np.int16 if self.wide & WIDE_OUT else np.int8


@dataclass(frozen=True)
class PoolQuant:
    """Integer parameters of max/avg/global pooling (mult/shift unused for max); ``wide``:
    POOL_CFG's element widths (input and output int16 together, or 0)."""

    zp_in: int
    zp_out: int
    mult: int
    shift: int
    wide: int = 0


@dataclass(frozen=True)
class AddQuant:
    """Integer parameters of a standalone element-wise add."""

    zp_a: int
    zp_b: int
    zp_out: int
    mult_a: int
    mult_b: int
    shift: int
    act_lo: int
    act_hi: int


@dataclass(frozen=True)
class LutQuant:
    """Integer parameters of a lookup-table activation.

    Attributes:
        tables: int8 [T, 256], T = 1 (shared) or the channel count (per-channel prelu);
            ``tables[c % T, q + 128]`` is the output for input q (numerics/lut.py); for an
            int16 input, the knots instead: int16 [1, 257] (numerics/lut.py build_knots).
        wide: True when the input is int16 (``tables`` holds the knots).
        wide_out: True when the output is int16 too (the knots are int16 outputs: CONV_CFG
            out_mode bit3, numerics/lut.py apply_lut_wide with ``wide_out``).
    """

    tables: np.ndarray
    wide: bool = False
    wide_out: bool = False


@dataclass(frozen=True)
class EwQuant:
    """Integer parameters of an element-wise op of two activations run as EW_TILE.

    Attributes:
        kind: :class:`~tcc_compiler.numerics.eltwise.EwKind`. mult_b is 0 for mul.
        period: 0 = b has a's shape; else b is one value per channel (C = period), repeated
            over the pixels ([N,C,1,1] broadcast over [N,C,H,W]).
        wide: EW_TILE's element widths (a / output / b int16; 0 = all int8).
    """

    kind: EwKind
    zp_a: int
    zp_b: int
    zp_out: int
    mult_a: int
    mult_b: int
    shift: int
    act_lo: int
    act_hi: int
    period: int
    wide: int = 0

    @property
    def out_dtype(self) -> type:
        """np.int16 when the output is int16, else np.int8."""
        return np.int16 if self.wide & WIDE_OUT else np.int8


def _zp(v: Value) -> int:
    return int(v.quant.zero_point)


def _s(v: Value) -> float:
    return float(v.quant.scale)


def act_bounds(node: Node, out: Value) -> tuple[int, int]:
    """Clamp bounds of the node's fused activation in the output's quantized domain (int8,
    or int16 for an int16 output)."""
    act = node.attrs.act
    s, zp = _s(out), _zp(out)
    qmin, qmax = int_range(int_dtype(out))
    if act.kind is ActKind.RELU:
        return max(qmin, zp), qmax
    if act.kind is ActKind.CLIP:
        lo = int(np.clip(np.round(act.lo / s) + zp, qmin, qmax))
        hi = int(np.clip(np.round(act.hi / s) + zp, qmin, qmax))
        return lo, hi
    return qmin, qmax


def _multiplier(node: Node, real: float, shared: list[float] | None = None):
    """quantize_multiplier(s) with a ModelError naming the node when the scale is absurd."""
    try:
        if shared is not None:
            return quantize_multipliers_shared(shared)
        return quantize_multiplier(real)
    except InternalError as exc:
        raise ModelError(f"node '{node.name}' ({', '.join(node.source)}): {exc} (weights or "
                         "activations of absurd magnitude?)") from None


def _conv_multipliers(node: Node, real: np.ndarray, sc_real: np.ndarray | None):
    """(mult, shift, sc_mult) int64 [O] of a conv's per-channel scales ``real`` and, with a
    shortcut, its scales ``sc_real`` (one shared shift per channel): vectorised
    (numerics/requant.py, the same values as per channel); when that raises, channel by
    channel, so the ModelError names the node and the first bad channel's problem."""
    o = len(real)
    try:
        if sc_real is None:
            mult, shift = quantize_multipliers(real)
            return mult, shift, np.zeros(o, np.int64)
        pairs = np.stack([np.asarray(real, np.float64), sc_real], axis=1)
        ms, shift = quantize_multipliers_shared_pairs(pairs)
        return ms[:, 0].copy(), shift, ms[:, 1].copy()
    except InternalError:
        pass
    mult = np.zeros(o, np.int64)
    shift = np.zeros(o, np.int64)
    sc_mult = np.zeros(o, np.int64)
    for c in range(o):
        if sc_real is None:
            mult[c], shift[c] = _multiplier(node, float(real[c]))
        else:
            (mult[c], sc_mult[c]), shift[c] = _multiplier(
                node, 0.0, [float(real[c]), sc_real[c]])
    return mult, shift, sc_mult


def conv_quant(node: Node) -> ConvQuant:
    """Epilogue parameters of a quantized conv/fc node (see specs/quantization.md)."""
    x, w, b = node.inputs[0], node.inputs[1], node.inputs[2]
    out = node.output
    sc = node.input(3)
    s_w = w.quant.scale
    o = len(s_w)
    bias = b.const.astype(np.int32)
    wide = wide_bits((x, WIDE_IN), (out, WIDE_OUT), (sc, WIDE_B))
    wide_w = w.dtype == "int16"
    if out.dtype == "int32":
        if wide_w:
            raise InternalError(f"{node.name}: int16 weights with a raw int32 output")
        z = np.zeros(o, np.int64)
        return ConvQuant(bias, z, np.ones(o, np.int64), z, _zp(x), 0, 0, -128, 127, True, wide)
    real = _s(x) * s_w / _s(out)
    # optional per-channel scale of the shortcut term (input 4; > 0, from a folded affine)
    sc_scale = (node.input(4).const.astype(np.float64).reshape(-1) if node.input(4) is not None
                else np.ones(o))
    sc_real = sc_scale * _s(sc) / _s(out) if sc is not None else None
    real = np.broadcast_to(real, (o,))
    mult, shift, sc_mult = _conv_multipliers(node, real, sc_real)
    if wide_w:     # 15-bit multipliers: (acc + bias) * M < 2**62 (specs/quantization.md)
        try:
            mult, shift, sc_mult = narrow_multipliers(real, sc_real, mult, shift, sc_mult,
                                                      WIDE_W_MULT_LIMIT)
        except InternalError as exc:
            raise ModelError(f"{node.name}: {exc}") from None
    lo, hi = act_bounds(node, out)
    c_lo, c_hi = channel_clamps(node)
    two_slope = node.attrs.act.kind is ActKind.LEAKY
    if two_slope:
        sc_mult = _neg_multipliers(node, real, mult, shift)
    return ConvQuant(bias, mult, shift, sc_mult, _zp(x), _zp(out),
                     _zp(sc) if sc is not None else 0, lo, hi, False, wide, wide_w, c_lo, c_hi,
                     two_slope)


def _neg_multipliers(node: Node, real: np.ndarray, mult: np.ndarray,
                     shift: np.ndarray) -> np.ndarray:
    """The two-slope epilogue's multipliers below zero (int64 [O]): ``round(slope * real[c] *
    2**shift[c])``, sharing the channel's shift. ``mult[c] = round(real[c] 2**shift[c])`` and
    rounding is monotone, so ``0 <= slope <= 1`` keeps them within ``[0, mult[c]]``: 31 bits
    (15 with int16 weights) like ``mult`` (the ``minimum`` only states it).

    Raises:
        InternalError: a shortcut or a slope outside [0, 1] (passes/fuse.py fuses neither).
    """
    slope = float(node.attrs.act.lo)
    if node.input(3) is not None or not 0.0 <= slope <= 1.0:
        raise InternalError(f"{node.name}: two-slope epilogue with a shortcut or slope {slope}")
    neg = np.rint(slope * np.asarray(real, np.float64) * np.ldexp(1.0, shift))
    return np.minimum(neg.astype(np.int64), mult)


def channel_clamps(node: Node) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The parameter records' per-channel clamp offsets (int64 [O] each, 0..255) of a conv
    with a per-channel output clamp (input 5: float [2, O] real bounds ``lo``, ``hi``, +-inf
    where open; passes/fold_after_act.py), or (None, None) without one.

    ``q = clamp(round(b / s) + zp, -128, 127)`` for each bound ``b`` (-128 / 127 when
    infinite): ``round`` is monotone, so ``max(round(y / s), round(lo / s)) = round(max(y,
    lo) / s)``, the clamp of the float model rounded once (specs/quantization.md
    "Per-channel output clamp"). Offsets: ``clamp_lo = q_lo + 128``, ``clamp_hi = 127 - q_hi``.

    Raises:
        InternalError: the output is not int8 (the offsets hold int8 bounds only; the
            precision planner keeps such an output int8).
    """
    cl = node.input(5)
    if cl is None:
        return None, None
    out = node.output
    if out.dtype != "int8":
        raise InternalError(f"{node.name}: per-channel clamp on a {out.dtype} output")
    bounds = np.asarray(cl.const, np.float64).reshape(2, -1)
    s, zp = _s(out), _zp(out)
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.round(bounds / s) + zp
    q = np.where(np.isnan(q), 0, q)   # (no NaN bounds: the pass writes finite or +-inf)
    q = np.clip(q, -128, 127).astype(np.int64)
    return q[0] + 128, 127 - q[1]


def pool_quant(node: Node, divisor: int | None = None) -> PoolQuant:
    """Parameters of maxpool / avgpool / gap (divisor folded into the multiplier).

    ``divisor``: the window's element count to fold in; None = the kernel area (the whole map
    for gap). An average pool whose divisor varies per pixel (:func:`pool_divisors`) takes one
    set of parameters per divisor.
    """
    x, out = node.inputs[0], node.output
    wide = wide_bits((x, WIDE_IN), (out, WIDE_OUT))
    if node.op is Op.MAXPOOL:
        return PoolQuant(_zp(x), _zp(out), 0, 1, wide)
    if divisor is not None:
        n = divisor
    elif node.op is Op.GAP:
        n = x.shape[2] * x.shape[3]
    else:
        n = node.attrs.kernel[0] * node.attrs.kernel[1]
    m, s = _multiplier(node, _s(x) / (_s(out) * n))
    return PoolQuant(_zp(x), _zp(out), m, s, wide)


def pool_divisors(node: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows [OH], cols [OW])`` of an average pool that excludes padding from its divisor
    (ONNX count_include_pad=0): the divisor of output pixel (i, j) is ``rows[i] * cols[j]``
    (:func:`tcc_compiler.numerics.window_counts`). None when every window's divisor is the
    kernel area (no padding reached, or count_include_pad=1, or not an average pool)."""
    if node.op is not Op.AVGPOOL or node.attrs.count_include_pad:
        return None
    a = node.attrs
    h, w = node.inputs[0].shape[2:]
    oh, ow = node.output.shape[2:]
    rows = window_counts(h, a.kernel[0], a.strides[0], a.pads[0], oh)
    cols = window_counts(w, a.kernel[1], a.strides[1], a.pads[1], ow)
    if (rows == a.kernel[0]).all() and (cols == a.kernel[1]).all():
        return None
    return rows, cols


def add_quant(node: Node) -> AddQuant:
    """Parameters of a standalone add: one shared shift for both operands."""
    a, b, out = node.inputs[0], node.inputs[1], node.output
    (ma, mb), s = _multiplier(node, 0.0, [_s(a) / _s(out), _s(b) / _s(out)])
    lo, hi = act_bounds(node, out)
    return AddQuant(_zp(a), _zp(b), _zp(out), ma, mb, s, lo, hi)


def uses_ew(node: Node) -> bool:
    """True when the node runs as EW_TILE: any sub or mul of two activations, and an add
    whose second operand is broadcast or that has an int16 operand (ADD_TILE is int8 only; a
    same-shape int8 add stays an ADD_TILE)."""
    if node.op in (Op.SUB, Op.MUL):
        return True
    return node.op is Op.ADD and (node.inputs[1].shape != node.inputs[0].shape or "int16" in (
        node.inputs[0].dtype, node.inputs[1].dtype, node.output.dtype))


def ew_quant(node: Node) -> EwQuant:
    """Parameters of an EW_TILE op (add/sub: one shared shift; mul: one product multiplier)."""
    a, b, out = node.inputs[0], node.inputs[1], node.output
    if node.op is Op.MUL:
        kind = EwKind.MUL
        (ma, s), mb = _multiplier(node, _s(a) * _s(b) / _s(out)), 0
    else:
        kind = EwKind.ADD if node.op is Op.ADD else EwKind.SUB
        (ma, mb), s = _multiplier(node, 0.0, [_s(a) / _s(out), _s(b) / _s(out)])
    lo, hi = act_bounds(node, out)
    period = 0 if b.shape == a.shape else int(b.shape[1])
    return EwQuant(kind, _zp(a), _zp(b), _zp(out), ma, mb, s, lo, hi, period,
                   wide_bits((a, WIDE_IN), (out, WIDE_OUT), (b, WIDE_B)))


def single_table(lut: Node) -> bool:
    """Whether lut node ``lut`` quantizes to one shared table: every function but a PRelu
    with more than one slope (a per-channel table each). The rule that an int16 input
    (257 interpolated knots, :func:`lut_quant`), the int16 planner
    (:func:`tcc_compiler.quant.precision.wide_lut_reader`) and the conv's LUT epilogue
    (:mod:`tcc_compiler.schedule.epilogue`) share."""
    if lut.attrs.func is not LutFunc.PRELU:
        return True
    slope = lut.input(1)
    return slope is not None and slope.const is not None and slope.const.size == 1


def epilogue_lut(v: Value) -> Node | None:
    """The lut node a conv producing ``v`` can run in its epilogue, else None: ``v``'s only
    reader, reading it as input 0, with one shared table (:func:`single_table`). The one
    reader rule of the int16 planner (:func:`tcc_compiler.quant.precision.wide_lut_reader`),
    the epilogue fusion (:func:`tcc_compiler.schedule.epilogue.find_lut_epilogues`) and the
    conv geometry's written width (:func:`tcc_compiler.schedule.epilogue.wide_lut_reader`);
    each adds its own conditions on the conv (op, dtype, graph output, cascading)."""
    if len(v.uses) != 1:
        return None
    lut, idx = v.uses[0]
    return lut if lut.op is Op.LUT and idx == 0 and single_table(lut) else None


def lut_quant(node: Node) -> LutQuant:
    """Tables of a quantized lut node, built from its float function and the input/output
    quantization (specs/quantization.md, "Lookup-table activations")."""
    x, out = node.inputs[0], node.output
    a = node.attrs
    slope = None
    if a.func is LutFunc.PRELU:
        slope = np.asarray(node.inputs[1].const, dtype=np.float64).reshape(-1)
    wide_out = out.dtype == "int16"
    if x.dtype == "int16":   # interpolated int16 -> int8/int16 table (one shared table)
        if not single_table(node):
            raise InternalError(f"lut '{node.name}': an int16 input takes one shared table, "
                                f"not {slope.size} per-channel prelu slopes")
        return LutQuant(build_knots(a.func, a.alpha, a.beta, _s(x), _s(out), _zp(out),
                                    wide_out)[None], wide=True, wide_out=wide_out)
    if wide_out:   # quant/precision.py promotes a table's output only with its input
        raise InternalError(f"lut '{node.name}': an int16 output needs an int16 input "
                            f"('{x.name}' is {x.dtype})")
    return LutQuant(build_tables(a.func, a.alpha, a.beta, _s(x), _zp(x), _s(out), _zp(out),
                                 slope))


def group_softmax_table(node: Node) -> np.ndarray:
    """The exp table (u16 [256]) of a quantized group_softmax node, from its int8 input's
    scale (:func:`tcc_compiler.numerics.softmax.softmax_table`).

    Raises:
        InternalError: the input is not int8 with one scale.
    """
    x = node.inputs[0]
    if x.dtype != "int8" or np.size(x.quant.scale) != 1:
        raise InternalError(f"group_softmax '{node.name}': input '{x.name}' is {x.dtype} with "
                            f"{np.size(x.quant.scale)} scale(s); the NPU softmax takes int8 "
                            "with one scale")
    return softmax_table(_s(x))


def quantize_input(x: np.ndarray, v: Value) -> np.ndarray:
    """Host-side input quantization: ``clamp(rint(x / s) + zp, -128, 127)`` (ties to even;
    -32768..32767 for an int16 value).

    Args:
        x: float32 NCHW [1, C, H, W]. v: the quantized value (the graph input, or any int8 /
            int16 activation for the per-layer analysis).

    Returns:
        int8 (int16) NHWC [H, W, C] (the NPU's layout), from the compiled pass
        (:func:`~tcc_compiler.numerics.jit.quantize_nhwc`: the same integers) when available.
    """
    q = jit.quantize_nhwc(np.asarray(x), _s(v), _zp(v), int_dtype(v))
    if q is not None:
        return q
    q = quantize_tensor(x, _s(v), _zp(v), int_dtype(v))
    return np.ascontiguousarray(q[0].transpose(1, 2, 0))


def mean_output_error(q: np.ndarray, v: Value, f: np.ndarray) -> np.ndarray:
    """The per-channel mean float64 [C] of ``dequantize_output(q, v) - f`` over the pixels,
    as ``(dequantize_output(q, v).astype(np.float64) - f).mean(axis=(0, 2, 3))`` gives it,
    bit for bit (by the compiled pass :func:`~tcc_compiler.numerics.jit.mean_error` where it
    reproduces numpy's order of additions, else by that very expression).

    Args:
        q: integer NHWC [H, W, C] (an NPU output). v: its quantized value. f: the float
            value, NCHW [1, C, H, W] (float32 or float64).
    """
    err = jit.mean_error(q, v.quant.zero_point, v.quant.scale, f)
    if err is not None:
        return err
    qd = dequantize_output(q, v).reshape(f.shape)
    return (qd.astype(np.float64) - f).mean(axis=(0, 2, 3))


def dequantize_output(q: np.ndarray, v: Value) -> np.ndarray:
    """Host-side dequantization of an NPU output.

    Args:
        q: int8/int32 NHWC [H, W, C] or [C] for flat outputs. v: the quantized output value.

    Returns:
        float32 array shaped like ``v`` (NCHW order).
    """
    f = dequantize_tensor(q, v.quant.scale, v.quant.zero_point)
    if q.ndim == 3:
        f = f.transpose(2, 0, 1)[None]
    return f.reshape(v.shape).astype(np.float32)
