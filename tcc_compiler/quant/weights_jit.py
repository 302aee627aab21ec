"""The numba kernel behind :func:`tcc_compiler.quant.quantize.quantize_weights` (imported only
when numba is, :func:`tcc_compiler.numerics.jit.available`): each output channel's levels, its
whole-number test and its power-of-two grid test in one pass per row, where the numpy form
makes about ten passes over float64 copies of the weights (ResNet-50: 25.6 M weights), and
the largest ``|w|`` of each row before it.

The arithmetic is the numpy form's, value for value: ``r = float64(w) / s`` (one IEEE
division), ``rint(r)`` (round half to even, as ``np.round``), the clip to ``[-qmax, qmax]``;
only the order in which the values are visited differs, and the grid test stops at a row's
first value off the grid (``np.all`` of the same comparisons). So the levels and scales are
the same bit for bit (tests/quant/test_quantize.py compares both forms)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def row_amax(w2, out):
    """``out[o] = max |w2[o, k]|`` (float64 [O]; exact: a maximum rounds nothing), NaN when a
    row holds one (as ``np.abs(w2).max(axis=1)``)."""
    for o in range(w2.shape[0]):
        m = 0.0
        for k in range(w2.shape[1]):
            v = abs(np.float64(w2[o, k]))
            if v > m or v != v:
                m = v
                if v != v:
                    break
        out[o] = m


@numba.njit(cache=True, nogil=True)
def _row(w2, o, s, qmax, q):
    """Levels of row ``o`` on scale ``s`` into ``q[o]``; whether every ``w / s`` is whole."""
    whole = True
    for k in range(w2.shape[1]):
        r = np.float64(w2[o, k]) / s
        v = np.rint(r)
        if r != v:
            whole = False
        q[o, k] = min(max(v, -qmax), qmax)
    return whole


@numba.njit(cache=True, nogil=True)
def quantize_rows(w2, scale, step, qmax, q):
    """Quantize float weights ``w2`` [O, K] (float32 or float64) per row, in place.

    Args:
        w2: the weights, one row per output channel. scale: float64 [O], each row's
            ``max |w| / qmax`` (1 for an all-zero row); a row on its power-of-two grid gets
            ``step[o]`` instead (changed in place).
        step: float64 [O]: the grid step tried for a row whose levels are not all whole, or 0
            for no grid test (int16 weights, all-zero rows).
        qmax: 127 or 32767. q: int8/int16 [O, K], written.
    """
    for o in range(w2.shape[0]):
        if _row(w2, o, scale[o], qmax, q) or step[o] == 0.0:
            continue
        st = step[o]
        exact = True
        for k in range(w2.shape[1]):
            r = np.float64(w2[o, k]) / st
            if r != np.rint(r):
                exact = False
                break
        if exact:
            scale[o] = st
            _row(w2, o, st, qmax, q)
