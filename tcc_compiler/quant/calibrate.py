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


METHODS = {"minmax": MinMaxObserver, "percentile": PercentileObserver}


def collect_ranges(graph: Graph, inputs: Iterable[np.ndarray], method: str = "minmax",
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
