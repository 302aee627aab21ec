"""Lookup-table activations: the float functions, the 256-entry int8 tables built from them at
compile time, and the NPU's table kernel (specs/quantization.md, "Lookup-table activations").

The table IS the op's integer definition: entry ``q`` (q = -128..127, stored at index q + 128)
is ``clamp(rint(f((q - zp_in) * s_in) / s_out) + zp_out, -128, 127)``, computed in float64
with ``rint`` rounding half to even (the same rule as host-side input quantization). The
golden model and the executor both index the same table, so they agree by construction; the
only error against the float model is the int8 rounding of the input and of the output.
"""

from __future__ import annotations

import math

import numpy as np

from tcc_compiler.ir.ops import LutFunc
from tcc_compiler.numerics import jit
from tcc_compiler.isa.spec import LUT_WIDE_KNOTS

#: Entries of one table (every int8 input value).
LUT_ENTRIES = 256
#: An int16-input table (specs/quantization.md, "int16-input lookup tables") has one knot
#: every ``2**KNOT_SHIFT`` int16 values, the last one at 32768 (one past the int16 range):
#: ``isa.spec.LUT_WIDE_KNOTS`` knots, the command set's one definition of the count.
KNOT_SHIFT = 8
#: Fractional bits of a knot (the int8 output in units of ``2**-KNOT_FRAC`` steps).
KNOT_FRAC = 7

