"""The numba kernel behind :func:`tcc_compiler.quant.hessian_dw.depthwise_hessian` (imported
only when numba is, :func:`tcc_compiler.numerics.jit.available`): the evaluation order that
module's docstring defines, per channel, with the channels innermost so the compiler
vectorises across them (each channel's sums keep their sequential order). Products of two
float32 values are exact in float64, so a fused multiply-add gives the same sums."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _columns(xpe, m, ow, sw, y1, y2, phi, dc, nmax, win, lo, acc):
    """Column-window sums of row pair (``y1``, ``y2``) for one shift and phase:
    ``win[n, y1]`` [C] for every start ``n <= nmax`` (prefix sums along the phase's
    columns; ``lo[n]``: the prefix before ``n``, ``acc``: the running prefix, scratch)."""
    c = xpe.shape[2]
    r1, r2 = xpe[y1], xpe[y2]
    for v in range(nmax + ow):
        col = m + phi + v * sw
        a, b = r1[col], r2[col + dc]
        if v == 0:
            for k in range(c):
                acc[k] = np.float64(a[k]) * np.float64(b[k])
        else:
            for k in range(c):
                acc[k] += np.float64(a[k]) * np.float64(b[k])
        if v < nmax:
            nxt = lo[v + 1]
            for k in range(c):
                nxt[k] = acc[k]
        n = v - ow + 1
        if n == 0:
            w = win[0, y1]
            for k in range(c):
                w[k] = acc[k] - 0.0
        elif 0 < n <= nmax:
            w, start = win[n, y1], lo[n]
            for k in range(c):
                w[k] = acc[k] - start[k]


@numba.njit(cache=True, nogil=True)
def _columns_fused(xpe, m, ow, sw, y1, y2, phi, dc, nmax, win, lo, acc):
    """:func:`_columns` with the stores inside the running-sum loop (one pass, not
    vectorised: faster for few channels)."""
    c = xpe.shape[2]
    r1, r2 = xpe[y1], xpe[y2]
    for v in range(nmax + ow):
        col = m + phi + v * sw
        a, b = r1[col], r2[col + dc]
        n = v - ow + 1
        keep, done = v < nmax, 0 <= n <= nmax
        w = win[max(n, 0), y1]
        start = lo[max(n, 0)]
        nxt = lo[min(v + 1, nmax)]
        for k in range(c):
            p = np.float64(a[k]) * np.float64(b[k])
            s = p if v == 0 else acc[k] + p
            acc[k] = s
            if keep:
                nxt[k] = s
            if done:
                w[k] = s - (0.0 if n == 0 else start[k])


@numba.njit(cache=True, nogil=True)
def _rows(win_n, kh, kw, sh, dh, oh, di, j1, j2, out):
    """Row-window sums of ``win_n`` [Hr, C] (one shift's column-window sums) into
    ``out[t1, t2]`` and ``out[t2, t1]`` for every row tap pair ``(i1, i1 + di)``."""
    c = win_n.shape[1]
    for psi in range(sh):
        umax = -1
        for i1 in range(0, kh - di):
            if (i1 * dh) % sh == psi:
                umax = max(umax, i1 * dh // sh)
        if umax < 0:
            continue
        rs = np.empty(c)
        lo = np.zeros((umax + 1, c))
        vals = np.empty((umax + 1, c))
        for u in range(umax + oh):
            row = win_n[psi + u * sh]
            if u == 0:
                rs[:] = row
            else:
                for k in range(c):
                    rs[k] += row[k]
            if u < umax:
                lo[u + 1, :] = rs
            n = u - oh + 1
            if n == 0:
                for k in range(c):
                    vals[0, k] = rs[k] - 0.0
            elif 0 < n <= umax:
                for k in range(c):
                    vals[n, k] = rs[k] - lo[n, k]
        for i1 in range(0, kh - di):
            if (i1 * dh) % sh == psi:
                t1, t2 = i1 * kw + j1, (i1 + di) * kw + j2
                val = vals[i1 * dh // sh]
                out[t1, t2, :] = val
                out[t2, t1, :] = val


@numba.njit(cache=True, nogil=True)
def dw_hessian(xpe, m, kh, kw, sh, sw, dh, dw, oh, ow, fused_max, out):
    """``out`` float64 [K, K, C] (both triangles) from ``xpe`` float32 [Hp, Wp + 2 m, C]
    (:func:`tcc_compiler.quant.hessian_dw.padded_nhwc`); the column sums in one loop per
    column below ``fused_max`` channels (:func:`_columns_fused`), else :func:`_columns` (the
    same operations in the same order)."""
    hp, _, c = xpe.shape
    acc = np.empty(c)
    for di in range(kh):
        hr = hp - di * dh
        for dj in range(0 if di == 0 else 1 - kw, kw):
            j1lo, j1hi = max(0, -dj), min(kw, kw - dj)
            for phi in range(sw):
                nmax = -1
                for j1 in range(j1lo, j1hi):
                    if (j1 * dw) % sw == phi:
                        nmax = max(nmax, j1 * dw // sw)
                if nmax < 0:
                    continue
                win = np.empty((nmax + 1, hr, c))
                lo = np.zeros((nmax + 1, c))
                for y in range(hr):
                    if c < fused_max:
                        _columns_fused(xpe, m, ow, sw, y, y + di * dh, phi, dj * dw, nmax, win,
                                       lo, acc)
                    else:
                        _columns(xpe, m, ow, sw, y, y + di * dh, phi, dj * dw, nmax, win, lo,
                                 acc)
                for j1 in range(j1lo, j1hi):
                    if (j1 * dw) % sw == phi:
                        _rows(win[j1 * dw // sw], kh, kw, sh, dh, oh, di, j1, j1 + dj, out)
