"""The numba kernels behind :mod:`tcc_compiler.numerics.jit` (imported only when numba is;
their arithmetic and its exactness are described there). Compiled on first use per operand
types and cached on disk."""

from __future__ import annotations

import numba
import numpy as np

from tcc_compiler.numerics.jit_dw import kernels as dw_kernels  # noqa: F401 (re-exported)
from tcc_compiler.numerics.jit_dw import padded_taps as dw_padded_taps  # noqa: F401 (re-exported)
from tcc_compiler.numerics.jit_dw import sums_start as dw_sums_start  # noqa: F401 (re-exported)
from tcc_compiler.numerics.jit_dw import epilogue_table as dw_epilogue_table  # noqa: F401,E501
from tcc_compiler.numerics.jit_dw import lut_gather  # noqa: F401 (re-exported)

_WRAP, _MASK32 = 2 ** 31, 2 ** 32 - 1


@numba.njit(cache=True, nogil=True)
def epilogue(acc, bias, m, s, rnd, zp_y, lo, hi, out):
    """out[i, j, c] = clamp(zp_y + (wrap32(acc + bias) M + 2**(S-1)) >> S, lo, hi); acc int32
    [A, B, O], bias/m int32 [O] (0 <= M < 2**31), s/rnd int64 [O] (rnd = 2**(S-1)), out
    int8/int16 [A, B, O] (any strides: an SRAM box). ``wrap32`` is the int32 conversion of the
    int64 sum (two's complement truncation); both factors of ``x M`` are int32 values widened
    to int64, so the product is one 32x32->64 multiply (vectorised as such)."""
    na, nb, o = acc.shape
    for i in range(na):
        for j in range(nb):
            a = acc[i, j]
            y = out[i, j]
            for c in range(o):
                x = np.int64(np.int32(a[c] + bias[c]))
                t = ((x * np.int64(m[c]) + rnd[c]) >> s[c]) + zp_y
                y[c] = min(max(t, lo), hi)


@numba.njit(cache=True, nogil=True)
def epilogue_sc(acc, bias, m, s, rnd, zp_y, lo, hi, sc, zp_sc, msc, out):
    """:func:`epilogue` with the fused residual: ``+ (sc - zp_sc) Msc`` before the shift;
    sc int8/int16 [A, B, O] (any strides), msc int32 [O] (0 <= Msc < 2**31)."""
    na, nb, o = acc.shape
    for i in range(na):
        for j in range(nb):
            a = acc[i, j]
            y = out[i, j]
            v = sc[i, j]
            for c in range(o):
                x = np.int64(np.int32(a[c] + bias[c]))
                t = x * np.int64(m[c]) + (np.int64(v[c]) - zp_sc) * np.int64(msc[c]) + rnd[c]
                t = (t >> s[c]) + zp_y
                y[c] = min(max(t, lo), hi)


@numba.njit(cache=True, nogil=True)
def depthwise(x, zp, taps, sh, sw, dh, dw, top, left, out):
    """out[oy, ox, c] += sum over taps inside x of (x - zp) w; x int8 [H, W, C], taps int32
    [KH, KW, C], out int32 [OH, OW, C] (zeroed by the caller)."""
    h, w, c = x.shape
    oh, ow, _ = out.shape
    kh, kw, _ = taps.shape
    for oy in range(oh):
        for ky in range(kh):
            iy = oy * sh + ky * dh - top
            if iy < 0 or iy >= h:
                continue
            for ox in range(ow):
                for kx in range(kw):
                    ix = ox * sw + kx * dw - left
                    if ix < 0 or ix >= w:
                        continue
                    for ch in range(c):
                        out[oy, ox, ch] += (np.int32(x[iy, ix, ch]) - zp) * taps[ky, kx, ch]


@numba.njit(cache=True, nogil=True)
def _centred(x, zp):
    """``x - zp`` as int16 [H, W, C] (x int8 [H, W, C], -128 <= zp <= 127: |x - zp| <= 255)."""
    h, w, c = x.shape
    xs = np.empty((h, w, c), np.int16)
    z = np.int16(zp)
    for i in range(h):
        for j in range(w):
            xi = x[i, j]
            xo = xs[i, j]
            for ch in range(c):
                xo[ch] = np.int16(xi[ch]) - z
    return xs


