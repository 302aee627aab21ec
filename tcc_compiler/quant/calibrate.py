"""Activation range calibration.

Runs the float graph on calibration inputs and keeps, for every activation value (graph
outputs included), an observer's running statistics; each observer then proposes a clipping
range ``(lo, hi)`` in real units. Methods (specs/quantization.md, "Calibration"):

* ``minmax``: the extreme values seen over all inputs.
* ``percentile``: the ``p`` and ``100 - p`` percentiles of all values seen, read off a fine
  histogram (default p: :data:`DEFAULT_PERCENTILE`).
* ``entropy``: the clip of ``|x|`` minimising the KL divergence between the clipped
  distribution and its int8-quantized version (TensorRT's calibrator, Migacz 2017), on a
  histogram of at least 2048 bins.
* ``mse``: the clip minimising the expected quantization MSE (clipping + rounding noise).

Every histogram is merged exactly across inputs: when a new input leaves the current range the
bin width grows by an integer factor and the origin moves by whole bins, so every old bin falls
inside exactly one new bin (no splitting, no approximation).
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import numpy as np

from tcc_compiler.errors import InputError, ModelError
from tcc_compiler.interp import run_float
from tcc_compiler.interp.onnx_float import (ENGINES, OVERLAP_BYTES,  # noqa: F401
                                            float_engine, values_bytes)
from tcc_compiler.quant.calibrate_kl import kl_threshold_bin  # noqa: F401 (re-export)
from tcc_compiler.quant.calibrate_run import check_input, input_label, run_values
from tcc_compiler.ir.graph import Graph
from tcc_compiler.numerics import jit

log = logging.getLogger(__name__)

#: Default calibration method (``tccc compile --calib-method``; read by
#: :class:`tcc_compiler.options.CompileOptions`, written only here).
DEFAULT_METHOD = "mse"
#: Default percentile of the ``percentile`` method (``--percentile``; read by
#: :class:`tcc_compiler.options.CompileOptions`, written only here).
DEFAULT_PERCENTILE = 99.99
#: Histogram bins of the histogram-based observers (the issue asks for >= 2048).
DEFAULT_BINS = 2048
#: Magnitude-histogram bins of the entropy observer: finer, so that a bulk 1/50 of the
#: maximum still spans more bins than the 255 quantization levels.
ENTROPY_BINS = 16384
#: Values an observer converts to float64 at once (32 MiB): activations are counted in chunks
#: so that calibration never holds a float64 copy of a whole activation.
CHUNK_ELEMS = 1 << 22
#: Fewest values for which a histogram loads the compiled counting kernel
#: (:func:`tcc_compiler.numerics.jit.hist_count`) when it is not loaded yet: loading costs
#: about 0.4 s of CPU, and the kernel saves about 10 ms per million values (measured on this
#: machine, loaded: 4M float32 values 59 ms numpy vs 17.5 ms compiled).
JIT_MIN_ELEMS = 1 << 19


class MinMaxObserver:
    """Running min and max of every value seen (float64)."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        """Fold one batch of values in (any shape, float; ``bounds``: its (min, max) when the
        caller has them already)."""
        lo, hi = bounds if bounds is not None else (float(x.min()), float(x.max()))
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)

    def range(self) -> tuple[float, float]:
        """The calibrated (lo, hi), real units."""
        return self.lo, self.hi

    def summary(self) -> dict:
        """What a calibration table records about this tensor (JSON-ready)."""
        return {"min": self.lo, "max": self.hi}


class Histogram:
    """A fixed-count histogram over ``[lo, lo + bins * width)``, grown exactly.

    Attributes:
        bins: number of bins. lo: left edge (real units). width: bin width (0 until the first
        input with a non-zero span). counts: float64 [bins].
        fixed_lo: when not None, the left edge never moves (magnitude histograms use 0).
    """

    def __init__(self, bins: int = DEFAULT_BINS, fixed_lo: float | None = None) -> None:
        if bins < 2:
            raise InputError(f"histogram bins: {bins}, need at least 2")
        self.bins = bins
        self.fixed_lo = fixed_lo
        self.lo = 0.0 if fixed_lo is None else fixed_lo
        self.width = 0.0
        self.counts = np.zeros(bins, np.float64)
        self.pending = 0.0   # count of values seen while the span was still 0 (all at lo)

    def _grow(self, lo: float, hi: float) -> None:
        """Widen to cover [lo, hi]: new width = k * width, new origin = old origin - j * width
        (k, j integers), so new edges are old edges and old bins never split."""
        w, n = self.width, self.bins
        hi = max(hi, self.lo + n * w)           # the old bins must stay covered
        j = 0 if lo >= self.lo else int(math.ceil((self.lo - lo) / w - 1e-9))
        new_lo = self.lo - j * w
        k = max(1, int(math.ceil((hi - new_lo) / (n * w) - 1e-9)))
        while new_lo + n * k * w <= hi:
            # a relative step: at a huge k, k + 1 rounds back to k in float64 (an endless loop)
            k += max(1, k >> 20)
        # old bin b covers [lo + b w, lo + (b+1) w); offset by j bins, k old bins per new bin
        idx = (np.arange(n) + j) // k
        counts = np.zeros(n, np.float64)
        np.add.at(counts, idx, self.counts)
        self.counts, self.lo, self.width = counts, new_lo, w * k

    def add(self, x: np.ndarray, magnitude: bool = False,
            bounds: tuple[float, float] | None = None) -> None:
        """Count the values of ``x`` (any shape, float; float64 arithmetic), or with
        ``magnitude`` the non-zero ``|x|``.

        The range is set from the whole of ``x`` first (``bounds``: its (min, max) when the
        caller has them), then the values are counted in chunks of :data:`CHUNK_ELEMS` (no
        float64 copy of a whole activation); the counts are the same as in one pass.
        """
        flat = np.asarray(x).reshape(-1)
        if bounds is None:
            bounds = (float(flat.min()), float(flat.max())) if flat.size else (0.0, 0.0)
        if magnitude:
            lo = 0.0
            hi = max(abs(bounds[0]), abs(bounds[1]))
            if hi == 0.0:
                return                      # only zeros: nothing to count
        else:
            lo, hi = bounds
        if self.fixed_lo is not None:
            lo = self.fixed_lo
        if self.width == 0.0:
            if hi - lo <= 0.0:
                self.pending += flat.size
                return
            # a half-bin margin so the maximum falls inside the last bin, not on its edge
            self.lo, self.width = lo, (hi - lo) / (self.bins - 0.5)
            self.counts[0] += self.pending
        elif lo < self.lo or hi >= self.lo + self.bins * self.width:
            self._grow(lo, hi)
        for s in range(0, flat.size, CHUNK_ELEMS):
            self._count(flat[s:s + CHUNK_ELEMS], magnitude)

    def _count(self, chunk: np.ndarray, magnitude: bool) -> None:
        """Count one chunk: bin ``floor((v - lo) / width)`` clamped to [0, bins - 1], computed
        in float64 in place (the clamp before the integer conversion gives the same bins as
        after it: the floored values are integers). With the compiled kernels
        (:func:`tcc_compiler.numerics.jit.hist_count`) the same operations run in one pass."""
        got = None
        if chunk.size >= JIT_MIN_ELEMS or jit.loaded():
            got = jit.hist_count(chunk, self.lo, self.width, self.bins, magnitude)
        if got is not None:
            self.counts += got
            return
        v = np.empty(chunk.shape, np.float64)
        if magnitude:
            np.abs(chunk, out=v, dtype=np.float64)
            v = v[v != 0.0]
        else:
            v[...] = chunk
        v -= self.lo
        v /= self.width
        np.floor(v, out=v)
        np.clip(v, 0, self.bins - 1, out=v)
        self.counts += np.bincount(v.astype(np.intp), minlength=self.bins)

    def edges(self) -> np.ndarray:
        """Bin edges [bins + 1], real units."""
        return self.lo + self.width * np.arange(self.bins + 1)

    def centers(self) -> np.ndarray:
        """Bin centres [bins], real units."""
        return self.lo + self.width * (np.arange(self.bins) + 0.5)

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the counts lie, interpolated linearly
        inside the bin (values assumed uniform within a bin)."""
        total = self.counts.sum()
        cum = np.cumsum(self.counts)
        target = q * total
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, self.bins - 1)
        before = cum[b - 1] if b > 0 else 0.0
        frac = 0.0 if self.counts[b] == 0 else (target - before) / self.counts[b]
        return float(self.lo + self.width * (b + min(max(frac, 0.0), 1.0)))


