"""The conv epilogue: requantize 32-bit accumulators to int8/int16 with an optional fused
residual add (specs/quantization.md, "Conv epilogue"), shared by the golden integer model and
the reference executor.

``y = clamp(zp_y + ((acc + bias) M[c] + (sc - zp_sc) Msc[c] + 2**(S[c]-1)) >> S[c], lo, hi)``

:func:`conv_epilogue_int64` is the definition, in int64. :func:`conv_epilogue` computes the
same in float64 wherever that is provably exact (:class:`EpilogueConsts`; four passes over the
data instead of seven), falling back to int64 elsewhere. The per-channel factors of the float64
form depend only on the parameters, so callers running one layer many times (the golden model,
the executor's tiles of one layer) compute them once with :func:`epilogue_consts`.

With int16 weights (``acc64``) the accumulator is 64-bit: ``acc + bias`` never wraps
(``|acc| < 2**47`` by the planner's bound, isa/spec.py ``WIDE_W_ACC_LIMIT``) and ``M < 2**15``,
so ``|acc + bias| M < 2**62`` and the int64 definition below holds without the wrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcc_compiler.numerics import jit

INT8_MIN, INT8_MAX = -128, 127

#: float64 holds every integer multiple of 2**-S of magnitude below 2**53 * 2**-S exactly; the
#: bound is evaluated in float64 and compared with half of that (its own few roundings cannot
#: shrink it by a factor of 2).
F64_EXACT_BOUND = 2.0 ** 52


@dataclass(frozen=True)
class EpilogueConsts:
    """Per-channel float64 factors of the exact float64 epilogue (:func:`epilogue_consts`).

    With ``p = 2**-S[c]`` the epilogue computes ``t = acc mp [+ sc mscp] + kp``, clamps ``t``
    to ``[0, hi - lo]``, truncates it to an unsigned integer and adds ``lo`` modulo 2**bits.

    Exactness (the proof): ``mp = M p`` and ``mscp = Msc p`` are integers below 2**31 scaled by
    a power of two, so exact in float64; ``kp = K p`` with the integer
    ``K = bias M - zp_sc Msc + 2**(S-1) + (zp_y - lo) 2**S``; ``acc`` and ``sc`` are exact
    integers. So ``t = (X + 2**(S-1)) / 2**S + zp_y - lo`` where ``X = (acc + bias) M +
    (sc - zp_sc) Msc`` (the int64 definition's sum before the shift). Every product, ``kp``
    and every partial sum is an integer multiple of ``p`` of magnitude at most ``B p`` with
    ``B = amax M + scmax Msc + |K|`` (``amax``: bound on ``|acc|``; ``scmax``: on ``|sc|``);
    when ``B < 2**53`` each is representable in binary64 (53-bit significand; ``p >= 2**-62``
    is far from the subnormal range), so every IEEE-754 multiply and add returns it exactly,
    in any order. Then ``floor(t) = (X + 2**(S-1)) >> S + zp_y - lo``, and since ``lo``, ``hi``
    are integers ``clamp(floor(t), 0, hi - lo) = floor(clamp(t, 0, hi - lo))``; converting a
    value >= 0 to an unsigned integer truncates, i.e. floors. Adding ``lo`` modulo 2**bits gives
    ``clamp(zp_y + (X + 2**(S-1)) >> S, lo, hi)`` in the output type. The accumulator must
    not wrap (``amax + max|bias| < 2**31``), which :func:`conv_epilogue` checks.

    Dead channels (a layer whose bound fails only through channels with a huge shift, e.g.
    EfficientNet-Lite0's channels whose bias saturated near -2**31, with shifts 53-58): a
    channel whose every feasible ``X`` gives the same clamped output ``v`` is constant
    whatever the input. Such a channel gets ``mp = mscp = 0``, ``kp = v - lo`` (an exact
    integer: the same clamp, floor and ``+ lo`` give ``v``) and leaves the bound of the
    others. Whether it is constant depends on ``amax`` (the span of ``X`` grows with it):
    ``dead_amax`` is the largest ``max |acc|`` for which every dead channel is
    (:func:`_dead_channels`, exact integers), which :meth:`exact_for` checks with the rest.

    Attributes:
        mp, kp: float64 [O]. mscp: float64 [O], or None without a shortcut.
        m_max: ``max M`` (float); rest_max: ``max_c (scmax Msc + |K|)`` (float), so the
            bound holds when ``amax m_max + rest_max < 2**52`` (both over the live channels).
        bmax: ``max |bias|`` (int). lo, hi: the clamp (lo <= hi). out_dtype: int8 or int16.
        dead_amax: the largest ``max |acc|`` for which every dead channel is dead (int), or
            None when no channel is treated as dead.
    """

    mp: np.ndarray
    mscp: np.ndarray | None
    kp: np.ndarray
    m_max: float
    rest_max: float
    bmax: int
    lo: int
    hi: int
    out_dtype: type
    dead_amax: int | None = None

    def exact_for(self, amax: int, acc64: bool = False) -> bool:
        """Whether accumulators with ``|acc| <= amax`` run exactly in float64 (``acc64``: a
        64-bit accumulator, which does not wrap at 2**31)."""
        return ((acc64 or amax + self.bmax < 2 ** 31)
                and amax * self.m_max + self.rest_max < F64_EXACT_BOUND
                and (self.dead_amax is None or amax <= self.dead_amax))

    def apply(self, acc: np.ndarray, shortcut: np.ndarray | None) -> np.ndarray:
        """The epilogue of ``acc`` [..., O] (int32 or exact integers in float32/float64) and
        the int8/int16 ``shortcut`` [..., O] (None when built without one); the caller has
        checked :meth:`exact_for`. Returns ``out_dtype`` shaped like ``acc``."""
        t = acc.astype(np.float64)
        t *= self.mp
        if self.mscp is not None:
            t += shortcut.astype(np.float64) * self.mscp
        t += self.kp
        np.clip(t, 0.0, float(self.hi - self.lo), out=t)
        udt = np.uint8 if np.dtype(self.out_dtype).itemsize == 1 else np.uint16
        u = t.astype(udt)
        u += udt(self.lo % (1 << (8 * np.dtype(udt).itemsize)))   # + lo, modulo 2**bits
        return u.view(self.out_dtype)


def epilogue_consts(bias: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp_y: int,
                    lo: int = INT8_MIN, hi: int = INT8_MAX, sc_mult: np.ndarray | None = None,
                    zp_sc: int = 0, sc_dtype=np.int8,
                    out_dtype=np.int8) -> EpilogueConsts | None:
    """The float64 factors of one layer's epilogue (:class:`EpilogueConsts`), or None when
    the float64 form cannot be exact for any accumulator (or ``lo > hi``).

    Args:
        bias: int32 [O]. mult: int [O] (0 <= M < 2**31). shift: int [O] in 1..62.
        zp_y, lo, hi: output zero point and clamp. sc_mult: int [O] shortcut multipliers, or
        None without a shortcut; zp_sc its zero point; sc_dtype: the shortcut's dtype (int8
        or int16: bounds ``|sc|`` by 128 or 32768). out_dtype: np.int8 or np.int16.
    """
    if lo > hi:
        return None
    b = np.asarray(bias, dtype=np.int64).reshape(-1)
    m = np.asarray(mult, dtype=np.int64).reshape(-1)
    s = np.asarray(shift, dtype=np.int64).reshape(-1)
    m, s, b = np.broadcast_arrays(m, s, b)
    p = np.ldexp(1.0, -s)
    mf = m.astype(np.float64)
    terms = [np.abs(b * mf), np.ldexp(1.0, s - 1), abs(zp_y - lo) * np.ldexp(1.0, s)]
    msc = None
    if sc_mult is not None:
        msc = np.broadcast_to(np.asarray(sc_mult, dtype=np.int64).reshape(-1), m.shape)
        scmax = -int(np.iinfo(np.dtype(sc_dtype)).min)
        terms += [(scmax + abs(zp_sc)) * msc.astype(np.float64)]
    rest = sum(terms)
    if not m.size:
        return None
    dead = np.zeros(m.shape, bool)
    dead_amax = None
    const = np.zeros(m.shape, np.float64)
    if float(rest.max()) >= F64_EXACT_BOUND:   # try the channels past half the bound as dead
        dead = rest >= F64_EXACT_BOUND / 2
        found = _dead_channels(b[dead], m[dead], s[dead], None if msc is None else msc[dead],
                               sc_dtype, int(zp_sc), int(zp_y), int(lo), int(hi))
        if found is None:
            return None
        const[dead] = np.array(found[0], np.float64) - lo
        dead_amax = found[1]
    live = ~dead
    sl = np.where(live, s, 1)
    # every live term below 2**53 (the bound): these int64 sums cannot overflow
    k = np.where(live, b * m + (np.int64(1) << (sl - 1)) + (np.int64(zp_y - lo) << sl), 0)
    if msc is not None:
        k -= np.where(live, np.int64(zp_sc) * msc, 0)
    kp = np.where(live, k.astype(np.float64) * p, const)
    mscp = None if msc is None else np.where(live, msc.astype(np.float64) * p, 0.0)
    return EpilogueConsts(np.where(live, mf * p, 0.0), mscp, kp,
                          float(mf[live].max(initial=0.0)), float(rest[live].max(initial=0.0)),
                          int(np.abs(b).max(initial=0)), int(lo), int(hi), out_dtype,
                          dead_amax)


def _dead_channels(b: np.ndarray, m: np.ndarray, s: np.ndarray, msc: np.ndarray | None,
                   sc_dtype, zp_sc: int, zp_y: int, lo: int,
                   hi: int) -> tuple[list[int], int] | None:
    """(the constant output ``v`` of each channel given, the largest ``amax`` for which every
    one is constant: :class:`EpilogueConsts`), or None when some channel is constant for no
    ``amax >= 0``. Python integers throughout (exact).

    ``v = clamp(q(bias M), lo, hi)`` with ``q(X) = zp_y + (X + 2**(S-1)) >> S`` (the output at
    ``acc = 0``, ``sc = zp_sc``); ``q(X) = u`` exactly for ``L_u <= X <= U_u``, ``L_u = (u -
    zp_y) 2**S - 2**(S-1)``, ``U_u = L_{u+1} - 1``. The feasible ``X`` span ``[(bias - amax) M
    + sl, (bias + amax) M + sh]`` (``sl``, ``sh``: the extremes of ``(sc - zp_sc) Msc`` over the
    shortcut's dtype). The output is ``v`` for all of them when the top stays <= ``U_v``
    (unless ``v = hi``, which everything above also clamps to) and the bottom >= ``L_v``
    (unless ``v = lo``)."""
    info = np.iinfo(np.dtype(sc_dtype))
    values, best = [], 2 ** 31
    for c in range(m.size):
        bc, mc, sc_ = int(b[c]), int(m[c]), int(s[c])
        msc_c = int(msc[c]) if msc is not None else 0
        sl, sh = (int(info.min) - zp_sc) * msc_c, (int(info.max) - zp_sc) * msc_c
        v = min(max(zp_y + ((bc * mc + (1 << (sc_ - 1))) >> sc_), lo), hi)
        rooms = []
        if v != hi:     # top of the span within v's step
            rooms.append(((v - zp_y + 1) << sc_) - (1 << (sc_ - 1)) - 1 - bc * mc - sh)
        if v != lo:     # bottom of the span within v's step
            rooms.append(bc * mc + sl - (((v - zp_y) << sc_) - (1 << (sc_ - 1))))
        for room in rooms:
            if room < 0:
                return None
            if mc:
                best = min(best, room // mc)
        values.append(v)
    return values, best


def conv_epilogue(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                  zp_y: int, lo: int = INT8_MIN, hi: int = INT8_MAX,
                  shortcut: np.ndarray | None = None, zp_sc: int = 0,
                  sc_mult: np.ndarray | None = None, out_dtype=np.int8,
                  consts: EpilogueConsts | None | bool = True, jit_params: tuple | None = None,
                  out: np.ndarray | None = None, acc64: bool = False) -> np.ndarray:
    """Requantize conv accumulators to int8 (or int16), with an optional fused residual add.

    ``y = clamp(zp_y + ((acc + bias) * M[c] + (sc - zp_sc) * Msc[c] + 2**(S[c]-1)) >> S[c],
    lo, hi)``: one rounding for both terms (specs/quantization.md, "Conv epilogue"). The
    result is :func:`conv_epilogue_int64`'s, computed in float64 when
    :meth:`EpilogueConsts.exact_for` the data's ``max |acc|`` (proof there), else in int64.

    Args:
        acc: [..., O] accumulators: int32, or exact integer values held in float32/float64
            (:func:`~tcc_compiler.numerics.gemm.conv_accumulate_f`). bias: int32 [O].
        mult, shift: int [O] multiplier (< 2**31) and shift (1..62) per output channel.
        zp_y: output zero point. lo, hi: clamp bounds in the output type (activation folded
        in). shortcut: int8 or int16 [..., O] residual input or None; zp_sc its zero point;
        sc_mult: int [O] its multiplier (same shift). out_dtype: np.int8 or np.int16.
        consts: :func:`epilogue_consts` of exactly these parameters (pass it to skip that
            work on a layer run many times; None when it returned None; True (the default):
            computed here).
        jit_params: :func:`~tcc_compiler.numerics.jit.epilogue_params` of exactly these
            parameters (the same saving for the compiled kernel), or None: derived there.
        out: ``out_dtype`` array shaped like ``acc`` (any strides: e.g. an SRAM box) the
            result is written to, or None; it may hold the shortcut itself (the same
            elements), no other operand.
        acc64: the accumulator is 64-bit (int16 weights): ``acc + bias`` is not wrapped to
            32 bits; every ``|acc + bias| * M`` must stay below 2**62 (the caller's bound).

    Returns:
        ``out_dtype`` array shaped like ``acc`` (``out`` when given).
    """
    y = None if acc64 else jit.epilogue(acc, bias, mult, shift, zp_y, lo, hi, shortcut, zp_sc,
                                        sc_mult, out_dtype, jit_params, out)
    if y is not None:       # the int64 definition, compiled (numerics/jit.py; 32-bit acc)
        return y
    if out is not None:
        out[...] = conv_epilogue(acc, bias, mult, shift, zp_y, lo, hi, shortcut, zp_sc,
                                 sc_mult, out_dtype, consts, acc64=acc64)
        return out
    if consts is True:
        consts = epilogue_consts(bias, mult, shift, zp_y, lo, hi,
                                 sc_mult if shortcut is not None else None, zp_sc,
                                 shortcut.dtype if shortcut is not None else np.int8,
                                 out_dtype)
    if consts is not None:
        amax = max(-int(acc.min()), int(acc.max())) if acc.size else 0
        if consts.exact_for(amax, acc64):
            return consts.apply(acc, shortcut)
    return conv_epilogue_int64(acc, bias, mult, shift, zp_y, lo, hi, shortcut, zp_sc,
                               sc_mult, out_dtype, acc64)


def two_slope_epilogue(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                       neg_mult: np.ndarray, shift: np.ndarray, zp_y: int,
                       lo: int = INT8_MIN, hi: int = INT8_MAX, out_dtype=np.int8,
                       consts: tuple = (True, True), jit_params: tuple = (None, None),
                       acc64: bool = False) -> np.ndarray:
    """The two-slope conv epilogue (CONV_CFG out_mode bit2; specs/quantization.md "Two-slope
    epilogue"): a LeakyRelu requantized in one rounding.

    ``a = wrap32(acc + bias)`` (not wrapped with ``acc64``); ``y = clamp(zp_y + ((a * M' +
    2**(S-1)) >> S), lo, hi)`` with ``M' = mult[c]`` where ``a >= 0`` and ``M' =
    neg_mult[c]`` where ``a < 0``: :func:`conv_epilogue` (no shortcut) with either multiplier,
    chosen element by element by the sign of ``a`` (the sign of the real pre-activation
    value ``a s_x s_w[c]``), so it is exact wherever that is.

    Args:
        acc: [..., O] accumulators (int32, or exact integers in float32/float64). bias: int32
            [O]. mult, neg_mult: int [O] multipliers (0 <= M < 2**31) above and below zero,
            sharing ``shift`` (int [O], 1..62). zp_y, lo, hi, out_dtype, acc64: as
            :func:`conv_epilogue`.
        consts, jit_params: the (above, below) pairs of :func:`conv_epilogue`'s ``consts`` and
            ``jit_params`` for ``mult`` and ``neg_mult`` (defaults: derived here).

    Returns:
        ``out_dtype`` array shaped like ``acc``.
    """
    pos = conv_epilogue(acc, bias, mult, shift, zp_y, lo, hi, out_dtype=out_dtype,
                        consts=consts[0], jit_params=jit_params[0], acc64=acc64)
    neg = conv_epilogue(acc, bias, neg_mult, shift, zp_y, lo, hi, out_dtype=out_dtype,
                        consts=consts[1], jit_params=jit_params[1], acc64=acc64)
    a = np.asarray(acc).astype(np.int64) + np.asarray(bias, np.int64)
    if not acc64:
        a = ((a + 2 ** 31) & (2 ** 32 - 1)) - 2 ** 31
    return np.where(a < 0, neg, pos)


def channel_clamp(y: np.ndarray, clamp_lo: np.ndarray | None,
                  clamp_hi: np.ndarray | None) -> np.ndarray:
    """The per-channel output clamp of the conv epilogue (parameter record bytes ``clamp_lo``,
    ``clamp_hi``; specs/quantization.md "Per-channel output clamp"): ``min(max(y, MIN +
    clamp_lo[c]), MAX - clamp_hi[c])`` with MIN, MAX the extremes of ``y``'s type, applied
    after the layer's clamp (and before a LUT epilogue), in place.

    Args:
        y: int8/int16 [..., O] requantized outputs (any strides: e.g. an SRAM box).
        clamp_lo, clamp_hi: uint8 (or int) [O] offsets, or None when every one is zero.

    Returns:
        ``y`` itself.
    """
    if clamp_lo is None and clamp_hi is None:
        return y
    info = np.iinfo(y.dtype)
    lo = info.min + (np.zeros(y.shape[-1], np.int64) if clamp_lo is None
                     else np.asarray(clamp_lo, np.int64))
    hi = info.max - (np.zeros(y.shape[-1], np.int64) if clamp_hi is None
                     else np.asarray(clamp_hi, np.int64))
    np.maximum(y, lo.astype(y.dtype), out=y)
    np.minimum(y, hi.astype(y.dtype), out=y)
    return y


def conv_epilogue_int64(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray,
                        shift: np.ndarray, zp_y: int, lo: int = INT8_MIN, hi: int = INT8_MAX,
                        shortcut: np.ndarray | None = None, zp_sc: int = 0,
                        sc_mult: np.ndarray | None = None, out_dtype=np.int8,
                        acc64: bool = False) -> np.ndarray:
    """:func:`conv_epilogue` by its int64 definition (same arguments and result): the
    reference the float64 form is tested against, and the path for wrapping accumulators.

    Computed in int64 in as few passes as exactness allows: when ``acc + bias`` cannot wrap
    (``max |acc| + max |bias| < 2**31``, checked on the data), the bias, rounding constant and
    shortcut zero point fold into one per-channel constant (the total is below 2**63:
    ``|acc + bias| M < 2**62``, ``|sc - zp_sc| Msc < 2**39``, ``2**(S-1) <= 2**61``; int64
    adds wrap modulo 2**64, so a sum whose true value fits is exact in any order); the clamp
    runs before adding ``zp_y``, which is added in the output type (both sides are congruent
    modulo 2**bits and the result lies in [lo, hi]). int16 operands (an int16 shortcut: ``|sc -
    zp_sc| Msc < 2**47``; accumulators of int16 inputs are still 32-bit) keep every bound.
    ``acc64`` (int16 weights): ``acc + bias`` is never wrapped; ``|acc + bias| M < 2**62`` is
    the caller's bound (``|acc| < 2**47``, ``M < 2**15``).
    """
    bias = np.asarray(bias, dtype=np.int64)
    m = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    msc = np.asarray(sc_mult, dtype=np.int64) if shortcut is not None else None
    amax = max(-int(acc.min()), int(acc.max())) if acc.size else 0
    bmax = int(np.abs(bias).max(initial=0))
    if acc64 or amax + bmax < 2 ** 31:
        up = _common_shift(shift, m, msc, amax + bmax, shortcut)
        if up is not None:     # one shift for all channels: scalar shift, cheaper
            m, shift = m << up, shift + up
            msc = msc << up if msc is not None else None
        const = (np.int64(1) << (shift - 1)) + bias * m
        t = acc.astype(np.int64)
        t *= m
    else:                                         # the accumulator is 32-bit (wraps)
        const = np.int64(1) << (shift - 1)
        t = acc.astype(np.int64)
        t += bias
        t = ((t + 2 ** 31) % 2 ** 32) - 2 ** 31
        t *= m
    if shortcut is not None:
        t += np.multiply(shortcut, msc, dtype=np.int64)
        const = const - np.int64(zp_sc) * msc
    t += const
    t >>= shift[0] if shift.size and (shift == shift[0]).all() else shift
    np.clip(t, lo - zp_y, hi - zp_y, out=t)
    y = t.astype(out_dtype)
    y += np.dtype(out_dtype).type(zp_y)
    return y


def _common_shift(shift: np.ndarray, m: np.ndarray, msc: np.ndarray | None, amax: int,
                  shortcut: np.ndarray | None) -> np.ndarray | None:
    """Per-channel left shifts ``up = max(S) - S`` that give every channel the shift max(S)
    (``M << up``, ``Msc << up``: ``(q << up) >> max(S) == q >> S`` exactly), or None when
    the channels already share one shift or the scaled terms could pass 2**62 (then each
    channel keeps its own). Bound: ``|acc + bias| M' + |sc - zp_sc| Msc' + 2**(max S - 1)
    + |bias| M' < 2**63`` with ``|acc + bias|, |bias| <= amax`` and ``|sc - zp_sc| <= 2**16``
    (int8 or int16 shortcut); ``up <= 30`` keeps the scaled multipliers below 2**61."""
    if not shift.size or (shift == shift[0]).all():
        return None
    top = int(shift.max())
    up = top - shift
    if int(up.max()) > 30:      # M, Msc < 2**31: keeps M << up below 2**61 (no int64 wrap)
        return None
    mmax = int((m << up).max())
    scmax = int((msc << up).max()) if msc is not None and shortcut is not None else 0
    if 2 * amax * mmax + (scmax << 16) + (1 << (top - 1)) >= 2 ** 62:
        return None
    return up
