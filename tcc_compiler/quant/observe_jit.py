"""The numba kernel behind :meth:`tcc_compiler.quant.calibrate.MSEObserver.range` (imported
only when numba is, :func:`tcc_compiler.numerics.jit.available`): the [alphas, bins] terms of
the error sums in one pass, where the numpy form makes eight passes over two float64 buffers
of that size (1.5 MB each, per observer). Each term is computed by the numpy form's own
operations on the same values (a difference, a maximum with 0, a sum, a square or the
rounding noise, a product; no fused multiply-add), so the terms are the same bit for bit, and
the caller sums them with numpy as before (the same pairwise additions)."""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def mse_terms(c, counts, lo, hi, step2, out):
    """``out[a, b] = counts[b] * (d * d if d > 0 else step2[a])`` with ``d = max(c[b] -
    hi[a], 0) + max(lo[a] - c[b], 0)`` (``np.maximum``'s rule: the first operand unless it is
    smaller). c, counts float64 [B]; lo, hi, step2 float64 [A]; out float64 [A, B]."""
    for a in range(out.shape[0]):
        h, lw, s2 = hi[a], lo[a], step2[a]
        for b in range(out.shape[1]):
            x = c[b] - h
            if not (x >= 0.0 or x != x):
                x = 0.0
            y = lw - c[b]
            if not (y >= 0.0 or y != y):
                y = 0.0
            d = x + y
            t = d * d
            if not d > 0:
                t = s2
            out[a, b] = counts[b] * t