class PercentileObserver:
    """Clip at the ``p`` and ``100 - p`` percentiles of all values seen (per tensor).

    The percentiles are read off an exactly merged histogram of ``bins`` bins, never beyond
    the observed min/max. Default p = :data:`DEFAULT_PERCENTILE` (0.01 % of the values
    clipped on each side).
    """

    def __init__(self, percentile: float = DEFAULT_PERCENTILE, bins: int = DEFAULT_BINS) -> None:
        if not 50.0 < percentile <= 100.0:
            raise InputError(f"--percentile {percentile}: must lie in (50, 100]")
        self.p = percentile
        self.hist = Histogram(bins)
        self.mm = MinMaxObserver()

    def update(self, x: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        """Fold one batch of values in (``bounds``: its (min, max), when known)."""
        bounds = bounds if bounds is not None else _bounds(x)
        self.mm.update(x, bounds)
        self.hist.add(x, bounds=bounds)

    def range(self) -> tuple[float, float]:
        """The calibrated (lo, hi)."""
        if self.hist.width == 0.0:
            return self.mm.range()
        lo = self.hist.quantile(1.0 - self.p / 100.0)
        hi = self.hist.quantile(self.p / 100.0)
        # inside the first / last bin the histogram cannot tell where the values lie: keep the
        # extreme (e.g. a ReLU output's lower percentile is its minimum 0, not 1e-7)
        w = self.hist.width
        lo = self.mm.lo if lo < self.hist.lo + w else lo
        hi = self.mm.hi if hi >= self.hist.lo + (self.hist.bins - 1) * w else hi
        return max(lo, self.mm.lo), min(hi, self.mm.hi)

    def summary(self) -> dict:
        """Calibration-table record: min/max and the percentile used."""
        return {**self.mm.summary(), "percentile": self.p, "bins": self.hist.bins}


class EntropyObserver:
    """Clip |x| where the KL divergence between the float and int8 distributions is minimal.

    Keeps an exactly merged histogram of the non-zero |x| on [0, max|x|] with ``bins`` bins
    (>= 2048). A
    tensor whose values all have one sign uses 255 levels on that side (asymmetric int8 spends
    every level there); a two-signed tensor uses 128 levels per side (the symmetric TensorRT
    setting). The range is ``[max(min, -t), min(max, t)]`` for the threshold ``t``.
    """

    def __init__(self, bins: int = ENTROPY_BINS) -> None:
        if bins < 2048:
            raise InputError(f"entropy calibration needs >= 2048 bins, got {bins}")
        self.hist = Histogram(bins, fixed_lo=0.0)
        self.mm = MinMaxObserver()

    def update(self, x: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        """Fold one batch of values in (``bounds``: its (min, max), when known)."""
        bounds = bounds if bounds is not None else _bounds(x)
        self.mm.update(x, bounds)
        # exact zeros are left out: 0 is always representable (activation_params keeps it on
        # the grid), and the ReLU zeros would otherwise fill the first bin so that every
        # threshold spreading it over several bins looks costly (the KL optimum collapses)
        self.hist.add(x, magnitude=True, bounds=bounds)

    def threshold(self) -> float:
        """The KL-optimal clip of |x| (real units)."""
        if self.hist.width == 0.0:
            return max(abs(self.mm.lo), abs(self.mm.hi))
        one_signed = self.mm.lo >= 0.0 or self.mm.hi <= 0.0
        levels = 255 if one_signed else 128
        i = kl_threshold_bin(self.hist.counts, levels, coarse=512)
        return i * self.hist.width

    def range(self) -> tuple[float, float]:
        """The calibrated (lo, hi)."""
        t = self.threshold()
        return max(self.mm.lo, -t), min(self.mm.hi, t)

    def summary(self) -> dict:
        """Calibration-table record: min/max and the threshold."""
        return {**self.mm.summary(), "threshold": self.threshold(), "bins": self.hist.bins}


class MSEObserver:
    """The clipping range minimising the expected int8 quantization MSE over a histogram.

    Candidates scale both ends of ``[min(lo, 0), max(hi, 0)]`` by ``alpha`` in [0.05, 1]
    (step 0.005); the error of a candidate is ``sum_bins count * (d^2 if clipped else
    step^2 / 12)`` with ``d`` the distance of the bin centre to the clip bound and
    ``step = (hi - lo) / 255`` (uniform rounding noise, Widrow 1956). Values exactly 0 are
    counted noise-free: 0 is always exactly representable (ReLU outputs are mostly 0).
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        self.hist = Histogram(bins)
        self.mm = MinMaxObserver()
        self.zeros = 0.0

    def update(self, x: np.ndarray, bounds: tuple[float, float] | None = None) -> None:
        """Fold one batch of values in (``bounds``: its (min, max), when known)."""
        bounds = bounds if bounds is not None else _bounds(x)
        self.mm.update(x, bounds)
        self.zeros += float(_zeros(np.asarray(x)))
        self.hist.add(x, bounds=bounds)

    def range(self) -> tuple[float, float]:
        """The MSE-optimal (lo, hi)."""
        lo0, hi0 = min(self.mm.lo, 0.0), max(self.mm.hi, 0.0)
        if self.hist.width == 0.0 or hi0 - lo0 <= 0.0:
            return self.mm.range()
        c, counts = self.hist.centers(), self.hist.counts.copy()
        # the zeros are exact: take them out of the bin holding 0 (they are never clipped)
        z = min(int((0.0 - self.hist.lo) // self.hist.width), self.hist.bins - 1)
        if 0 <= z:
            counts[z] = max(counts[z] - self.zeros, 0.0)
        alphas = np.linspace(0.05, 1.0, 191)
        lo, hi = lo0 * alphas[:, None], hi0 * alphas[:, None]          # [A, 1]
        step2 = ((hi - lo) / 255.0) ** 2 / 12.0
        kern = jit.kernel_module("tcc_compiler.quant.observe_jit") if jit.loaded() else None
        if kern is not None:   # the same terms in one pass (quant/observe_jit.py)
            t = np.empty((len(alphas), len(c)))
            kern.mse_terms(c, counts, lo[:, 0], hi[:, 0], step2[:, 0], t)
            a = float(alphas[int(np.argmin(t.sum(axis=1)))])
            return max(lo0 * a, self.mm.lo), min(hi0 * a, self.mm.hi)
        # d = max(c - hi, 0) + max(lo - c, 0); err = sum(counts * (d^2 if d > 0 else step2)),
        # in two [A, bins] buffers (the same operations on the same values as the one-line
        # form with its temporaries)
        d = np.subtract(c[None], hi)
        np.maximum(d, 0.0, out=d)
        t = np.subtract(lo, c[None])
        np.maximum(t, 0.0, out=t)
        d += t
        np.multiply(d, d, out=t)
        np.copyto(t, np.broadcast_to(step2, t.shape), where=~(d > 0))
        np.multiply(counts[None], t, out=t)
        err = t.sum(axis=1)
        a = float(alphas[int(np.argmin(err))])
        return max(lo0 * a, self.mm.lo), min(hi0 * a, self.mm.hi)

    def summary(self) -> dict:
        """Calibration-table record: min/max."""
        return {**self.mm.summary(), "bins": self.hist.bins}


def _zeros(x: np.ndarray) -> int:
    """How many values of ``x`` are exactly 0 (compiled when the kernels are, as
    :meth:`Histogram._count` decides; else numpy)."""
    got = None
    if x.size >= JIT_MIN_ELEMS or jit.loaded():
        got = jit.count_zeros(x)
    return got if got is not None else int(x.size - np.count_nonzero(x))


def _bounds(x: np.ndarray) -> tuple[float, float]:
    """(min, max) of ``x`` as floats ((0, 0) when empty)."""
    return (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)


METHODS = {"minmax": MinMaxObserver, "percentile": PercentileObserver,
           "entropy": EntropyObserver, "mse": MSEObserver}


def make_observer(method: str, percentile: float = DEFAULT_PERCENTILE):
    """A fresh observer for ``method``.

    Raises:
        InputError: unknown method or bad percentile.
    """
    if method not in METHODS:
        raise InputError(f"--calib-method '{method}': choose one of {', '.join(METHODS)}")
    if method == "percentile":
        return PercentileObserver(percentile)
    return METHODS[method]()


def observe(graph: Graph, inputs: Iterable[np.ndarray], methods: Iterable[str],
            percentile: float = DEFAULT_PERCENTILE, progress=None,
            engine: str = "auto", also=None) -> dict[str, dict]:
    """Run the float graph once per input and feed every method's observers.

    The float graph runs in ONNX Runtime (float32; :mod:`tcc_compiler.interp.onnx_float`,
    every node output returned by one run) or, for ``engine="numpy"`` and graphs ONNX Runtime
    cannot run or whose values exceed ``onnx_float.ORT_OUTPUT_BYTES``, in the numpy interpreter
    (float64 accumulation, values streamed). The observers see the same values either way
    (graph input, then every node output in graph order), up to float32 rounding. In ONNX
    Runtime the values of one input are observed on worker threads while the next input runs
    (:mod:`tcc_compiler.quant.calibrate_run`; the same results as one value at a time).

    Args:
        graph: float graph IR (after the float passes).
        inputs: float32 arrays shaped like the graph input (NCHW [1,C,H,W]).
        methods: method names (see :data:`METHODS`); several share one float pass.
        percentile: p of the percentile method.
        progress: optional callable wrapping the iterable (e.g. tqdm).
        engine: one of :data:`~tcc_compiler.interp.onnx_float.ENGINES`.
        also: optional ``callable(name, value)`` given every value the observers see (GPTQ's
            input second moments gathered in the same float pass,
            :class:`tcc_compiler.quant.weight_rounding.HessianSum`); it may be called from
            worker threads, for different names at once, each name once per input and in
            input order.

    Returns:
        {method: {value name: observer}} for the graph input and every float node output.

    Raises:
        InputError: unknown method or engine, no inputs, or an input with NaN/Inf or a wrong
            shape.
        ModelError: a value overflows (non-finite or above :data:`MAX_ACTIVATION`).
    """
    methods = list(methods)
    for m in methods:
        make_observer(m, percentile)        # validates names and the percentile early
    if not isinstance(inputs, Sequence):    # a lazy sequence (datasets) loads one at a time
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("calibration needs at least one input")
    obs: dict[str, dict] = {m: {} for m in methods}
    source = graph.meta.get("source", graph.name)
    sess = float_engine(graph, engine)
    it = progress(inputs) if progress else inputs

    def check(k, x):
        return check_input(graph, k, x, input_label(inputs, k))

    def visit(name, arr, k):
        _observe_value(obs, name, arr, input_label(inputs, k), source, percentile)
        if also is not None:
            also(name, arr)

    if sess is not None:   # the values of one input observed on worker threads
        overlap = values_bytes(graph) <= OVERLAP_BYTES
        run_values(sess, it, check, visit, overlap)
    else:
        for k, x in enumerate(it):
            x = check(k, x)
            # each value is observed as it is computed and dropped once dead (run_float's
            # visit): memory holds the live activations, not a float copy of every one
            run_float(graph, x, visit=lambda name, arr, k=k: visit(name, arr, k))
            del x
    # the order of the tables (calib_table.json): graph outputs, node outputs, the input
    order = dict.fromkeys([o.name for o in graph.outputs] +
                          [n.output.name for n in graph.nodes] + [v.name for v in graph.inputs])
    return {m: {k: t[k] for k in order if k in t} for m, t in obs.items()}


def _observe_value(obs: dict, name: str, arr: np.ndarray, where: str, source: str,
                   percentile: float) -> None:
    """Feed one value of a calibration input (``where``: its name in errors,
    :func:`~tcc_compiler.quant.calibrate_run.input_label`) to every method's observer.

    Raises:
        ModelError: the value overflows (non-finite or above :data:`MAX_ACTIVATION`).
    """
    if arr.dtype.kind != "f":
        return
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    peak = max(abs(lo), abs(hi)) if np.isfinite(lo) and np.isfinite(hi) else float("nan")
    if not np.isfinite(peak) or peak > MAX_ACTIVATION:
        raise ModelError(f"{source}: value '{name}' reaches {peak:.3g} on {where} "
                         "(overflow; weights of absurd magnitude?)")
    for m, table in obs.items():
        if name not in table:
            table[name] = make_observer(m, percentile)
        try:
            table[name].update(arr, (lo, hi))
        except (OverflowError, FloatingPointError) as exc:
            raise ModelError(f"{source}: value '{name}' has a range calibration cannot hold "
                             f"({exc}; weights of absurd magnitude?)") from None


#: Largest |activation| calibration accepts: float32 maths overflows soon after, and int8
#: scales derived from such ranges are meaningless.
MAX_ACTIVATION = 1e36


def collect_ranges(graph: Graph, inputs: Iterable[np.ndarray], method: str = DEFAULT_METHOD,
                   progress=None,
                   percentile: float = DEFAULT_PERCENTILE,
                   guard: bool = True) -> dict[str, tuple[float, float]]:
    """Calibrate activation ranges with one method.

    Args:
        graph: float graph IR (after the float passes).
        inputs: float32 arrays shaped like the graph input (NCHW [1,C,H,W]).
        method: one of :data:`METHODS`.
        progress: optional callable wrapping the iterable (e.g. tqdm).
        percentile: p of the percentile method (ignored by the others).
        guard: check each range with the collapse guard
            (:func:`tcc_compiler.quant.ranges.choose_ranges`), as ``tccc compile`` does;
            False returns the method's own ranges.

    Returns:
        {value name: (lo, hi)} for the graph input and every node output (real units).

    Raises:
        InputError: unknown method, no inputs, or an input with NaN/Inf or a wrong shape.
    """
    from tcc_compiler.quant.ranges import choose_ranges  # ranges imports this module

    obs = observe(graph, inputs, [method], percentile, progress)[method]
    return choose_ranges(obs, method, guard=guard)[0]