@numba.njit(cache=True, nogil=True)
def _dw_pixel(xs, taps, oy, ox, sh, sw, dh, dw, top, left, acc):
    """acc[c] += sum over the taps of output pixel (oy, ox) inside the input of
    ``xs[iy, ix, c] taps[ky, kx, c]``; xs int16 [H, W, C] (``x - zp``), taps int16 [KH, KW, C]
    (int8 values), acc int32 [C]. Each product is exact in int16 (|x - zp| 128 <= 32640),
    widened to int32 before the sum; channels innermost and contiguous (vectorised)."""
    h, w, c = xs.shape
    kh, kw, _ = taps.shape
    for ky in range(kh):
        iy = oy * sh + ky * dh - top
        if iy < 0 or iy >= h:
            continue
        for kx in range(kw):
            ix = ox * sw + kx * dw - left
            if ix < 0 or ix >= w:
                continue
            xv = xs[iy, ix]
            tv = taps[ky, kx]
            for ch in range(c):
                acc[ch] += np.int32(np.int16(xv[ch] * tv[ch]))


@numba.njit(cache=True, nogil=True)
def depthwise_px(x, zp, taps, sh, sw, dh, dw, top, left, out):
    """:func:`depthwise` pixel by pixel: each output pixel's C sums in a small int32 buffer
    (kept in L1 across its taps), then stored once, so ``out`` needs no zeroing. x int8
    [H, W, C], zp in -128..127, taps int16 [KH, KW, C] (int8 values), out int32 [OH, OW, C]
    (any contents: overwritten)."""
    xs = _centred(x, zp)
    oh, ow, c = out.shape
    acc = np.empty(c, np.int32)
    for oy in range(oh):
        for ox in range(ow):
            for ch in range(c):
                acc[ch] = 0
            _dw_pixel(xs, taps, oy, ox, sh, sw, dh, dw, top, left, acc)
            o = out[oy, ox]
            for ch in range(c):
                o[ch] = acc[ch]


@numba.njit(cache=True, nogil=True)
def depthwise_epilogue(x, zp, taps, sh, sw, dh, dw, top, left, bias, m, s, rnd, zp_y, lo,
                       hi, out):
    """:func:`depthwise_px` and :func:`epilogue` in one pass: each output pixel's sums start
    at the bias (int32 additions wrap modulo 2**32, so the sum is ``wrap32(acc + bias)``
    exactly), then the epilogue's int64 formula writes the int8/int16 result straight into
    ``out`` [OH, OW, C] (any strides: an SRAM box; it may overlap ``x``, which is read whole
    into its int16 copy before any write). bias/m int32 [C], s/rnd int64 [C] as
    :func:`epilogue`."""
    xs = _centred(x, zp)
    oh, ow, c = out.shape
    acc = np.empty(c, np.int32)
    for oy in range(oh):
        for ox in range(ow):
            for ch in range(c):
                acc[ch] = bias[ch]
            _dw_pixel(xs, taps, oy, ox, sh, sw, dh, dw, top, left, acc)
            y = out[oy, ox]
            for ch in range(c):
                t = ((np.int64(acc[ch]) * np.int64(m[ch]) + rnd[ch]) >> s[ch]) + zp_y
                y[ch] = min(max(t, lo), hi)


@numba.njit(cache=True, nogil=True)
def im2col_u8(xu, zpu, sh, sw, dh, dw, top, left, kh, kw, ow, out):
    """out[oy OW + ox, (ky KW + kx) C + c] = xu[iy, ix, c] ^ 0x80 (the int8 input as uint8
    ``x + 128``) where (iy, ix) is inside the input, else ``zpu`` (the padding); xu uint8
    [H, W, C] C-contiguous, out uint8 [OH*OW, KH*KW*C]. A window row inside the input with a
    column dilation of 1 is one contiguous run of KW*C bytes of ``xu``'s row: copied as one
    (a vectorised loop even for few channels, e.g. a 7x7 stem on 3 channels)."""
    h, w, c = xu.shape
    rows = out.shape[0]
    xf = xu.reshape(h, w * c)
    span = kw * c
    for r in range(rows):
        oy, ox = r // ow, r % ow
        orow = out[r]
        ix0 = ox * sw - left
        inside = dw == 1 and ix0 >= 0 and ix0 + kw <= w
        for ky in range(kh):
            iy = oy * sh + ky * dh - top
            dst = orow[ky * span:(ky + 1) * span]
            if iy < 0 or iy >= h:
                for j in range(span):
                    dst[j] = zpu
            elif inside:
                src = xf[iy, ix0 * c:ix0 * c + span]
                for j in range(span):
                    dst[j] = src[j] ^ 0x80
            else:
                for kx in range(kw):
                    ix = ix0 + kx * dw
                    d = dst[kx * c:(kx + 1) * c]
                    if ix < 0 or ix >= w:
                        for ch in range(c):
                            d[ch] = zpu
                    else:
                        sv = xf[iy, ix * c:(ix + 1) * c]
                        for ch in range(c):
                            d[ch] = sv[ch] ^ 0x80


