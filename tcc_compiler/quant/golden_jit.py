"""The golden model's own numba kernels (imported only when numba is,
:func:`tcc_compiler.numerics.jit.kernel_module`; used by :mod:`tcc_compiler.quant.golden`).

Why its own: ``tccc run --check`` compares the executor against the golden model, so a fault
in a kernel both call is invisible to it. These kernels are written from the definitions
(specs/quantization.md, conv epilogue and per-channel output clamp), on whole NHWC tensors and
in another loop order than the executor's tiled ``numerics/jit_dw.py`` and
``jit_kernels.epilogue`` (a fault in those stays visible). They also take a conv's whole
integer tail in one compiled call that releases the GIL (``nogil``): the golden model runs on a
worker thread beside the executor, and each numpy step it replaces held the GIL a little.

Arithmetic (every kernel): the epilogue of an int32 accumulator ``a`` of channel ``c`` is
``t = ((wrap32(a + bias[c]) M[c] + R[c] [+ (sc - zp_sc) Msc[c]]) >> S[c])`` in int64 (R =
2**(S-1); ``|wrap32| M < 2**63``, a shortcut's ``|sc - zp_sc| Msc < 2**47``), then the
layer's clamp ``y = min(max(t + zp_y, lo), hi)``, then (when ``pc``) the per-channel output
clamp ``min(max(y, cl[c]), ch[c])`` (cl = MIN + clamp_lo, ch = MAX - clamp_hi in the output
type; :func:`tcc_compiler.numerics.epilogue.channel_clamp`'s definition, computed here).
Depthwise sums: each product ``(x - zp) w`` is exact in int16 (``|x - zp| <= 255``, ``|w| <=
128``: ``<= 32,640``), and a sum of at most ``jit.MAX_DW_TAPS`` of them fits in int32, so the
sums equal the definition's in any order.
"""

from __future__ import annotations

import threading

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _tail(a, b, m, s, r, zp_y, lo, hi):
    """One element's epilogue and layer clamp (module docstring): ``a`` int32 sum, b, m,
    s, r that channel's parameters (int32 b, m; int64 s, r), lo, hi the layer's clamp."""
    t = np.int64(np.int32(np.int64(a) + b))          # wrap32(a + bias)
    t = ((t * np.int64(m) + r) >> s) + zp_y
    return min(max(t, lo), hi)


@numba.njit(cache=True, nogil=True, inline="always")
def _channel_clamp(y, pc, cl, ch):
    """The per-channel output clamp of one pixel's outputs ``y`` [C] in place, when ``pc``:
    ``min(max(y, cl), ch)`` with cl, ch [C] of ``y``'s type."""
    if pc:
        for k in range(y.size):
            y[k] = min(max(y[k], cl[k]), ch[k])


@numba.njit(cache=True, nogil=True, inline="always")
def _prod(xv, z, wv):
    """``(xv - z) wv`` as int16 (exact: |xv - z| <= 255, |wv| <= 128; int16 multiplies
    vectorise twice as wide as int32 ones); xv int8, z and wv int16."""
    return np.int16(np.int16(np.int16(xv) - z) * wv)


@numba.njit(cache=True, nogil=True)
def epilogue(acc, b, m, s, r, zp_y, lo, hi, pc, cl, ch, out):
    """The epilogue and clamp (module docstring) of int32 ``acc`` [P, O] (C-contiguous rows)
    into int8/int16 ``out`` [P, O]; parameters as :func:`depthwise_conv` ([O])."""
    p, o = acc.shape
    for i in range(p):
        ai = acc[i]
        yi = out[i]
        for k in range(o):
            yi[k] = _tail(ai[k], b[k], m[k], s[k], r[k], zp_y, lo, hi)
        _channel_clamp(yi, pc, cl, ch)


