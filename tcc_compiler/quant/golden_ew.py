"""The golden model's own element-wise ops of two activations (used by
:mod:`tcc_compiler.quant.golden`): add, sub and mul with one shared shift, written from
specs/quantization.md ("Element-wise ops of two activations") and specs/isa.md (ADD_TILE,
EW_TILE) as whole NHWC-tensor numpy expressions.

Why not the executor's ``numerics.add_int8`` / ``numerics/eltwise.eltwise_int8``: ``tccc run
--check`` compares the executor against the golden model, so a fault in a kernel both call
would be invisible to it. Here a per-channel operand b is a numpy broadcast over the channel
axis (not an index array), the rounding a floor division, and no code is shared with them.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.numerics.eltwise import EwKind


def ew_int(kind: EwKind, a: np.ndarray, b: np.ndarray, zp_a: int, zp_b: int, zp_y: int,
           mult_a: int, mult_b: int, shift: int, lo: int, hi: int,
           out_dtype=np.int8) -> np.ndarray:
    """``y = clamp(zp_y + floor((t + 2**(S-1)) / 2**S), lo, hi)`` with
    ``t = (a - zp_a) Ma + (b - zp_b) Mb`` (add), ``(a - zp_a) Ma - (b - zp_b) Mb`` (sub) or
    ``(a - zp_a)(b - zp_b) Ma`` (mul), exact in int64 (|t| < 2**49 for int16 add/sub
    operands and multipliers < 2**31; 255**2 * 2**31 < 2**47 for an int8 mul).

    Args:
        kind: add, sub or mul.
        a: int8/int16 NHWC-ordered array (channels last, any leading shape).
        b: int8/int16, ``a``'s element count (same layout), or C values (one per channel of
            ``a``, broadcast over its pixels).
        zp_a, zp_b, zp_y: zero points. mult_a, mult_b: multipliers (mult_b unused by mul).
        shift: S, 1..62. lo, hi: output clamp (the activation) in ``out_dtype``'s range.
        out_dtype: np.int8 or np.int16.

    Returns:
        ``out_dtype`` array shaped like ``a``.

    Raises:
        InternalError: ``b``'s element count neither matches ``a``'s nor divides it.
    """
    n, m = a.size, b.size
    if m != n and (m == 0 or n % m):
        raise InternalError(f"golden element-wise op: operand of {m} elements against {n}")
    da = a.reshape(-1, m).astype(np.int64)
    da -= zp_a
    db = b.reshape(-1 if m == n else 1, m).astype(np.int64)
    db -= zp_b
    if kind is EwKind.MUL:
        t = da * db
        t *= int(mult_a)
    else:
        t = da * int(mult_a)
        t += db * (int(mult_b) if kind is EwKind.ADD else -int(mult_b))
    t += 1 << (shift - 1)
    t //= 1 << shift
    t += zp_y
    np.clip(t, lo, hi, out=t)
    return t.astype(out_dtype).reshape(a.shape)
