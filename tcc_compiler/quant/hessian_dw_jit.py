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
    for v in range(nmax + ow):     # indexed in place: a view per row costs reference counts
        col = m + phi + v * sw
        if v == 0:
            for k in range(c):
                acc[k] = np.float64(xpe[y1, col, k]) * np.float64(xpe[y2, col + dc, k])
        else:
            for k in range(c):
                acc[k] += np.float64(xpe[y1, col, k]) * np.float64(xpe[y2, col + dc, k])
        if v < nmax:
            for k in range(c):
                lo[v + 1, k] = acc[k]
        n = v - ow + 1
        if n == 0:
            for k in range(c):
                win[0, y1, k] = acc[k] - 0.0
        elif 0 < n <= nmax:
            for k in range(c):
                win[n, y1, k] = acc[k] - lo[n, k]


@numba.njit(cache=True, nogil=True)
def _put(val, t1, t2, add, out):
    """``out[t1, t2] = out[t2, t1] = val`` (float64 [C]), or with ``add`` ``val`` added to
    both entries (once on the diagonal, ``t1 == t2``)."""
    c = val.shape[0]
    if add:
        for k in range(c):
            out[t1, t2, k] += val[k]
        if t2 != t1:
            for k in range(c):
                out[t2, t1, k] += val[k]
    else:
        out[t1, t2, :] = val
        out[t2, t1, :] = val


@numba.njit(cache=True, nogil=True)
def _rows(win_n, kh, kw, sh, dh, oh, di, j1, j2, add, out):
    """Row-window sums of ``win_n`` [Hr, C] (one shift's column-window sums) into
    ``out[t1, t2]`` and ``out[t2, t1]`` for every row tap pair ``(i1, i1 + di)``: stored, or
    with ``add`` added to what ``out`` holds (``out[t] = out[t] + sum``, once per entry)."""
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
            y = psi + u * sh
            if u == 0:
                for k in range(c):
                    rs[k] = win_n[y, k]
            else:
                for k in range(c):
                    rs[k] += win_n[y, k]
            if u < umax:
                for k in range(c):
                    lo[u + 1, k] = rs[k]
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
                _put(vals[i1 * dh // sh], t1, t2, add, out)


@numba.njit(cache=True, nogil=True)
def dw_hessian(xpe, m, kh, kw, sh, sw, dh, dw, oh, ow, add, out):
    """``out`` float64 [K, K, C] (both triangles) from ``xpe`` float32 [Hp, Wp + 2 m, C]
    (:func:`tcc_compiler.quant.hessian_dw.padded_nhwc`); with ``add`` each entry's sum is
    added to ``out``'s value instead (one float64 addition per entry: what ``out += H`` of a
    separate ``H`` would add, without that array)."""
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
                    _columns(xpe, m, ow, sw, y, y + di * dh, phi, dj * dw, nmax, win, lo, acc)
                for j1 in range(j1lo, j1hi):
                    if (j1 * dw) % sw == phi:
                        _rows(win[j1 * dw // sw], kh, kw, sh, dh, oh, di, j1, j1 + dj, add,
                              out)
