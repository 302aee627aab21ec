"""Activation range calibration.

Runs the float graph on calibration inputs and keeps, for every activation value (graph
outputs included), an observer's running statistics. ``minmax`` keeps the extreme values seen
over all inputs.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp import run_float
from tcc_compiler.ir.graph import Graph

log = logging.getLogger(__name__)


class MinMaxObserver:
    """Running min and max of every value seen (float64)."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        """Fold one batch of values in."""
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def range(self) -> tuple[float, float]:
        """The calibrated (lo, hi)."""
        return self.lo, self.hi


class PercentileObserver:
    """Clipping range at the given percentile of |x| per side, averaged over inputs.

    Per input, lo = percentile(x, 100 - p) and hi = percentile(x, p); the range is the mean
    over inputs (TensorRT/pytorch-quantization style), widened to the global min/max when
    those are closer to zero than the percentile.
    """

    def __init__(self, percentile: float = 99.99) -> None:
        self.p = percentile
        self.los: list[float] = []
        self.his: list[float] = []
        self.mm = MinMaxObserver()

    def update(self, x: np.ndarray) -> None:
        """Fold one batch of values in."""
        flat = x.reshape(-1)
        self.los.append(float(np.percentile(flat, 100.0 - self.p)))
        self.his.append(float(np.percentile(flat, self.p)))
        self.mm.update(x)

    def range(self) -> tuple[float, float]:
        """The calibrated (lo, hi)."""
        lo, hi = float(np.mean(self.los)), float(np.mean(self.his))
        return max(lo, self.mm.lo), min(hi, self.mm.hi)


class HistogramObserver:
    """A fine histogram of every value seen, merged exactly across inputs as the range grows.

    The histogram spans [lo, hi] in ``bins`` equal bins; when a new input exceeds the range,
    the range is widened by an integer factor (the bin width doubles, triples, ...) so old bins
    map onto new ones without splitting (no approximation in the merge).
    """

    def __init__(self, bins: int = 2048) -> None:
        self.bins = bins
        self.lo = 0.0
        self.width = 0.0          # bin width; 0 until the first non-constant input
        self.counts = np.zeros(bins, np.float64)
        self.mm = MinMaxObserver()

    def update(self, x: np.ndarray) -> None:
        """Fold one batch of values in."""
        x = x.reshape(-1).astype(np.float64)
        self.mm.update(x)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        if self.width == 0.0:
            if hi - lo <= 0.0:
                return
            self.lo, self.width = lo, (hi - lo) / self.bins
        cur_hi = self.lo + self.width * self.bins
        if lo < self.lo or hi > cur_hi:
            need = max(cur_hi, hi) - min(self.lo, lo)
            factor = int(np.ceil(need / (self.width * self.bins) - 1e-12))
            # keep 0 on a bin edge: grow toward the side that needs it
            new_lo = self.lo if lo >= self.lo else self.lo - (factor - 1) * self.width * self.bins
            if lo < new_lo:
                factor += 1
                new_lo = self.lo - (factor - 1) * self.width * self.bins
            old_edges = self.lo + self.width * (np.arange(self.bins) + 0.5)
            new_w = self.width * factor
            idx = np.clip(((old_edges - new_lo) / new_w).astype(np.int64), 0, self.bins - 1)
            counts = np.zeros(self.bins)
            np.add.at(counts, idx, self.counts)
            self.counts, self.lo, self.width = counts, new_lo, new_w
        idx = np.clip(((x - self.lo) / self.width).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(idx, minlength=self.bins)

    def centers(self) -> np.ndarray:
        """Bin centres (float64)."""
        return self.lo + self.width * (np.arange(self.bins) + 0.5)

    def range(self) -> tuple[float, float]:
        """The calibrated range (subclasses choose a clip); here: min/max."""
        return self.mm.range()


class MSEObserver(HistogramObserver):
    """The clipping range minimising the expected int8 quantization MSE over the histogram.

    Candidates scale both ends of [min(lo, 0), max(hi, 0)] by alpha in [0.3, 1]; the error of a
    candidate is ``sum_bins count * (d^2 if clipped else step^2 / 12)`` with ``d`` the distance
    to the clip bound and ``step = (hi - lo) / 255`` (uniform-noise model, Widrow 1956).
    """

    def range(self) -> tuple[float, float]:
        """The MSE-optimal (lo, hi)."""
        lo0, hi0 = min(self.mm.lo, 0.0), max(self.mm.hi, 0.0)
        if self.width == 0.0 or hi0 - lo0 <= 0.0:
            return self.mm.range()
        c = self.centers()
        best, best_err = (lo0, hi0), np.inf
        for alpha in np.linspace(0.3, 1.0, 71):
            lo, hi = lo0 * alpha, hi0 * alpha
            step = (hi - lo) / 255.0
            d = np.where(c > hi, c - hi, np.where(c < lo, lo - c, 0.0))
            err = float((self.counts * np.where(d > 0, d * d, step * step / 12.0)).sum())
            if err < best_err:
                best, best_err = (lo, hi), err
        return best


METHODS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MSEObserver}


def collect_ranges(graph: Graph, inputs: Iterable[np.ndarray], method: str = "mse",
                   progress=None) -> dict[str, tuple[float, float]]:
    """Calibrate activation ranges.

    Args:
        graph: float graph IR (after the float passes).
        inputs: float32 arrays shaped like the graph input (NCHW [1,C,H,W]).
        method: one of :data:`METHODS`.
        progress: optional callable wrapping the iterable (e.g. tqdm).

    Returns:
        {value name: (lo, hi)} for the graph input and every node output.

    Raises:
        InputError: unknown method, no inputs, or an input with NaN/Inf or a wrong shape.
    """
    if method not in METHODS:
        raise InputError(f"--calib-method '{method}': choose one of {', '.join(METHODS)}")
    inputs = list(inputs)
    if not inputs:
        raise InputError("calibration needs at least one input")
    obs: dict[str, object] = {}
    expect = graph.inputs[0].shape
    it = progress(inputs) if progress else inputs
    for k, x in enumerate(it):
        if tuple(x.shape) != tuple(expect):
            raise InputError(f"calibration input {k}: shape {tuple(x.shape)}, model expects "
                             f"{tuple(expect)}")
        if not np.all(np.isfinite(x)):
            raise InputError(f"calibration input {k}: contains NaN or Inf")
        vals = run_float(graph, x, keep=True)
        vals[graph.inputs[0].name] = x
        for name, arr in vals.items():
            if arr.dtype.kind != "f":
                continue
            if name not in obs:
                obs[name] = METHODS[method]()
            obs[name].update(arr)
    return {k: o.range() for k, o in obs.items()}