@numba.njit(cache=True, nogil=True)
def depthwise_conv(x, zp, w, sh, sw, dh, dw, top, left, b, m, s, r, zp_y, lo, hi, pc, cl, ch,
                   out):
    """A whole depthwise conv, any window: ``out[oy, ox, c]`` = the epilogue and clamp (module
    docstring) of ``sum_{ky, kx} (x[oy sh + ky dh - top, ox sw + kx dw - left, c] - zp)
    w[ky, kx, c]`` over the taps inside ``x`` (a tap in the padding reads ``zp``: adds 0).

    Row by row: an int32 row of sums [OW, C] starts at 0 and takes one tap at a time over
    the run of output columns whose input column lies inside ``x``, so no padded copy is made.

    Args:
        x: int8 [H, W, C] (NHWC, any strides). zp: its zero point (int). w: int16 [KH, KW, C].
        sh, sw, dh, dw: strides and dilations; top, left: the padding before rows, columns.
        b, m: int32 [C] bias and multiplier; s, r: int64 [C] shift and 2**(shift-1). zp_y,
        lo, hi: the output zero point and the layer's clamp (ints). pc: whether the
        per-channel clamp applies; cl, ch: its bounds, [C] of ``out``'s type.
        out: int8/int16 [OH, OW, C] written whole (must not overlap ``x``).
    """
    h, wd, c = x.shape
    oh, ow, _ = out.shape
    kh, kw, _ = w.shape
    acc = np.empty((ow, c), np.int32)
    z = np.int32(zp)
    for oy in range(oh):
        acc[:, :] = 0
        for ky in range(kh):
            iy = oy * sh + ky * dh - top
            if iy < 0 or iy >= h:
                continue
            xr = x[iy]
            for kx in range(kw):
                off = kx * dw - left            # input column = ox sw + off
                ox0 = 0 if off >= 0 else (-off + sw - 1) // sw
                last = wd - 1 - off             # ox sw <= last
                ox1 = min(ow, last // sw + 1) if last >= 0 else 0
                wt = w[ky, kx]
                for ox in range(ox0, ox1):
                    xp = xr[ox * sw + off]
                    ap = acc[ox]
                    for k in range(c):
                        ap[k] += (np.int32(xp[k]) - z) * np.int32(wt[k])
        epilogue(acc, b, m, s, r, zp_y, lo, hi, pc, cl, ch, out[oy])


@numba.njit(cache=True, nogil=True)
def depthwise_rows(x, zp, wt, dh, dw, top, left, b, m, s, r, zp_y, lo, hi, pc, cl, ch, out):
    """:func:`depthwise_conv` for a column stride of 1 (row stride 1 too: ``x``'s rows at
    ``oy + ky dh - top``), each tap over one contiguous run of output pixels x channels (a
    long vectorised loop, for layers of few channels where a pixel's C is short): ``x`` int8
    [H, W, C] C-contiguous, ``wt`` int16 [KH, KW, OW*C] (each tap's weights tiled over the
    output row); the other arguments as :func:`depthwise_conv`."""
    h, wd, c = x.shape
    oh, ow, _ = out.shape
    kh, kw, _ = wt.shape
    xf = x.reshape(h, wd * c)
    acc = np.empty(ow * c, np.int32)
    a2 = acc.reshape(ow, c)
    z = np.int16(zp)
    for oy in range(oh):
        acc[:] = 0
        for ky in range(kh):
            iy = oy + ky * dh - top
            if iy < 0 or iy >= h:
                continue
            xr = xf[iy]
            for kx in range(kw):
                off = kx * dw - left            # input column = ox + off
                j0 = max(0, -off) * c
                j1 = min(ow, wd - off) * c
                if j1 <= j0:
                    continue
                xv = xr[j0 + off * c:j1 + off * c]   # views: indices from 0, vectorised
                av = acc[j0:j1]
                wv = wt[ky, kx, j0:j1]
                for j in range(j1 - j0):
                    av[j] += np.int32(_prod(xv[j], z, wv[j]))
        epilogue(a2, b, m, s, r, zp_y, lo, hi, pc, cl, ch, out[oy])


@numba.njit(cache=True, nogil=True)
def patches(x, zpu, sh, sw, dh, dw, top, left, kh, kw, ow, out):
    """The integer GEMM's patch matrix of a conv window: ``out[oy OW + ox, (ky KW + kx) C + c]
    = x[iy, ix, c] + 128`` (uint8) with ``iy = oy sh + ky dh - top``, ``ix = ox sw + kx dw -
    left``, and ``zpu`` (the zero point + 128) where (iy, ix) is outside ``x`` (the padding).

    Output row band by output row band (oy), then window row (ky): a window row whose
    columns all lie inside ``x`` with a column dilation of 1 is one contiguous run of KW*C
    values of ``x``'s row, taken as one loop (vectorised even for a 3-channel stem).

    Args:
        x: int8 [H, W, C] C-contiguous. zpu: 0..255. sh, sw, dh, dw: strides and dilations;
            top, left: the padding before rows, columns. kh, kw: the window. ow: output
            columns. out: uint8 [OH*OW, KH*KW*C], written whole.
    """
    h, w, c = x.shape
    oh = out.shape[0] // ow
    span = kw * c
    xf = x.reshape(h, w * c)
    z = np.uint8(zpu)
    for oy in range(oh):
        rows = out[oy * ow:(oy + 1) * ow]
        for ky in range(kh):
            iy = oy * sh + ky * dh - top
            k0 = ky * span
            if iy < 0 or iy >= h:
                for ox in range(ow):
                    d = rows[ox, k0:k0 + span]
                    for j in range(span):
                        d[j] = z
                continue
            xr = xf[iy]
            for ox in range(ow):
                d = rows[ox, k0:k0 + span]
                ix0 = ox * sw - left
                if dw == 1 and ix0 >= 0 and ix0 + kw <= w:
                    s = xr[ix0 * c:ix0 * c + span]
                    for j in range(span):
                        d[j] = np.uint8(np.int16(s[j]) + 128)
                else:
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        dd = d[kx * c:(kx + 1) * c]
                        if ix < 0 or ix >= w:
                            for j in range(c):
                                dd[j] = z
                        else:
                            s = xr[ix * c:(ix + 1) * c]
                            for j in range(c):
                                dd[j] = np.uint8(np.int16(s[j]) + 128)


#: Largest window side :func:`window_kernel` specialises (its taps unrolled).
MAX_UNROLLED = 7
_made: dict[tuple[int, int], object] = {}
_lock = threading.Lock()


def _make(kh_: int, kw_: int):
    """The :func:`window_kernel` of a KH x KW window."""
    KH, KW = kh_, kw_   # closure constants: the tap loops unroll, the sums stay in registers

    @numba.njit(cache=True, nogil=True)
    def window(x, zp, w, sh, sw, dh, dw, top, left, b, m, s, r, zp_y, lo, hi, pc, cl, ch,
               out):
        h, wd, c = x.shape
        oh, ow, _ = out.shape
        z = np.int16(zp)
        acc = np.empty(c, np.int32)
        for oy in range(oh):
            iy0 = oy * sh - top
            rows_in = iy0 >= 0 and iy0 + (KH - 1) * dh < h
            yr = out[oy]
            for ox in range(ow):
                ix0 = ox * sw - left
                if rows_in and ix0 >= 0 and ix0 + (KW - 1) * dw < wd:   # every tap inside
                    for k in range(c):
                        a = np.int32(0)
                        for ky in range(KH):
                            for kx in range(KW):
                                a += np.int32(_prod(x[iy0 + ky * dh, ix0 + kx * dw, k], z,
                                                    w[ky, kx, k]))
                        acc[k] = a
                else:                                # a border pixel: the taps inside only
                    acc[:] = 0
                    for ky in range(KH):
                        iy = iy0 + ky * dh
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(KW):
                            ix = ix0 + kx * dw
                            if ix < 0 or ix >= wd:
                                continue
                            xp = x[iy, ix]
                            wt = w[ky, kx]
                            for k in range(c):
                                acc[k] += np.int32(_prod(xp[k], z, wt[k]))
                yp = yr[ox]
                for k in range(c):
                    yp[k] = _tail(acc[k], b[k], m[k], s[k], r[k], zp_y, lo, hi)
                _channel_clamp(yp, pc, cl, ch)
    return window


def window_kernel(kh: int, kw: int):
    """The depthwise kernel of a KH x KW window (sides up to :data:`MAX_UNROLLED`): the
    arguments and result of :func:`depthwise_conv`, the taps unrolled and each pixel's sums
    kept in registers (int16 products, exact: module docstring); a pixel with every tap inside
    ``x`` reads it directly, a border pixel takes its inside taps only. Made once per window
    and process (numba caches each on disk, keyed by its closure constants); other windows:
    :func:`depthwise_conv`."""
    key = (int(kh), int(kw))
    if max(key) > MAX_UNROLLED:
        return depthwise_conv
    with _lock:
        if key not in _made:
            _made[key] = _make(*key)
        return _made[key]


@numba.njit(cache=True, nogil=True)
def epilogue_sc(acc, b, m, s, r, zp_y, lo, hi, pc, cl, ch, sc, zp_sc, msc, out):
    """:func:`epilogue` with a shortcut: ``sc`` int8/int16 [P, O] (any strides) adds
    ``(sc - zp_sc) Msc[c]`` before the shift (``msc`` int32 [O]); ``out`` must not overlap
    ``sc`` except as the very same elements (each is read before it is written)."""
    p, o = acc.shape
    for i in range(p):
        ai = acc[i]
        si = sc[i]
        yi = out[i]
        for k in range(o):
            t = np.int64(np.int32(np.int64(ai[k]) + b[k]))
            t = ((t * np.int64(m[k]) + (np.int64(si[k]) - zp_sc) * np.int64(msc[k]) + r[k])
                 >> s[k]) + zp_y
            yi[k] = min(max(t, lo), hi)
        _channel_clamp(yi, pc, cl, ch)


@numba.njit(cache=True, nogil=True, inline="always")
def _quantized(v, scale, zp, lo, hi):
    """``min(max(rint(float64(v) / scale) + zp, lo), hi)`` (``v`` not NaN)."""
    return min(max(np.rint(np.float64(v) / scale) + zp, lo), hi)


@numba.njit(cache=True, nogil=True)
def quantize_input(x, scale, zp, lo, hi, out):
    """Host input quantization into the NPU's layout: ``out[h, w, c] = min(max(rint(
    float64(x[0, c, h, w]) / scale) + zp, lo), hi)`` (specs/quantization.md, "Input
    quantization (host)": ties to even, in float64), each output row written pixel by pixel
    from the C input rows (3 channels: one loop over the pixels reading the three rows
    side by side, which the compiler vectorises; the executor's ``jit_kernels.quantize_nhwc``
    quantizes channel by channel into a buffer, then transposes). ``x`` float32/float64
    [1, C, H, W], ``out`` int8/int16 [H, W, C]; scale, zp, lo, hi float64. Returns False at
    a NaN (no integer defined: the caller's numpy definition decides), else True."""
    _, c, h, w = x.shape
    nan = False
    for i in range(h):
        orow = out[i].reshape(w * c)
        if c == 3:
            r0, r1, r2 = x[0, 0, i], x[0, 1, i], x[0, 2, i]
            for j in range(w):
                a = _quantized(r0[j], scale, zp, lo, hi)
                b = _quantized(r1[j], scale, zp, lo, hi)
                d = _quantized(r2[j], scale, zp, lo, hi)
                nan |= (r0[j] != r0[j]) | (r1[j] != r1[j]) | (r2[j] != r2[j])
                orow[3 * j] = a
                orow[3 * j + 1] = b
                orow[3 * j + 2] = d
            continue
        for j in range(w):
            for ch in range(c):
                v = x[0, ch, i, j]
                nan |= v != v
                orow[c * j + ch] = _quantized(v, scale, zp, lo, hi)
    return not nan
