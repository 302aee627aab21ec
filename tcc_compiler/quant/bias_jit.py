"""The numba kernel behind :func:`tcc_compiler.quant.bias_fused.error_and_quantized`
(imported only when numba is, :func:`tcc_compiler.numerics.jit.available`): one pass over a
float value that gives both what bias correction's error pass reads it for -- the mean output
error of the conv producing it (:func:`tcc_compiler.numerics.jit_kernels.mean_error`'s
operations in its order) and the value quantized for the conv reading it
(:func:`tcc_compiler.numerics.jit_kernels.quantize_nhwc`'s operations) -- instead of two
passes over the same float array (the pass is memory-bound: the array is read once)."""

from __future__ import annotations

import numba
import numpy as np

from tcc_compiler.numerics.jit_kernels import add_errors, row_buffer, transpose_row


@numba.njit(cache=True, nogil=True)
def mean_error_quantize(q, zp, scale, f, qs, qzp, lo, hi, out, fq):
    """``out[c]``: :func:`~tcc_compiler.numerics.jit_kernels.mean_error` of ``(q, zp, scale,
    f)`` (the same float64 operations, each channel's terms added from 0.0 in row-major pixel
    order, then divided by H W; the same row padding); ``fq[h, w, c] = clip(rint(float64(f[0,
    c, h, w]) / qs) + qzp, lo, hi)`` (:func:`~tcc_compiler.numerics.jit_kernels.
    quantize_nhwc`'s formula, element by element: the same integers).

    Args: q integer [H, W, C] C-contiguous; zp, scale float64 [C]; f float [1, C, H, W]
    C-contiguous; qs, qzp, lo, hi floats; out float64 [C]; fq int8/int16 [H, W, C]
    C-contiguous. Returns False at a NaN of ``f`` (``fq`` then undefined: the caller
    quantizes on its own path), else True."""
    h, w, c = q.shape
    acc = np.zeros(c, np.float64)
    ft = row_buffer(f, w, c)
    bad = False
    for i in range(h):
        transpose_row(f, i, ft)
        qr = q[i]
        fqr = fq[i]
        for j in range(w):
            fj = ft[j]
            add_errors(qr[j], fj, zp, scale, acc)
            oj = fqr[j]
            for ch in range(c):
                t = np.rint(np.float64(fj[ch]) / qs) + qzp
                bad |= t != t
                oj[ch] = min(max(t, lo), hi)
    n = np.float64(h * w)
    for ch in range(c):
        out[ch] = acc[ch] / n
    return not bad
