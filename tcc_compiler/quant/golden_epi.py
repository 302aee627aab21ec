"""The golden model's own numpy conv/fc epilogues (used by :mod:`tcc_compiler.quant.golden` on
the routes its compiled kernels (``quant/golden_conv.py``) do not take: without numba, int16
weights, the two-slope epilogue, the raw int32 output), written from specs/quantization.md
("Conv / FC epilogue", "Per-channel output clamp", "Two-slope epilogue", "Raw int32 output
mode", "Requantization and rounding") as int64 whole-tensor expressions.

Why not the executor's ``numerics.conv_epilogue`` / ``two_slope_epilogue`` /
``conv_epilogue_int32`` / ``channel_clamp``: ``tccc run --check`` compares the executor
against the golden model, so a fault in a function both call would be invisible to it. Here
the 32-bit wrap is an int32 cast, the multiplier of a two-slope epilogue is chosen before one
multiplication, the rounding is a floor division and the clamps are one ``np.clip`` with
per-channel bounds; no code is shared with them (the float64 shortcut of
``numerics/epilogue.py`` is not used: slower, but by the definition).
"""

from __future__ import annotations

import numpy as np


def wrapped_sum(acc: np.ndarray, bias: np.ndarray, acc64: bool = False) -> np.ndarray:
    """``acc + bias`` in int64, wrapped to the 32-bit accumulator (two's complement) unless
    ``acc64`` (int16 weights: a 64-bit accumulator, never wrapped).

    Args:
        acc: [..., O] accumulators, int32/int64 or exact integers held in float32/float64.
        bias: int32 [O].

    Returns:
        int64 [..., O].
    """
    a = np.asarray(acc).astype(np.int64)
    a += np.asarray(bias, np.int64)
    if not acc64:
        a = a.astype(np.int32).astype(np.int64)   # modulo 2**32, into [-2**31, 2**31)
    return a


def raw_int32(acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The raw output mode (CONV_CFG out_mode bit0): ``wrap32(acc + bias)``, int32 [..., O]."""
    return wrapped_sum(acc, bias).astype(np.int32)


def conv_epilogue(acc: np.ndarray, q, shortcut: np.ndarray | None = None,
                  two_slope: bool = False) -> np.ndarray:
    """The requantizing epilogue of a conv/fc with its ``conv_quant`` parameters ``q``:
    ``a = wrap32(acc + bias)`` (unwrapped with int16 weights, ``q.wide_w``),
    ``y = clamp(zp_y + floor((a M' + (sc - zp_sc) M_sc + 2**(S-1)) / 2**S), lo, hi)`` per
    output channel, ``M' = M`` (``two_slope``: ``M`` where ``a >= 0``, the below-zero
    multiplier ``q.sc_mult`` where ``a < 0``, and no shortcut), then the per-channel clamp
    ``min(max(y, MIN + clamp_lo[c]), MAX - clamp_hi[c])``. Exact in int64:
    ``|a| M < 2**62``, ``|sc - zp_sc| M_sc < 2**47``, ``2**(S-1) <= 2**61``.

    Args:
        acc: [..., O] accumulators (int32/int64, or exact integers in float32/float64).
        q: :class:`~tcc_compiler.quant.params.ConvQuant` (bias, mult, shift, sc_mult int [O];
            zp_out, act_lo, act_hi, zp_sc ints; out_dtype; clamp_lo / clamp_hi uint8 [O] or
            None; wide_w).
        shortcut: int8/int16 residual input broadcasting to ``acc`` (its zero point
            ``q.zp_sc``, multiplier ``q.sc_mult``), or None.
        two_slope: the two-slope (LeakyRelu) epilogue; ``shortcut`` must be None.

    Returns:
        ``q.out_dtype`` (int8 or int16) array shaped like ``acc``.
    """
    a = wrapped_sum(acc, q.bias, bool(q.wide_w))
    m = np.asarray(q.mult, np.int64)
    if two_slope:
        m = np.where(a < 0, np.asarray(q.sc_mult, np.int64), m)
    t = a * m
    if shortcut is not None:
        sc = np.asarray(shortcut).astype(np.int64)
        sc -= int(q.zp_sc)
        t += sc * np.asarray(q.sc_mult, np.int64)
    unit = np.left_shift(np.int64(1), np.asarray(q.shift, np.int64))
    t += unit >> 1
    t = np.floor_divide(t, unit)
    t += int(q.zp_out)
    y = np.clip(t, int(q.act_lo), int(q.act_hi))
    info = np.iinfo(q.out_dtype)
    if q.clamp_lo is not None:   # after the activation's clamp, as the spec orders them
        y = np.maximum(y, info.min + np.asarray(q.clamp_lo, np.int64))
    if q.clamp_hi is not None:
        y = np.minimum(y, info.max - np.asarray(q.clamp_hi, np.int64))
    return y.astype(q.out_dtype)