@numba.njit(cache=True, nogil=True)
def im2col_px4(xu, zpu, idx, out):
    """:func:`im2col_u8` for a three-channel input, each pixel widened to a four-byte word
    (the fourth byte ``zpu``, read against a zero weight row): ``words[p]`` = the
    little-endian uint32 of (xu[p, 0..2] ^ 0x80, zpu) for the H*W pixels p of xu uint8
    [H, W, 3] C-contiguous, ``words[H*W]`` = four bytes ``zpu`` (the padding); then
    out.flat[i] = words[idx[i]] for idx intp [OH*OW*KH*KW] (each tap's pixel, or H*W where
    the tap falls in the padding: :func:`~tcc_compiler.numerics.jit_conv.px4_index`), out
    uint32 [OH*OW, KH*KW] C-contiguous (as bytes: [OH*OW, KH*KW*4], K order KH, KW, C + 1).
    A word gather instead of runs of 3-byte copies: the 3x3 stride-2 stem tile of
    EfficientNet-Lite0 (3136 rows) 41 -> 9 us here."""
    h, w, _ = xu.shape
    n = h * w
    xf = xu.reshape(n * 3)
    words = np.empty(n + 1, np.uint32)
    z = np.uint32(zpu)
    top_byte = z << np.uint32(24)
    for p in range(n):
        words[p] = (np.uint32(xf[3 * p] ^ 0x80) | (np.uint32(xf[3 * p + 1] ^ 0x80) << np.uint32(8))
                    | (np.uint32(xf[3 * p + 2] ^ 0x80) << np.uint32(16)) | top_byte)
    words[n] = z | (z << np.uint32(8)) | (z << np.uint32(16)) | top_byte
    of = out.reshape(idx.size)
    for i in range(idx.size):
        of[i] = words[idx[i]]


#: Values :func:`hist_count` bins at once before counting them.
HIST_BLOCK = 2048


@numba.njit(cache=True, nogil=True)
def hist_count(x, lo, width, magnitude, counts):
    """counts[clip(floor((v - lo) / width), 0, bins - 1)] += 1 for each v = float64(x[i])
    (``magnitude``: v = |v|, zeros skipped); x float [N], counts int64 [bins]. Returns False
    at a NaN bin (nothing defined to count: the caller's numpy path decides).

    Without ``magnitude`` the bins of :data:`HIST_BLOCK` values are computed first, in a loop
    the compiler vectorises (the same float64 operations per value), then counted into four
    interleaved sub-histograms (consecutive values falling in one bin, ReLU's zeros, no longer
    wait on each other's increment) added into ``counts`` at the end: integer sums, so the
    same counts (about 1.5x faster on 1.2M values, loaded)."""
    top = counts.shape[0] - 1
    if magnitude:
        for i in range(x.shape[0]):
            v = abs(np.float64(x[i]))
            if v == 0.0:
                continue
            b = np.floor((v - lo) / width)
            if b != b:
                return False
            if b < 0.0:
                b = 0.0
            elif b > top:
                b = top
            counts[np.int64(b)] += 1
        return True
    ftop = np.float64(top)
    n = x.shape[0]
    bins = np.empty(HIST_BLOCK, np.int64)
    sub = np.zeros((4, counts.shape[0]), np.int64)
    for s in range(0, n, HIST_BLOCK):
        m = min(HIST_BLOCK, n - s)
        bad = False
        for i in range(m):
            b = np.floor((np.float64(x[s + i]) - lo) / width)
            bad |= b != b
            bins[i] = np.int64(min(max(b, 0.0), ftop))
        if bad:
            return False
        j = 0
        while j + 4 <= m:
            sub[0, bins[j]] += 1
            sub[1, bins[j + 1]] += 1
            sub[2, bins[j + 2]] += 1
            sub[3, bins[j + 3]] += 1
            j += 4
        while j < m:
            sub[0, bins[j]] += 1
            j += 1
    for r in range(4):
        for b in range(counts.shape[0]):
            counts[b] += sub[r, b]
    return True


@numba.njit(cache=True, nogil=True)
def count_zeros(x):
    """How many values of the float array x [N] equal 0 (-0.0 included, NaN not)."""
    z = 0
    for i in range(x.shape[0]):
        if x[i] == 0:
            z += 1
    return z


