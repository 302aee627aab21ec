"""Depthwise numba kernels specialised per window (KH, KW) and column step (SW, DW), each
step a block of :data:`PIXELS` output pixels of one row by :data:`LANES` channels with the
int32 sums in registers (imported only when numba is, by
:mod:`tcc_compiler.numerics.jit_kernels`; chosen by :mod:`tcc_compiler.numerics.jit`).

The input is first copied into an int8 buffer bordered with the zero point covering every
tap of every output pixel, its channels rounded up to a multiple of LANES, so the steps have
no bounds checks; they sum ``x w`` over every tap from ``-zp sum(w)`` (:func:`sums_start`):
``sum (x - zp) w`` exactly, a tap in the padding adding ``zp w - zp w = 0`` as in the
definition (half the bytes of a centred int16 copy, and no arithmetic in it).

A step (:func:`_block`, LLVM vector IR generated per KH, KW, SW, DW and block width; generic
vector operations, no ISA-specific instruction, so LLVM lowers it for any CPU numba runs on)
loads each input vector of a tap row once for all the block's pixels that read it (a
stride-1 3x3 row: 6 loads for 4 pixels, not 12) and each tap vector once per block (not per
pixel): about a third of the bytes read per product of the per-pixel kernel, whose loads,
not its arithmetic, bounded it. Each product is exact in int16 (|x|, |w| <= 128: <= 2**14)
and widened before the sum; the true sum fits in int32 (KH KW <= ``jit.MAX_DW_TAPS``) and
the int32 adds wrap, so the bytes are the generic kernels'.

The fused kernel requantizes each step's sums in registers (:func:`_block_y`, int32 lanes:
a 32x32 -> high-32 multiply and a rounding shift, :func:`epilogue_params` proving it equal
to the int64 formula per channel, its table made once per layer by :func:`epilogue_table`;
the clamp and shift before the multiply only in vectors with a shift of 32 or less) and
stores the int8/int16 bytes straight into the output; the tail channels, and layers whose
table is empty, keep the int64 formula on a row of sums. EfficientNet-Lite0's 27 unrolled
calls (CPU us per image, best of 60, loaded): 770 with the int64 loop, 705 in registers.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: Channels per vector of a step (int16 products, int32 sums: one 256-bit and one 512-bit
#: register on an AVX-512 CPU; LLVM splits them on narrower ones).
LANES = 16

#: Output pixels per step. Measured on this AMD EPYC (Zen 5; EfficientNet-Lite0's 27 unrolled
#: depthwise tiles, CPU us per image, best of 60 per tile, loaded): per-pixel kernel 939-1006,
#: blocks of 2 766, 4 754, 6 753, 8 785; blocks of 4 with 32-channel vectors 796.
PIXELS = 4

_lock = threading.Lock()
_made: dict[tuple[int, int, int, int], tuple] = {}


def _literal(t) -> int:
    """The value of an integer literal type (a closure constant passed to :func:`_block`)."""
    if not isinstance(t, types.IntegerLiteral):
        raise numba.errors.TypingError(f"jit_dw._block wants literal ints, got {t}")
    return int(t.literal_value)


def _sums(context, builder, sig, args, KH, KW, PX, SW, DW):
    """The IR of one step's PX sum vectors (see :func:`_block`); args (xs, xo, rstep, taps,
    to, tstep, init) and their types in sig.args[:7]."""
    xs_, xo_, rs, t_, to_, ts, i_ = args[:7]
    i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    v8, v16, v32 = (ir.VectorType(t, LANES) for t in (i8, i16, i32))
    xp = _base(context, builder, sig.args[0], xs_, xo_, i8)
    tp = _base(context, builder, sig.args[3], t_, to_, i16)
    ip = _base(context, builder, sig.args[6], i_, to_, i32)
    sums = [builder.load(builder.bitcast(ip, v32.as_pointer()), align=4)] * PX
    for ky in range(KH):
        row = builder.gep(xp, [builder.mul(rs, ir.Constant(i64, ky))])
        xv = {}
        for p in range(PX):
            for kx in range(KW):
                col = p * SW + kx * DW
                if col not in xv:
                    xv[col] = builder.sext(builder.load(_at(builder, row, ts, col, v8),
                                                        align=1), v16)
        for kx in range(KW):
            w = builder.load(_at(builder, tp, ts, ky * KW + kx, v16), align=2)
            for p in range(PX):
                prod = builder.mul(xv[p * SW + kx * DW], w)   # exact in int16
                sums[p] = builder.add(sums[p], builder.sext(prod, v32))
    return sums


def _base(context, builder, ty, val, off, elt):
    """Pointer (``elt*``) to element ``off`` of the array ``val`` of numba type ``ty``."""
    data = context.make_array(ty)(context, builder, val).data
    return builder.gep(builder.bitcast(data, elt.as_pointer()), [off])


def _at(builder, ptr, step, k, vty):
    """``ptr + k step`` (elements) as a pointer to the vector type vty."""
    q = builder.gep(ptr, [builder.mul(step, ir.Constant(ir.IntType(64), k))])
    return builder.bitcast(q, vty.as_pointer())


@intrinsic
def _block(typingctx, xs, xo, rstep, taps, to, tstep, init, acc, ao, kh, kw, px, sw, dw):
    """One step: ``acc[ao + p tstep + l] = init[to + l] + sum over ky, kx of
    int32(int16(xs[xo + ky rstep + (p SW + kx DW) tstep + l]) taps[to + (ky KW + kx) tstep
    + l])`` (int32 adds, wrapping) for p < PX, l < LANES. xs int8 (the padded input [PH, PW,
    CP], CP = tstep, C-contiguous), taps int16 [KH, KW, CP] (int8 values: each product
    exact in int16, |x w| <= 2**14), init int32 [CP], acc int32 (a row [OW, CP]); offsets in
    elements; kh, kw, px, sw, dw literal ints (closure constants of the caller). The caller
    keeps every index in bounds."""
    sig = types.void(xs, types.intp, types.intp, taps, types.intp, types.intp, init, acc,
                     types.intp, kh, kw, px, sw, dw)
    KH, KW, PX, SW, DW = (_literal(t) for t in (kh, kw, px, sw, dw))

    def codegen(context, builder, signature, args):
        sums = _sums(context, builder, signature, args, KH, KW, PX, SW, DW)
        v32 = ir.VectorType(ir.IntType(32), LANES)
        ap = _base(context, builder, signature.args[7], args[7], args[8], ir.IntType(32))
        for p in range(PX):
            builder.store(sums[p], _at(builder, ap, args[5], p, v32), align=4)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _block_y(typingctx, xs, xo, rstep, taps, to, tstep, init, ep, out, yo, ystep,
             kh, kw, px, sw, dw, pre):
    """:func:`_block` with :func:`epilogue_params`' exact int32 epilogue applied to the sums in
    registers: ``out[yo + p ystep + l] = clamp(((b(s) m) >> 32) + r) >> sh) + zp_y, lo,
    hi)``, b(s) = ``clamp(s, alo, ahi) << k`` (literal ``pre`` 1; ``s`` when 0: every k of
    the LANES channels 0), the rows of ``ep`` (int32 [9, CP], CP = tstep) at ``to + l``;
    out int8/int16 (any array; offsets and ystep in its elements, its LANES channels at yo
    contiguous). The caller keeps every index in bounds."""
    sig = types.void(xs, types.intp, types.intp, taps, types.intp, types.intp, init, ep, out,
                     types.intp, types.intp, kh, kw, px, sw, dw, pre)
    KH, KW, PX, SW, DW, PRE = (_literal(t) for t in (kh, kw, px, sw, dw, pre))
    bits = out.dtype.bitwidth

    def codegen(context, builder, signature, args):
        sums = _sums(context, builder, signature, args, KH, KW, PX, SW, DW)
        i32, i64, iy = ir.IntType(32), ir.IntType(64), ir.IntType(bits)
        v32, v64, vy = (ir.VectorType(t, LANES) for t in (i32, i64, iy))
        pp = _base(context, builder, signature.args[7], args[7], args[4], i32)
        alo, ahi, k, m, r, sh, zy, lo, hi = (
            builder.load(_at(builder, pp, args[5], j, v32), align=4) for j in range(9))
        m64 = builder.sext(m, v64)
        yp = _base(context, builder, signature.args[8], args[8], args[9], iy)
        for p in range(PX):
            b = sums[p]
            if PRE:
                b = builder.shl(_clamp(builder, b, alo, ahi), k)
            b = builder.mul(builder.sext(b, v64), m64)
            h = builder.trunc(builder.ashr(b, ir.Constant(v64, [ir.Constant(i64, 32)] * LANES)),
                              v32)
            t = builder.add(builder.ashr(builder.add(h, r), sh), zy)
            t = builder.trunc(_clamp(builder, t, lo, hi), vy)
            builder.store(t, _at(builder, yp, args[10], p, vy), align=1)
        return context.get_dummy_value()
    return sig, codegen


def _clamp(builder, v, lo, hi):
    """IR: min(max(v, lo), hi), signed, per lane."""
    v = builder.select(builder.icmp_signed("<", v, lo), lo, v)
    return builder.select(builder.icmp_signed(">", v, hi), hi, v)


@numba.njit(cache=True, nogil=True)
def padded_input(x, zp, top, left, ph, pw, cp):
    """int8 [PH, PW, CP]: ``x[i, j]`` at [i + top, j + left], ``zp`` elsewhere and in the
    channels past C; x int8 [H, W, C] (any strides), zp in -128..127, CP >= C; input pixels
    outside the buffer are dropped."""
    h, w, c = x.shape
    xs = np.empty((ph, pw, cp), np.int8)
    z = np.int8(zp)
    for pi in range(ph):
        i = pi - top
        row = xs[pi]
        for pj in range(pw):
            j = pj - left
            xo = row[pj]
            if 0 <= i < h and 0 <= j < w:
                xi = x[i, j]
                for ch in range(np.uint64(c)):
                    xo[ch] = xi[ch]
                for ch in range(np.uint64(c), np.uint64(cp)):
                    xo[ch] = z
            else:
                for ch in range(np.uint64(cp)):
                    xo[ch] = z
    return xs


def padded_taps(taps: np.ndarray) -> np.ndarray:
    """The kernels' taps operand: int16 [KH, KW, CP] (C-contiguous) of int8-valued ``taps``
    [KH, KW, C], CP = C rounded up to a multiple of :data:`LANES`, zeros past C."""
    kh, kw, c = taps.shape
    t16 = np.zeros((kh, kw, -(-c // LANES) * LANES), np.int16)
    t16[:, :, :c] = taps
    return t16


def sums_start(t16: np.ndarray, zp: int, bias: np.ndarray | None = None) -> np.ndarray:
    """The kernels' start of the sums: int32 [CP] = ``wrap32(bias - zp sum(w))`` (bias int32
    [C], 0 when None; zeros past C) for :func:`padded_taps` ``t16``. The kernels sum
    ``x w`` over every tap, the padding holding ``zp``: ``sum (x - zp) w = sum x w - zp sum
    w`` exactly (|zp sum w| <= 128 * 128 KH KW), modulo 2**32 as the int32 adds wrap."""
    start = -int(zp) * t16.astype(np.int64).sum(axis=(0, 1))
    if bias is not None:
        start[:bias.size] += np.asarray(bias, np.int64)
    return ((start + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)


@numba.njit(cache=True, nogil=True)
def epilogue_params(m, s, rnd, zp_y, lo, hi, ep):
    """Fill ep int32 [9, CP] (CP >= C) with the int32 form of ``jit_kernels.epilogue``'s
    ``clamp(zp_y + (a M + 2**(S-1)) >> S, lo, hi)`` for int32 sums a (m int32 [C], s/rnd
    int64 [C]; zp_y, lo, hi ints) that :func:`_block_y` computes; True when every channel
    has one, else False (ep then unspecified: the caller keeps the int64 formula).

    Rows: alo, ahi, k, M, r, sh, zp_y, lo, hi, with k = max(0, 33 - S), S' = S + k, r =
    2**(S' - 33), sh = S' - 32, and y = clamp(((b M) >> 32) + r) >> sh) + zp_y, lo, hi) for
    b = clamp(a, alo, ahi) 2**k. Exact: (b M + 2**(S'-1)) >> S' = (((b M) >> 32) + r) >> sh
    (floor shifts compose, 2**(S'-1) a multiple of 2**32 as S' >= 33) and equals (a M +
    2**(S-1)) >> S for b = a 2**k; alo/ahi (only when k > 0) are the largest a with output
    <= lo and the smallest with output >= hi, the output being non-decreasing in a (M >= 0),
    so clamping a first changes no byte; b must fit in int32. int32 arithmetic: |(b M) >>
    32| < 2**30, r <= 2**30 (S' <= 63). Needs 0 <= M < 2**31, 2 <= S <= 63, rnd = 2**(S-1),
    |lo|, |hi|, |zp_y| <= 2**20 (int8/int16 outputs)."""
    if not (-2 ** 20 <= lo <= hi < 2 ** 20 and -2 ** 20 <= zp_y < 2 ** 20):
        return False
    for ch in range(m.size):
        mc, sc = np.int64(m[ch]), np.int64(s[ch])
        if mc < 0 or sc < 1 or sc > 63 or rnd[ch] != np.int64(1) << (sc - 1):
            return False
        k = max(0, 33 - sc)
        if k > 31:   # an int32 shift by 32 or more is undefined (poison in LLVM)
            return False
        alo, ahi = -2 ** 31, 2 ** 31 - 1
        if k > 0 and mc == 0:
            alo, ahi = 0, 0
        elif k > 0:   # sc <= 32: the products below fit in int64 (|lo|, |hi|, |zp_y| < 2**20)
            alo = ((lo - zp_y + 1) * (np.int64(1) << sc) - rnd[ch] - 1) // mc
            ahi = -((rnd[ch] - (hi - zp_y) * (np.int64(1) << sc)) // mc)
            if alo < -(2 ** 31 >> k) or ahi >= 2 ** 31 >> k:
                return False
        ep[0, ch], ep[1, ch], ep[2, ch], ep[3, ch] = alo, ahi, k, mc
        ep[4, ch], ep[5, ch] = np.int64(1) << (sc + k - 33), sc + k - 32
        ep[6, ch], ep[7, ch], ep[8, ch] = zp_y, lo, hi
    return True


def epilogue_table(m: np.ndarray, s: np.ndarray, rnd: np.ndarray, zp_y: int, lo: int, hi: int,
                   cp: int) -> np.ndarray:
    """The fused kernel's ``ep`` operand (made once per layer): int32 [9, CP] of
    :func:`epilogue_params` (m int32 [C], s/rnd int64 [C], C <= CP; zeros past C), or int32
    [0, CP] when a channel has no int32 form (the kernel then keeps the int64 formula)."""
    ep = np.zeros((9, cp), np.int32)
    if not epilogue_params(np.asarray(m), np.asarray(s), np.asarray(rnd), int(zp_y), int(lo),
                           int(hi), ep):
        return np.zeros((0, cp), np.int32)
    return ep


def _make(kh_: int, kw_: int, sw_: int, dw_: int) -> tuple:
    """The (plain, fused) kernels of one window and column step; see :func:`kernels`."""
    KH, KW, SW, DW = kh_, kw_, sw_, dw_   # closure constants: the steps unroll
    PX, L = PIXELS, LANES
    # (the closures hold ints only: numba keys its disk cache on their pickled cells, and a
    # dispatcher's pickle differs per process: such a kernel was compiled anew in every one)

    @numba.njit(cache=True, nogil=True)
    def plain(x, zp, t16, start, sh, dh, top, left, out):
        oh, ow, c = out.shape
        cp = t16.shape[2]
        pw = (ow - 1) * SW + (KW - 1) * DW + 1
        xs = padded_input(x, zp, top, left, (oh - 1) * sh + (KH - 1) * dh + 1, pw, cp)
        acc = np.empty((ow, cp), np.int32)   # one output row's sums
        rstep = dh * pw * cp
        for oy in range(oh):
            rb = oy * sh * pw * cp
            for v in range(0, cp, L):   # the row's sums, in blocks of PX pixels
                ox = 0
                while ox + PX <= ow:
                    _block(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, acc,
                           ox * cp + v, KH, KW, PX, SW, DW)
                    ox += PX
                while ox < ow:
                    _block(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, acc,
                           ox * cp + v, KH, KW, 1, SW, DW)
                    ox += 1
            for ox in range(ow):
                a, o = acc[ox], out[oy, ox]
                for ch in range(np.uint64(c)):
                    o[ch] = a[ch]

    @numba.njit(cache=True, nogil=True)
    def fused(x, zp, t16, start, sh, dh, top, left, m, s, rnd, zp_y, lo, hi, ep, out):
        oh, ow, c = out.shape
        cp = t16.shape[2]
        pw = (ow - 1) * SW + (KW - 1) * DW + 1
        xs = padded_input(x, zp, top, left, (oh - 1) * sh + (KH - 1) * dh + 1, pw, cp)
        acc = np.empty((ow, cp), np.int32)   # one output row's sums (the int64 channels)
        rstep = dh * pw * cp
        isz = out.itemsize
        st0, st1, st2 = out.strides
        cy = 0   # channels below cy: the int32 epilogue in registers, straight into out
        if ep.shape[0] == 9 and st2 == isz and st0 % isz == 0 and st1 % isz == 0:
            cy = c // L * L
        pre = np.zeros(cp // L, np.int32)   # a vector with a channel's k > 0 (S <= 32)
        for ch in range(cy):
            pre[ch // L] |= ep[2, ch]
        for oy in range(oh):
            rb = oy * sh * pw * cp
            for v in range(0, cp, L):   # the row's sums, in blocks of PX pixels
                ox = 0
                if v < cy and pre[v // L]:
                    yb = (oy * st0 + v * st2) // isz
                    while ox + PX <= ow:
                        _block_y(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, ep, out,
                                 yb + ox * st1 // isz, st1 // isz, KH, KW, PX, SW, DW, 1)
                        ox += PX
                    while ox < ow:
                        _block_y(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, ep, out,
                                 yb + ox * st1 // isz, st1 // isz, KH, KW, 1, SW, DW, 1)
                        ox += 1
                    continue
                if v < cy:   # no clamp and shift before the multiply
                    yb = (oy * st0 + v * st2) // isz
                    while ox + PX <= ow:
                        _block_y(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, ep, out,
                                 yb + ox * st1 // isz, st1 // isz, KH, KW, PX, SW, DW, 0)
                        ox += PX
                    while ox < ow:
                        _block_y(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, ep, out,
                                 yb + ox * st1 // isz, st1 // isz, KH, KW, 1, SW, DW, 0)
                        ox += 1
                    continue
                while ox + PX <= ow:
                    _block(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, acc,
                           ox * cp + v, KH, KW, PX, SW, DW)
                    ox += PX
                while ox < ow:
                    _block(xs, rb + ox * SW * cp + v, rstep, t16, v, cp, start, acc,
                           ox * cp + v, KH, KW, 1, SW, DW)
                    ox += 1
            for ox in range(ow):
                a, y = acc[ox], out[oy, ox]
                for ch in range(np.uint64(cy), np.uint64(c)):
                    t = ((np.int64(a[ch]) * np.int64(m[ch]) + rnd[ch]) >> s[ch]) + zp_y
                    y[ch] = min(max(t, lo), hi)

    return plain, fused


def kernels(kh: int, kw: int, sw: int, dw: int) -> tuple:
    """The two kernels of a KH x KW window with column stride SW and dilation DW (made once
    per key and process; numba caches each specialisation on disk, keyed by its closure
    constants), ``t16`` being :func:`padded_taps` of the int8 taps [KH, KW, C]:

    * ``plain(x, zp, t16, start, sh, dh, top, left, out)``: out int32 [OH, OW, C] (any
      strides, overwritten) = sum over the taps of (x - zp) w; x int8 [H, W, C] (NHWC, any
      strides), zp in -128..127, start = :func:`sums_start` ``(t16, zp)``; sh/dh the row
      stride and dilation, top/left the pads.
    * ``fused(x, zp, t16, start, sh, dh, top, left, m, s, rnd, zp_y, lo, hi, ep, out)``:
      start = ``sums_start(t16, zp, bias)`` gives ``wrap32(sums + bias)``, then
      ``jit_kernels.epilogue``'s int64 formula into out int8/int16 [OH, OW, C] (any strides;
      may overlap ``x``, copied whole first); m int32 [C], s/rnd int64 [C]; ep =
      :func:`epilogue_table` ``(m, s, rnd, zp_y, lo, hi, CP)``: with its 9 rows, the whole
      LANES-channel vectors of an output with contiguous channels get the same bytes in
      registers (:func:`_block_y`), the rest by the int64 formula.
    """
    key = (int(kh), int(kw), int(sw), int(dw))
    with _lock:
        if key not in _made:
            _made[key] = _make(*key)
        return _made[key]


@numba.njit(cache=True, nogil=True)
def lut_gather(xu, rot, out):
    """out[k] = rot[xu[k]]: xu uint8 [N] (an int8 tensor's bytes), rot int8 [256] (a table
    rotated by half, numerics/lut.py ``apply_lut``), out int8 [N]."""
    for k in range(xu.size):
        out[k] = rot[xu[k]]
