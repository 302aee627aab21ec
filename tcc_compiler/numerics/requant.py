"""Fixed-point requantization: ``y = (x * M + 2**(S-1)) >> S`` (round half up).

Rule (specs/quantization.md, "Requantization"): the product ``x * M`` is formed exactly in a
64-bit signed accumulator, the rounding constant ``2**(S-1)`` is added, and the result is shifted
right arithmetically by ``S`` (floor division by ``2**S``). Ties therefore round toward
+infinity (round half up), e.g. 2.5 -> 3 and -2.5 -> -2. ``M`` is a positive integer below
``2**31`` and ``S`` lies in [1, 62].
"""

from __future__ import annotations

import math

import numpy as np

from tcc_compiler.errors import InternalError

#: Multipliers are unsigned 31-bit values stored in int32 fields.
MULT_BITS = 31
#: Largest right shift the epilogue supports.
SHIFT_MAX = 62


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Approximate a positive real scale ``real`` by ``M / 2**S``.

    ``M`` is normalised into [2**30, 2**31) so it keeps 31 significant bits (the
    gemmlowp/TFLite convention, Jacob et al. 2018, section 2.2), and ``S`` is clamped to
    [1, SHIFT_MAX]; very small scales lose bits of M instead.

    Args:
        real: the real multiplier, >= 0 (0 gives M = 0, S = 1).

    Returns:
        (M, S) with 0 <= M < 2**31 and 1 <= S <= SHIFT_MAX.

    Raises:
        InternalError: ``real`` is negative, NaN, infinite, or >= 2**30.
    """
    if not math.isfinite(real) or real < 0:
        raise InternalError(f"requantization scale must be finite and >= 0, got {real}")
    if real == 0.0:
        return 0, 1
    if real >= 2.0 ** 30:
        raise InternalError(f"requantization scale {real} too large")
    mant, exp = math.frexp(real)          # real = mant * 2**exp, mant in [0.5, 1)
    shift = MULT_BITS - exp               # M = mant * 2**31
    if shift > SHIFT_MAX:
        mult = int(round(real * 2.0 ** SHIFT_MAX))
        return mult, SHIFT_MAX
    if shift < 1:
        raise InternalError(f"requantization scale {real} needs a left shift")
    mult = int(round(mant * 2.0 ** MULT_BITS))
    if mult == 2 ** MULT_BITS:            # mant rounded up to 1.0
        mult //= 2
        shift -= 1
        if shift < 1:
            raise InternalError(f"requantization scale {real} too large")
    return mult, shift


def quantize_multipliers_shared(reals: list[float]) -> tuple[list[int], int]:
    """Approximate several reals by ``M_i / 2**S`` with one shared shift ``S``.

    Used where two terms are summed before one rounding (a conv accumulator and its residual
    shortcut): the largest real sets ``S`` so its multiplier keeps 31 bits; the others get
    fewer bits, never more than 31.

    Args:
        reals: non-negative finite reals, at least one of them > 0.

    Returns:
        ([M_i], S) with every 0 <= M_i < 2**31.

    Raises:
        InternalError: all reals are 0, or any is invalid.
    """
    biggest = max(reals)
    if biggest <= 0:
        raise InternalError("shared multiplier needs one positive scale")
    _, shift = quantize_multiplier(biggest)
    mults = []
    for r in reals:
        if not math.isfinite(r) or r < 0:
            raise InternalError(f"requantization scale must be finite and >= 0, got {r}")
        m = int(round(r * 2.0 ** shift))
        if m >= 2 ** MULT_BITS:  # rounding of the biggest one overflowed: drop one bit
            return quantize_multipliers_shared([x / 2.0 for x in reals])[0], shift - 1
        mults.append(m)
    return mults, shift


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of each real, vectorised (per-channel conv scales): the same
    float64 operations (``frexp``, a multiply by a power of two, round half to even), so the
    same results; any real off the common path (0, a clamped or an overflowing shift, an
    invalid value) goes through :func:`quantize_multiplier` itself.

    Args:
        reals: float [N].

    Returns:
        (M, S): int64 [N] each.

    Raises:
        InternalError: as :func:`quantize_multiplier`, for the first invalid real.
    """
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        mant, exp = np.frexp(r)
        shift = MULT_BITS - exp.astype(np.int64)
        mult = np.rint(mant * 2.0 ** MULT_BITS)
        odd = ~(np.isfinite(r) & (r > 0) & (r < 2.0 ** 30) & (shift >= 1)
                & (shift <= SHIFT_MAX) & (mult < 2.0 ** MULT_BITS))
    mult = np.where(odd, 0, mult).astype(np.int64)
    for i in np.flatnonzero(odd):
        mult[i], shift[i] = quantize_multiplier(float(r[i]))
    return mult, shift