@numba.njit(cache=True, nogil=True)
def _dw_row(xs, tt, oy, sh, dh, dw, top, left, c, o):
    """o[j] += the taps' products of output row ``oy`` for a column stride of 1: each (row,
    tap) adds one contiguous run of the centred input row (pixels x channels) times the
    tap's weights repeated per pixel, a loop the compiler vectorises even for few channels.
    xs int16 [H, W*C] (``x - zp``), tt int16 [KH, KW, OW*C] (the taps tiled over the output
    pixels), o int32 [OW*C]; each product exact in int16, widened before the sum."""
    h, wc = xs.shape
    w = wc // c
    kh, kw, owc = tt.shape
    ow = owc // c
    for ky in range(kh):
        iy = oy * sh + ky * dh - top
        if iy < 0 or iy >= h:
            continue
        for kx in range(kw):
            off = kx * dw - left                  # ix = ox + off
            j0 = max(0, -off) * c
            j1 = min(ow, w - off) * c
            if j1 <= j0:
                continue
            oo = o[j0:j1]                         # runs from 0: no negative-index checks
            xr = xs[iy, j0 + off * c:j1 + off * c]
            tr = tt[ky, kx, j0:j1]
            for j in range(j1 - j0):
                oo[j] += np.int32(np.int16(xr[j] * tr[j]))


@numba.njit(cache=True, nogil=True)
def depthwise_rows(x, zp, tt, sh, dh, dw, top, left, out):
    """:func:`depthwise` for a column stride of 1, row by row (:func:`_dw_row`); x int8
    [H, W, C], zp in -128..127, tt int16 [KH, KW, OW*C], out int32 [OH, OW, C] C-contiguous
    (any contents: each row is zeroed, then summed)."""
    h, w, c = x.shape
    oh, ow, _ = out.shape
    xs = _centred(x, zp).reshape(h, w * c)
    of = out.reshape(oh, ow * c)
    for oy in range(oh):
        o = of[oy]
        for j in range(ow * c):
            o[j] = 0
        _dw_row(xs, tt, oy, sh, dh, dw, top, left, c, o)


@numba.njit(cache=True, nogil=True)
def depthwise_rows_epilogue(x, zp, tt, sh, dh, dw, top, left, bias, m, s, rnd, zp_y, lo, hi,
                            out):
    """:func:`depthwise_rows` and :func:`epilogue` in one pass: each output row summed into
    a row buffer started at the bias (int32 adds wrap: ``wrap32(acc + bias)``), then the
    epilogue's int64 formula into ``out`` [OH, OW, C] (int8/int16, any strides; it may
    overlap ``x``, read whole into its int16 copy first). bias/m int32 [C], s/rnd int64
    [C] as :func:`epilogue`."""
    h, w, c = x.shape
    oh, ow, _ = out.shape
    xs = _centred(x, zp).reshape(h, w * c)
    row = np.empty((ow, c), np.int32)
    flat = row.reshape(ow * c)
    for oy in range(oh):
        for ox in range(ow):
            r = row[ox]
            for ch in range(c):
                r[ch] = bias[ch]
        _dw_row(xs, tt, oy, sh, dh, dw, top, left, c, flat)
        for ox in range(ow):
            r = row[ox]
            y = out[oy, ox]
            for ch in range(c):
                t = ((np.int64(r[ch]) * np.int64(m[ch]) + rnd[ch]) >> s[ch]) + zp_y
                y[ch] = min(max(t, lo), hi)


@numba.njit(cache=True, nogil=True)
def quantize_rgb(x, scale, zp, lo, hi, out):
    """:func:`quantize_nhwc` of a three-channel ``x`` [1, 3, H, W]: the same float64
    operations per element, each pixel's three results stored side by side (an interleaved
    store the compiler vectorises; the row buffer and byte-by-byte transpose took 0.06 of the
    0.10 ms of a 224x224x3 input here, this loop 0.03 ms in all)."""
    _, _, h, w = x.shape
    bad = False
    of = out.reshape(-1)
    for i in range(h):
        x0, x1, x2 = x[0, 0, i], x[0, 1, i], x[0, 2, i]
        o = of[i * w * 3:(i + 1) * w * 3]
        for j in range(w):
            q0 = np.rint(np.float64(x0[j]) / scale) + zp
            q1 = np.rint(np.float64(x1[j]) / scale) + zp
            q2 = np.rint(np.float64(x2[j]) / scale) + zp
            bad |= (q0 != q0) | (q1 != q1) | (q2 != q2)
            o[3 * j] = min(max(q0, lo), hi)
            o[3 * j + 1] = min(max(q1, lo), hi)
            o[3 * j + 2] = min(max(q2, lo), hi)
    return not bad