_ERF = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    """Element-wise error function in float64 (numpy has none; math.erf is correctly rounded
    to within 1 ulp)."""
    return _ERF(np.asarray(x, dtype=np.float64)).astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # split by sign so exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def lut_function(func: LutFunc, x: np.ndarray, alpha: float = 0.0, beta: float = 0.0,
                 slope: np.ndarray | float | None = None) -> np.ndarray:
    """Evaluate ``func`` in float64 (the ONNX definitions; see :class:`~tcc_compiler.ir.ops.
    LutFunc` for alpha/beta).

    Args:
        func: the function. x: float array (any shape).
        alpha, beta: the function's ONNX attributes (hardsigmoid, leakyrelu, elu, clip).
        slope: prelu only: scalar or an array broadcastable against ``x``.

    Returns:
        float64 array shaped like ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    if func is LutFunc.SIGMOID:
        return _sigmoid(x)
    if func is LutFunc.TANH:
        return np.tanh(x)
    if func is LutFunc.SILU:
        return x * _sigmoid(x)
    if func is LutFunc.HARDSIGMOID:
        return np.clip(alpha * x + beta, 0.0, 1.0)
    if func is LutFunc.HARDSWISH:
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if func is LutFunc.LEAKYRELU:
        return np.where(x >= 0, x, alpha * x)
    if func is LutFunc.PRELU:
        return np.where(x >= 0, x, np.asarray(slope, dtype=np.float64) * x)
    if func is LutFunc.MISH:
        return x * np.tanh(_softplus(x))
    if func is LutFunc.GELU:
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if func is LutFunc.GELU_TANH:
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if func is LutFunc.ELU:
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))
    if func is LutFunc.SOFTPLUS:
        return _softplus(x)
    if func is LutFunc.CLIP:
        return np.clip(x, alpha, beta)
    if func is LutFunc.ERF:
        return _erf(x)
    raise ValueError(f"unknown lookup-table function {func!r}")


def build_tables(func: LutFunc, alpha: float, beta: float, s_in: float, zp_in: int,
                 s_out: float, zp_out: int, slope: np.ndarray | None = None) -> np.ndarray:
    """The int8 -> int8 tables of a lookup-table activation.

    Args:
        func, alpha, beta: the function (see :func:`lut_function`).
        s_in, zp_in: input quantization (the producing op's int8 output).
        s_out, zp_out: output quantization.
        slope: prelu slopes, float [T] (T = 1 or channels); None for other functions.

    Returns:
        int8 [T, 256]: ``tables[t, q + 128]`` is the output for input ``q`` in channel
        ``c`` with ``t = c % T`` (T = 1: one shared table).
    """
    q = np.arange(-128, 128, dtype=np.float64)
    xr = (q - zp_in) * float(s_in)
    if slope is None:
        ys = lut_function(func, xr, alpha, beta)[None, :]
    else:
        sl = np.asarray(slope, dtype=np.float64).reshape(-1, 1)
        ys = lut_function(func, xr[None, :], alpha, beta, sl)
    t = np.rint(ys / float(s_out)) + zp_out
    return np.clip(t, -128, 127).astype(np.int8)


def apply_lut(x: np.ndarray, tables: np.ndarray, ch0: int = 0) -> np.ndarray:
    """The NPU's table kernel on int8 elements in NHWC order (channel fastest).

    Args:
        x: int8 array (any shape; flattened in C order: element ``k`` has channel
           ``(ch0 + k) % T``).
        tables: int8 [T, 256] (see :func:`build_tables`).
        ch0: channel of the first element (a chunk starting mid-pixel), 0 <= ch0 < T.

    Returns:
        int8 array shaped like ``x``.
    """
    t = tables.shape[0]
    if t == 1 and x.dtype == np.int8:
        # one gather: byte u of x's uint8 view is q = u - 256 [u >= 128], whose entry sits at
        # (u + 128) % 256, so the table rotated by half indexes the view directly (the
        # int64 index array and its two extra passes cost 0.9-6 ns an element against 0.5,
        # measured loaded; np.take is ~1.8x faster than fancy indexing here; same bytes)
        tab = np.asarray(tables[0]).astype(np.int8, copy=False)
        rot = np.concatenate((tab[128:], tab[:128]))
        y = jit.lut_int8(x, rot)   # compiled: no intp copy of the indices
        return y if y is not None else np.take(rot, x.view(np.uint8))
    idx = x.astype(np.int64).reshape(-1) + 128
    if t == 1:
        y = tables[0][idx]
    else:
        ch = (ch0 + np.arange(idx.size)) % t
        y = tables[ch, idx]
    return y.reshape(x.shape).astype(np.int8)


def _knot_frac(wide_out: bool) -> int:
    """Fractional bits of a knot: :data:`KNOT_FRAC` for an int8 output, 0 for an int16 one
    (the knots are then int16 outputs themselves)."""
    return 0 if wide_out else KNOT_FRAC


def build_knots(func: LutFunc, alpha: float, beta: float, s_in: float, s_out: float,
                zp_out: int, wide_out: bool = False) -> np.ndarray:
    """The 257 knots of an int16 -> int8 table, or of an int16 -> int16 table with
    ``wide_out`` (one shared table; no per-channel prelu).

    Knot ``k`` (k = 0..256) sits at the int16 input ``u_k = 256 k - 32768`` (zero point 0, as
    every int16 activation) and holds the output in ``2**-F`` steps (F = 7 for an int8
    output, 0 for an int16 one): ``clamp(rint((f(u_k * s_in) / s_out + zp_out) * 2**F),
    -32768, 32767)``, float64, ties to even (specs/quantization.md, "int16-input lookup
    tables").

    Args:
        func, alpha, beta: the function (see :func:`lut_function`).
        s_in: scale of the int16 input (symmetric). s_out, zp_out: the output's quantization
            (an int16 output: symmetric, zp_out 0).
        wide_out: the output is int16 (CONV_CFG out_mode bit3), not int8.

    Returns:
        int16 [257].
    """
    u = np.arange(LUT_WIDE_KNOTS, dtype=np.float64) * (1 << KNOT_SHIFT) - 32768.0
    y = lut_function(func, u * float(s_in), alpha, beta)
    k = np.rint((y / float(s_out) + zp_out) * (1 << _knot_frac(wide_out)))
    return np.clip(k, -32768, 32767).astype(np.int16)


def apply_lut_wide(x: np.ndarray, knots: np.ndarray, wide_out: bool = False) -> np.ndarray:
    """The NPU's int16-input table: linear interpolation between two knots.

    With ``u = x + 32768``, ``i = u >> 8``, ``f = u & 255``, ``S = 8 + F`` (F = 7 for an int8
    output, 0 with ``wide_out``):
    ``out = clamp((K[i] * (256 - f) + K[i + 1] * f + 2**(S - 1)) >> S, lo, hi)`` with
    ``[lo, hi]`` the int8 (or int16) range (an arithmetic shift: rounds half up; every term
    fits int32, ``|K| * 256 <= 2**23``).

    Args:
        x: int16 array (any shape). knots: int16 [257] (:func:`build_knots`, the same
            ``wide_out``).
        wide_out: int16 output (CONV_CFG out_mode bit3) instead of int8.

    Returns:
        int8 (int16 with ``wide_out``) array shaped like ``x``.
    """
    u = x.astype(np.int64) + 32768
    i, f = u >> KNOT_SHIFT, u & ((1 << KNOT_SHIFT) - 1)
    k = knots.astype(np.int64)
    acc = k[i] * ((1 << KNOT_SHIFT) - f) + k[i + 1] * f
    sh = KNOT_SHIFT + _knot_frac(wide_out)
    y = (acc + (1 << (sh - 1))) >> sh
    dt = np.int16 if wide_out else np.int8
    return np.clip(y, np.iinfo(dt).min, np.iinfo(dt).max).astype(dt)
