"""Depthwise numba kernels specialised per window (KH, KW), with each channel's int32 sum kept
in a register across the taps (imported only when numba is, by
:mod:`tcc_compiler.numerics.jit_kernels`; chosen by :mod:`tcc_compiler.numerics.jit`).

The input is first copied, centred (``x - zp``, int16) into a zero-bordered buffer covering
every tap of every output pixel (a tap in the padding reads ``zp - zp = 0`` and adds 0, as in
the definition), so the pixel loop has no bounds checks. KH and KW are compile-time constants
of each specialisation (closure constants), so the compiler unrolls the taps and vectorises
the channel loop: one register of sums per vector of channels, loaded taps and inputs only,
where the generic kernels load and store the int32 sums on every tap. The channels are taken
in blocks of :data:`CHANNEL_BLOCK` (each channel's sum is its own: the same sums in any
order of channels). Each product is exact
in int16 (|x - zp| <= 255, |w| <= 128: <= 32,640) and widened before the sum; the sum fits in
int32 (KH KW <= ``jit.MAX_DW_TAPS``), so the bytes are the generic kernels'.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

#: Channels per block: each kernel runs the pixels over one block of channels, then the next.
#: Why: a pixel's taps and inputs over all C channels (2 KH KW C bytes each) outgrow the
#: 48 KiB L1 data cache from about 500 channels of a 5x5 window, so every tap's row was read
#: from L2. Measured on this AMD EPYC (the fused kernel, CPU us, best of 60, RT priority,
#: loaded), whole vs blocks of 240: 14x14x672 5x5 125 -> 100, 14x14x480 5x5 89 -> 68,
#: 28x28x672 5x5 stride 2 151 -> 115, 6x7x1152 5x5 48 -> 34, 7x7x1152 3x3 27 -> 21;
#: 28x28x240 5x5 and 11x56x144 3x3 (one block) unchanged; blocks of 160 and 288 within 5 %,
#: of 120 (not a multiple of 16 int32 lanes) 10-25 % slower. The loop indices are unsigned
#: (a block starting past 0 with signed indices kept numba's negative-index checks in the
#: loop and stopped the vectorising: 10x slower).
CHANNEL_BLOCK = 240

_lock = threading.Lock()
_made: dict[tuple[int, int], tuple] = {}


@numba.njit(cache=True, nogil=True)
def padded_centred(x, zp, top, left, ph, pw):
    """int16 [PH, PW, C]: ``x[i, j] - zp`` at [i + top, j + left], 0 elsewhere; x int8
    [H, W, C] (any strides), zp in -128..127; input pixels outside the buffer are dropped."""
    h, w, c = x.shape
    xs = np.zeros((ph, pw, c), np.int16)
    z = np.int16(zp)
    for i in range(h):
        pi = i + top
        if pi < 0 or pi >= ph:
            continue
        for j in range(w):
            pj = j + left
            if pj < 0 or pj >= pw:
                continue
            xi = x[i, j]
            xo = xs[pi, pj]
            for ch in range(c):
                xo[ch] = np.int16(xi[ch]) - z
    return xs


def _make(kh_: int, kw_: int) -> tuple:
    """The (plain, fused) kernels of one window; see :func:`kernels`."""
    KH, KW = kh_, kw_   # closure constants: the tap loops unroll
    CB = CHANNEL_BLOCK

    @numba.njit(cache=True, nogil=True)
    def plain(x, zp, taps, sh, sw, dh, dw, top, left, out):
        oh, ow, c = out.shape
        xs = padded_centred(x, zp, top, left, (oh - 1) * sh + (KH - 1) * dh + 1,
                            (ow - 1) * sw + (KW - 1) * dw + 1)
        for c0 in range(0, c, CB):   # channel blocks (module docstring)
            cs, ce = np.uint64(c0), np.uint64(min(c0 + CB, c))
            for oy in range(oh):
                iy = np.uint64(oy * sh)
                for ox in range(ow):
                    ix = np.uint64(ox * sw)
                    o = out[oy, ox]
                    for ch in range(cs, ce):
                        a = np.int32(0)
                        for ky in range(KH):
                            for kx in range(KW):
                                a += np.int32(np.int16(
                                    xs[iy + np.uint64(ky * dh), ix + np.uint64(kx * dw), ch]
                                    * taps[ky, kx, ch]))
                        o[ch] = a

    @numba.njit(cache=True, nogil=True)
    def fused(x, zp, taps, sh, sw, dh, dw, top, left, bias, m, s, rnd, zp_y, lo, hi, out):
        oh, ow, c = out.shape
        xs = padded_centred(x, zp, top, left, (oh - 1) * sh + (KH - 1) * dh + 1,
                            (ow - 1) * sw + (KW - 1) * dw + 1)
        acc = np.empty(c, np.int32)   # one pixel's sums: the epilogue in its own loop
        for c0 in range(0, c, CB):   # (inside the tap loop it stopped the vectorising)
            cs, ce = np.uint64(c0), np.uint64(min(c0 + CB, c))
            for oy in range(oh):
                iy = np.uint64(oy * sh)
                for ox in range(ow):
                    ix = np.uint64(ox * sw)
                    for ch in range(cs, ce):
                        a = np.int32(bias[ch])
                        for ky in range(KH):
                            for kx in range(KW):
                                a += np.int32(np.int16(
                                    xs[iy + np.uint64(ky * dh), ix + np.uint64(kx * dw), ch]
                                    * taps[ky, kx, ch]))
                        acc[ch] = a
                    y = out[oy, ox]
                    for ch in range(cs, ce):
                        t = ((np.int64(acc[ch]) * np.int64(m[ch]) + rnd[ch]) >> s[ch]) + zp_y
                        y[ch] = min(max(t, lo), hi)

    return plain, fused


def kernels(kh: int, kw: int) -> tuple:
    """The two kernels of a KH x KW window (made once per window and process; numba caches
    each specialisation on disk, keyed by its closure constants):

    * ``plain(x, zp, taps, sh, sw, dh, dw, top, left, out)``: out int32 [OH, OW, C]
      (C-contiguous, overwritten) = sum over the taps of (x - zp) w; x int8 [H, W, C]
      (NHWC, any strides), zp in -128..127, taps int16 [KH, KW, C] (int8 values).
    * ``fused(..., left, bias, m, s, rnd, zp_y, lo, hi, out)``: the sums started at the bias
      (int32 adds wrap: ``wrap32(acc + bias)``), then ``jit_kernels.epilogue``'s int64 formula
      into out int8/int16 [OH, OW, C] (any strides; may overlap ``x``, copied whole first);
      bias/m int32 [C], s/rnd int64 [C].
    """
    key = (int(kh), int(kw))
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