@numba.njit(cache=True, nogil=True)
def quantize_nhwc(x, scale, zp, lo, hi, out):
    """out[h, w, c] = clip(rint(float64(x[0, c, h, w]) / scale) + zp, lo, hi); x float
    [1, C, H, W] C-contiguous, out int8/int16/int32 [H, W, C] C-contiguous. Each row is
    quantized channel by channel along its contiguous pixels (a loop the compiler vectorises),
    then transposed into ``out``; three channels (an image) in one loop over the pixels
    storing each pixel's three values side by side (:func:`quantize_rgb`). Returns False at
    a NaN (no integer defined: the caller's numpy path decides), else True."""
    _, c, h, w = x.shape
    if c == 3:
        return quantize_rgb(x, scale, zp, lo, hi, out)
    row = np.empty((c, w), out.dtype)
    bad = False
    for i in range(h):
        for ch in range(c):
            xr = x[0, ch, i]
            rr = row[ch]
            for j in range(w):
                q = np.rint(np.float64(xr[j]) / scale) + zp
                bad |= q != q
                rr[j] = min(max(q, lo), hi)
        orow = out[i]
        for j in range(w):
            o = orow[j]
            for ch in range(c):
                o[ch] = row[ch, j]
    return not bad


@numba.njit(cache=True, nogil=True, inline="always")
def row_buffer(f, w, c):
    """:func:`mean_error`'s transposed-row buffer for ``f`` float [1, C, H, W]: [W, C + pad]
    of ``f``'s dtype, padded by 64 bytes when a row's stride is a multiple of 1 KiB and the
    row has more than 8 pixels (the reason and measurements: :func:`mean_error`)."""
    pad = 64 // f.itemsize if (c * f.itemsize) % 1024 == 0 and w > 8 else 0
    return np.empty((w, c + pad), f.dtype)


@numba.njit(cache=True, nogil=True, inline="always")
def transpose_row(f, i, ft):
    """``ft[j, ch] = f[0, ch, i, j]``: row ``i`` of ``f`` float [1, C, H, W] channels-last
    into ``ft`` [W, >= C] (:func:`row_buffer`)."""
    c = f.shape[1]
    w = f.shape[3]
    for ch in range(c):
        fr = f[0, ch, i]
        for j in range(w):
            ft[j, ch] = fr[j]


@numba.njit(cache=True, nogil=True, inline="always")
def add_errors(qj, fj, zp, scale, acc):
    """``acc[c] += float64(float32((float64(qj[c]) - zp[c]) scale[c])) - float64(fj[c])``:
    one pixel's :func:`mean_error` terms; ``qj`` integer [C], ``fj`` float [>= C] (a row of
    :func:`transpose_row`'s buffer), zp/scale/acc float64 [C]."""
    for ch in range(acc.size):
        d = np.float32((np.float64(qj[ch]) - zp[ch]) * scale[ch])
        acc[ch] += np.float64(d) - np.float64(fj[ch])


@numba.njit(cache=True, nogil=True)
def mean_error(q, zp, scale, f, out):
    """out[c] = (sum over (h, w) in row-major order of float64(float32((float64(q[h, w, c]) -
    zp[c]) scale[c])) - float64(f[0, c, h, w])) / (H W): each channel's terms added one after
    another from 0.0, in that order (the channels side by side: each row of ``f`` is first
    transposed, so the loop over the channels vectorises without reordering any channel's
    additions); q integer [H, W, C] C-contiguous, zp/scale float64 [C], f float [1, C, H, W]
    C-contiguous, out float64 [C]. When a transposed row's stride is a multiple of 1 KiB
    (256 float32 channels or more, a power of two) and the row has more than 8 pixels, each
    row is padded by 64 bytes: the transposition's writes, one row apart, otherwise fall into
    the same cache sets (measured loaded, per call: 56x56x256 1.11 -> 0.36 ms, 28x28x512 0.90
    -> 0.19 ms; other strides are not padded: 10-40 % slower padded)."""
    h, w, c = q.shape
    acc = np.zeros(c, np.float64)
    ft = row_buffer(f, w, c)
    for i in range(h):
        transpose_row(f, i, ft)
        qr = q[i]
        for j in range(w):
            add_errors(qr[j], ft[j], zp, scale, acc)
    n = np.float64(h * w)
    for ch in range(c):
        out[ch] = acc[ch] / n