def quantize_multipliers_shared_pairs(reals) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multipliers_shared` of each row of ``reals`` [N, K] (a conv's
    accumulator and shortcut scales per channel), vectorised with the same float64
    operations; a row off the common path goes through :func:`quantize_multipliers_shared`.

    Returns:
        (M [N, K], S [N]): int64.

    Raises:
        InternalError: as :func:`quantize_multipliers_shared`, for the first invalid row.
    """
    r = np.asarray(reals, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok_vals = (np.isfinite(r) & (r >= 0)).all(axis=1)
        _, shift = quantize_multipliers(np.where(ok_vals, r.max(axis=1), 1.0))
        mult = np.rint(r * np.ldexp(1.0, shift)[:, None])
        odd = ~(ok_vals & (r.max(axis=1) > 0) & (mult < 2.0 ** MULT_BITS).all(axis=1))
    mult = np.where(odd[:, None], 0, mult).astype(np.int64)
    for i in np.flatnonzero(odd):
        ms, shift[i] = quantize_multipliers_shared([float(x) for x in r[i]])
        mult[i] = ms
    return mult, shift


def narrow_multipliers(real, sc_real, mult, shift, sc_mult, limit: int):
    """Per-channel multipliers with the accumulator multiplier below ``limit`` (a power of 2):
    the int16-weight epilogue's (isa/spec.py ``WIDE_W_MULT_LIMIT``, specs/quantization.md
    "int16 weights"). A channel whose ``M`` reaches ``limit`` drops ``d`` bits of shift and its
    multipliers are rounded again from the reals, ``M = rint(real * 2**(S - d))`` (likewise
    ``M_sc``), the smallest ``d`` that brings ``M`` below ``limit``; the others keep theirs.

    Args:
        real: float64 [O] accumulator scales; sc_real: float64 [O] shortcut scales or None.
        mult, shift, sc_mult: int64 [O] from :func:`quantize_multipliers` (or the shared
            pairs). limit: exclusive bound of ``M``.

    Returns:
        (mult, shift, sc_mult) int64 [O] (new arrays).

    Raises:
        InternalError: a channel would need a shift below 1.
    """
    mult, shift, sc_mult = (np.array(a, np.int64) for a in (mult, shift, sc_mult))
    for c in np.flatnonzero(mult >= limit):
        d = int(mult[c]).bit_length() - (limit.bit_length() - 1)
        while True:
            s = int(shift[c]) - d
            if s < 1:
                raise InternalError(f"requantization scale {real[c]} too large for a "
                                    f"{limit.bit_length() - 1}-bit multiplier")
            m = int(round(float(real[c]) * 2.0 ** s))
            if m < limit:
                break
            d += 1
        mult[c], shift[c] = m, s
        if sc_real is not None:
            sc_mult[c] = int(round(float(sc_real[c]) * 2.0 ** s))
    return mult, shift, sc_mult


def requantize(x: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int) -> np.ndarray:
    """Apply ``(x * M + 2**(S-1)) >> S`` element-wise in int64.

    Args:
        x: integer array (any shape); |x| * M must stay below 2**63 (the caller's bound:
           |x| < 2**32 and M < 2**31).
        mult: M, scalar or broadcastable array (e.g. per output channel along the last axis).
        shift: S, scalar or broadcastable array, each in [1, 62].

    Returns:
        int64 array of the same shape as ``x``.
    """
    x = np.asarray(x, dtype=np.int64)
    m = np.asarray(mult, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    return (x * m + (np.int64(1) << (s - 1))) >> s


def quantize_tensor(x: np.ndarray, scale: float, zero_point: int,
                    dtype=np.int8) -> np.ndarray:
    """Host-side float -> int8 (or int16): ``clamp(rint(x / scale) + zero_point, min, max)``
    with the type's bounds (-128..127, -32768..32767).

    ``rint`` rounds half to even (IEEE default), computed in float64.

    Returns:
        ``dtype`` array shaped like ``x``.
    """
    info = np.iinfo(np.dtype(dtype))
    q = np.rint(np.asarray(x, dtype=np.float64) / float(scale)) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize_tensor(q: np.ndarray, scale, zero_point) -> np.ndarray:
    """``(q - zero_point) * scale`` in float64 -> float32; per-channel scale/zero point
    broadcast along the LAST axis (NHWC channels)."""
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point, dtype=np.float64)
    return ((q.astype(np.float64) - z) * s).astype(np.float32)
