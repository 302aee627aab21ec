"""Element-wise add / sub / mul of two int8 activations with an optional per-channel
broadcast of the second operand (the NPU's EW_TILE; specs/quantization.md, "Element-wise ops
of two activations").

Add and sub requantize both operands with one shared shift (as ADD_TILE):
``y = clamp(zp_y + ((a - zp_a) Ma +- (b - zp_b) Mb + 2**(S-1)) >> S, lo, hi)``;
mul requantizes the exact product: ``y = clamp(zp_y + ((a - zp_a)(b - zp_b) Ma + 2**(S-1))
>> S, lo, hi)`` with ``Ma / 2**S ~ s_a s_b / s_y`` (|product| <= 255**2, so the int64 term
stays below 2**47 with Ma < 2**31).
"""

from __future__ import annotations

import enum

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


class EwKind(enum.IntEnum):
    """The ``kind`` field of EW_TILE."""

    ADD = 0
    SUB = 1
    MUL = 2


def broadcast_b(b: np.ndarray, n: int, period: int, b0: int) -> np.ndarray:
    """Operand b as n elements: itself (period 0) or ``b[(b0 + k) % period]`` (a [C] vector
    repeated over the pixels of an NHWC tensor, b0 the channel of the first element)."""
    b = b.reshape(-1)
    if period == 0:
        return b[:n]
    return b[(b0 + np.arange(n)) % period]


def eltwise_int8(kind: EwKind, a: np.ndarray, zp_a: int, mult_a: int, b: np.ndarray,
                 zp_b: int, mult_b: int, shift: int, zp_y: int, lo: int = INT8_MIN,
                 hi: int = INT8_MAX, period: int = 0, b0: int = 0,
                 out_dtype=np.int8) -> np.ndarray:
    """One EW_TILE on flat int8 or int16 operands.

    Add and sub take int16 operands (``|a - zp_a| Ma < 2**47``); mul takes int8 only (the
    compiler never gives it int16: ``|(a - zp_a)(b - zp_b)| Ma`` must stay below 2**63).

    Args:
        kind: add, sub or mul. a: int8/int16 [n]. b: int8/int16 [n] (period 0) or [period].
        zp_a, zp_b, zp_y: zero points. mult_a, mult_b: multipliers (< 2**31; mult_b unused by
        mul). shift: 1..62. lo, hi: clamp in the output type (activation). period, b0:
        broadcast of b. out_dtype: np.int8 or np.int16.

    Returns:
        ``out_dtype`` [n].
    """
    a64 = a.reshape(-1).astype(np.int64) - zp_a
    b64 = broadcast_b(b, a64.size, period, b0).astype(np.int64) - zp_b
    if kind is EwKind.MUL:
        t = a64 * b64 * int(mult_a)
    elif kind is EwKind.SUB:
        t = a64 * int(mult_a) - b64 * int(mult_b)
    else:
        t = a64 * int(mult_a) + b64 * int(mult_b)
    y = ((t + (np.int64(1) << (shift - 1))) >> shift) + zp_y
    return np.clip(y, lo, hi).astype(out_dtype)
