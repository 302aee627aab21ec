"""The numba kernel behind :func:`tcc_compiler.numerics.pool.global_avgpool` (imported only
when numba is, through :func:`tcc_compiler.numerics.jit.kernel_module`). Compiled on first use
per operand types and cached on disk."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def global_avgpool(x, zp_x, mult, shift, zp_y, lo, hi, out):
    """out[c] = clamp(zp_y + ((sum over (h, w) of (x[h, w, c] - zp_x)) M + 2**(S-1)) >> S,
    lo, hi); x int8/int16 [H, W, C] (any strides), out int8/int16 [C]. The sums and the
    product are int64 (wrapping as numpy's int64 does), channels innermost (vectorised)."""
    h, w, c = x.shape
    acc = np.zeros(c, np.int64)
    for i in range(h):
        for j in range(w):
            v = x[i, j]
            for ch in range(c):
                acc[ch] += np.int64(v[ch])
    n = np.int64(h * w) * np.int64(zp_x)
    rnd = np.int64(1) << (shift - 1)
    for ch in range(c):
        t = (((acc[ch] - n) * mult + rnd) >> shift) + zp_y
        out[ch] = min(max(t, lo), hi)
