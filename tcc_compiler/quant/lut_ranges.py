"""Ranges of lookup-table inputs chosen for the error *after* the table (specs/quantization.md,
"Lookup-table input ranges").

A lookup-table activation (SiLU, HardSwish, GELU, LeakyRelu, ...: ``Op.LUT``) reads an int8
tensor, usually its conv's output, and the table maps each of its 256 values to ``f(x)``. The
int8 rounding of that input matters only as far as ``f`` passes it on: where ``f`` is flat
(HardSwish below -3, SiLU and GELU far below 0) clipping costs almost nothing, where its
slope is 0.1 (LeakyRelu's negative side) rounding noise costs 1 % of its power. The MSE range
(``--calib-method mse``, the default) weighs every input value alike, so it spends most of
the 256 levels on the negative side a table then flattens.

For a tensor read only by lookup tables, :func:`lut_input_ranges` replaces the range with the
one minimising the expected squared error of the tables' outputs on the calibration
histogram, first order in the rounding noise:

    E(lo, hi) = sum_b n_b * [ (f(c_b) - f(clip(c_b, lo, hi)))^2      if c_b is clipped
                              f'(c_b)^2 * step^2 / 12                otherwise ]

summed over the tables reading it (``c_b`` the bin centres, ``n_b`` their counts,
``step = (hi - lo) / 255``, the Widrow uniform-noise model the MSE observer uses; ``f'`` a
central difference over one bin). ``lo`` and ``hi`` are searched independently
(:data:`ALPHAS` of the observed ``min(lo, 0)`` and ``max(hi, 0)``), keeping at least
:data:`~tcc_compiler.quant.ranges.GUARD_MIN_KEPT` of the observed span. The table's own output
rounding does not depend on the input range and is left out.
"""

from __future__ import annotations

import logging

import numpy as np

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import LutFunc, Op
from tcc_compiler.numerics.lut import lut_function
from tcc_compiler.quant.calibrate import MSEObserver
from tcc_compiler.quant.ranges import GUARD_MIN_KEPT

log = logging.getLogger(__name__)

#: Candidate fractions of the observed negative and positive extent (each side on its own).
ALPHAS = np.linspace(0.02, 1.0, 99)


def _table_readers(v: Value) -> list | None:
    """The LUT nodes reading ``v``, or None when another op reads it too, or a table's
    function is per channel (PRelu: the histogram is per tensor)."""
    readers = [u for u, _ in v.uses]
    if not readers or any(u.op is not Op.LUT or u.attrs.func is LutFunc.PRELU
                          for u in readers):
        return None
    return readers


def table_error(funcs: list, c: np.ndarray, n: np.ndarray, width: float,
                los: np.ndarray, his: np.ndarray) -> np.ndarray:
    """E(lo, hi) of the module docstring for every pair: [len(los), len(his)].

    Args:
        funcs: callables float64 array -> float64 array (the tables' functions).
        c, n: histogram bin centres (ascending) and counts. width: the bin width.
        los, his: candidate lower (<= 0) and upper (>= 0) bounds, real units.
    """
    e_lo = np.zeros(len(los))
    e_hi = np.zeros(len(his))
    slope2 = np.zeros_like(c)
    for f in funcs:
        fc = f(c)
        # clipped bins: below lo they read f(lo), above hi f(hi)
        e_lo += (n[None] * (c[None] < los[:, None]) * (fc[None] - f(los)[:, None]) ** 2).sum(1)
        e_hi += (n[None] * (c[None] > his[:, None]) * (fc[None] - f(his)[:, None]) ** 2).sum(1)
        slope2 += ((f(c + width / 2) - f(c - width / 2)) / width) ** 2
    cum = np.concatenate([[0.0], np.cumsum(n * slope2)])
    first = np.searchsorted(c, los, side="left")       # first bin inside [lo, hi]
    last = np.searchsorted(c, his, side="right")       # one past the last bin inside
    inside = cum[last][None, :] - cum[first][:, None]
    step2 = ((his[None, :] - los[:, None]) / 255.0) ** 2 / 12.0
    return e_lo[:, None] + e_hi[None, :] + step2 * np.maximum(inside, 0.0)


def _best_range(obs: MSEObserver, readers: list) -> tuple[float, float] | None:
    """The (lo, hi) minimising :func:`table_error` on ``obs``'s histogram, or None when it
    keeps no histogram or no span."""
    hist, mm = obs.hist, obs.mm
    lo0, hi0 = min(mm.lo, 0.0), max(mm.hi, 0.0)
    if hist.width == 0.0 or hi0 - lo0 <= 0.0:
        return None
    funcs = [lambda x, a=u.attrs: lut_function(a.func, x, a.alpha, a.beta) for u in readers]
    los, his = lo0 * ALPHAS, hi0 * ALPHAS
    err = table_error(funcs, hist.centers(), hist.counts, hist.width, los, his)
    kept = (np.minimum(his, mm.hi)[None, :] - np.maximum(los, mm.lo)[:, None]) / (mm.hi - mm.lo)
    err[kept < GUARD_MIN_KEPT] = np.inf
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return max(float(los[i]), mm.lo), min(float(his[j]), mm.hi)


def lut_input_ranges(graph: Graph, observers: dict, ranges: dict) -> int:
    """Replace, in ``ranges``, the range of every tensor only lookup tables read by the one
    minimising the tables' output error (module docstring). Only tensors with an
    :class:`MSEObserver` (the default ``mse`` method) change: the other methods keep their
    own rule.

    Args:
        graph: the float graph being calibrated. observers: {value name: observer} of the
            calibration run. ranges: {value name: (lo, hi)} chosen from them (changed in place).

    Returns:
        How many ranges changed (each logged at DEBUG).
    """
    changed = 0
    for n in graph.nodes:
        if n.op is not Op.LUT:
            continue
        v = n.inputs[0]
        obs = observers.get(v.name)
        readers = _table_readers(v)
        if readers is None or not isinstance(obs, MSEObserver) or v.name not in ranges \
                or readers[0] is not n:   # once per tensor
            continue
        best = _best_range(obs, readers)
        if best is not None and best != tuple(ranges[v.name]):
            log.debug("calibration: table input '%s' range [%.4g, %.4g] -> [%.4g, %.4g]",
                      v.name, *ranges[v.name], *best)
            ranges[v.name] = best
            changed += 1
    return changed
