"""The golden model's own lookup-table activations (used by :mod:`tcc_compiler.quant.golden`):
the 256-entry int8 table and the 257-knot int16-input table, each a whole-tensor numpy
formulation written from the definitions (specs/isa.md LUT_TILE and CONV_CFG flags bit3,
specs/quantization.md "int16-input lookup tables").

Why not the executor's ``numerics/lut.apply_lut`` / ``apply_lut_wide``: ``tccc run --check``
compares the executor against the golden model, so a fault in a kernel both call would be
invisible to it. These index differently (an offset-binary byte view, a per-channel 2-D
gather; ``divmod`` and a floor division in int32 for the knots) and share no code with them.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError


def lut_int8(x: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """``out = tables[c % T][q + 128]`` for every int8 element ``q`` of channel ``c``.

    Args:
        x: int8 NHWC-ordered array (channels last, any leading shape): element ``k`` of its C
            order has channel ``k % C``, and its table is ``tables[c % T]``.
        tables: int8 [T, 256] (T = 1 shared, or T dividing the channel count: per channel).

    Returns:
        int8 array shaped like ``x``.

    Raises:
        InternalError: ``x`` is not int8, or T does not divide the element count.
    """
    if x.dtype != np.int8:
        raise InternalError(f"golden lookup table: int8 input expected, got {x.dtype}")
    tab = np.asarray(tables, dtype=np.int8)
    t = tab.shape[0]
    # q + 128 is q's byte with its top bit flipped (two's complement -> offset binary)
    idx = np.bitwise_xor(np.ascontiguousarray(x).view(np.uint8), np.uint8(0x80))
    if t == 1:
        return np.take(tab[0], idx)
    if x.size % t:
        raise InternalError(f"golden lookup table: {t} tables for {x.size} elements")
    rows = idx.reshape(-1, t)
    return tab[np.arange(t)[None, :], rows].reshape(x.shape)


def lut_int16(x: np.ndarray, knots: np.ndarray, wide_out: bool = False) -> np.ndarray:
    """The int16-input table: ``u = x + 32768``, ``i, f = divmod(u, 256)``,
    ``out = clamp(floor((K[i] * (256 - f) + K[i + 1] * f + 2**(S - 1)) / 2**S), lo, hi)`` with
    ``S = 15`` and the int8 range for an int8 output, ``S = 8`` and the int16 range with
    ``wide_out`` (specs/isa.md CONV_CFG flags bit3 / out_mode bit3). Every term fits int32
    (``|K| * 256 <= 2**23``).

    Args:
        x: int16 array (any shape). knots: int16 [257] in output units times ``2**(S - 8)``.
        wide_out: int16 output instead of int8.

    Returns:
        int8 (int16 with ``wide_out``) array shaped like ``x``.

    Raises:
        InternalError: ``x`` is not int16 or there are not 257 knots.
    """
    if x.dtype != np.int16 or np.shape(knots) != (257,):
        raise InternalError(f"golden int16 table: int16 input and 257 knots expected, got "
                            f"{x.dtype} and {np.shape(knots)}")
    k = np.asarray(knots, dtype=np.int32)
    i, f = np.divmod(x.astype(np.int32) + 32768, 256)
    s = 8 if wide_out else 15
    acc = k[i] * (256 - f) + k[i + 1] * f + (1 << (s - 1))
    out = np.floor_divide(acc, 1 << s)
    dt = np.int16 if wide_out else np.int8
    info = np.iinfo(dt)
    return np.minimum(np.maximum(out, info.min), info.max).astype(dt)
