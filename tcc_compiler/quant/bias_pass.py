"""Bias correction's passes over the calibration inputs, their per-input work on worker threads
(quant/bias_correction.py), and how its error pass cuts the layers into jobs (:func:`chains`).

The error pass runs the float graph once per input (ONNX Runtime, as calibration) and, per
input, computes every conv/fc's isolated error (quantize its float inputs, the layer's
integer arithmetic, the per-channel mean error) plus an optional extra job (the two-fold
check's golden-model run). Those jobs of one input are independent of each other, and their
heavy parts -- the compiled kernels, ONNX Runtime's integer GEMM -- release the GIL, so they
run on :func:`~tcc_compiler.quant.calibrate_run.workers` threads, and while they run ONNX
Runtime computes the next input's float values (two inputs' values held at once, only below
:data:`~tcc_compiler.interp.onnx_float.OVERLAP_BYTES`, as calibration).

The results are handed back in input order, each input's errors in layer order, so the caller
folds them into its sums in the serial loop's order and gets the same float64 sums bit for
bit; an error is raised as the serial loop would raise it (the earliest input, then the
earliest layer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from tcc_compiler.interp.onnx_float import OVERLAP_BYTES, float_values
from tcc_compiler.ir.graph import Graph
from tcc_compiler.quant.calibrate_run import workers

#: End of an iterator (``next``'s default).
_END = object()


def _values_bytes(graph: Graph, names: Sequence[str]) -> int:
    """float32 bytes of the values ``names`` of ``graph`` (one input's float values)."""
    shapes = {v.name: v.shape for v in graph.inputs}
    shapes.update((n.output.name, n.output.shape) for n in graph.nodes)
    return sum(4 * int(np.prod(shapes[k], dtype=np.int64)) for k in set(names) if k in shapes)


def _results(futures: list[Future]) -> list:
    """The results of ``futures`` in order (the first one's error raised, the others waited
    for: no job of this input still runs once the error reaches the caller)."""
    try:
        return [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        for f in futures:
            if not f.cancelled():
                f.exception()
        raise


def error_pass(float_graph: Graph, names: list[str], inputs: Sequence, layer_jobs: list,
               extra: Callable[[dict], object] | Sequence[Callable] | None = None
               ) -> Iterator[tuple]:
    """For each input ``i`` in order: its float values ``fl`` ({name: float32 NCHW} of
    ``names`` and the graph inputs, :func:`~tcc_compiler.interp.onnx_float.float_values`),
    ``[job(fl, shared) for job in layer_jobs]`` and ``extra(fl)`` (None without one).

    Args:
        float_graph: the float graph. names: the values the jobs read.
        inputs: float32 NCHW inputs (or {input: array} feeds).
        layer_jobs: callables ``job(fl, shared)``; ``shared`` is one dict per input the jobs
            may use as a cache of values derived from ``fl`` (each key always given the same
            value: two jobs may both compute one).
        extra: a callable on ``fl``, a sequence of them (each run as a job of its own: the
            result is then the list of their results), or None. The extra jobs (the long
            golden-model runs) are started before the layer jobs, so they do not trail them.

    Yields:
        ``(i, fl, [job results], extra result)``, in input order.

    Raises:
        Whatever the float pass or the jobs raise, in the serial loop's order.
    """
    n = workers()
    values = float_values(float_graph, names, inputs)
    extras = [] if extra is None else [extra] if callable(extra) else list(extra)
    one = callable(extra)
    if n == 1:
        for i, fl in enumerate(values):
            shared: dict = {}
            res = [job(fl, shared) for job in layer_jobs]
            more = [e(fl) for e in extras]
            yield i, fl, res, more[0] if one else (more if extra is not None else None)
        return
    overlap = _values_bytes(float_graph, names) <= OVERLAP_BYTES
    with ThreadPoolExecutor(n, thread_name_prefix="tccc-bias") as pool:
        pending = None
        i = 0
        while True:
            try:
                fl = next(values, _END)
            except BaseException:
                if pending is not None:   # an earlier input's error comes first
                    _finish(pending)
                raise
            if fl is _END:
                break
            shared = {}
            more = [pool.submit(e, fl) for e in extras]   # the long runs first
            job = (i, fl, [pool.submit(j, fl, shared) for j in layer_jobs],
                   None if extra is None else more[0] if one else more)
            if pending is not None:
                yield _finish(pending)
            pending = None
            if overlap:
                pending = job
            else:
                yield _finish(job)
            del fl, shared, job
            i += 1
        if pending is not None:
            yield _finish(pending)


def _finish(job: tuple) -> tuple:
    """``(i, fl, results, extra result)`` of a submitted input (errors in layer order, then
    the extra jobs'; ``extra``: a future, a list of them, or None)."""
    i, fl, futures, extra = job
    more = [] if extra is None else [extra] if isinstance(extra, Future) else extra
    res = _results(futures + more)
    got = res[len(futures):]
    return i, fl, res[:len(futures)], \
        None if extra is None else got[0] if isinstance(extra, Future) else got


def in_order(fn: Callable[[int, object], object], inputs: Sequence) -> Iterator[tuple]:
    """``(i, fn(i, inputs[i]))`` for every input, in order, the calls on worker threads (at
    most two per worker submitted ahead; the inputs read in this thread, one at a time).

    Raises:
        Whatever ``fn`` raises, the earliest input's first.
    """
    n = workers()
    if n == 1:
        for i, x in enumerate(inputs):
            yield i, fn(i, x)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="tccc-bias") as pool:
        pending: list[tuple[int, Future]] = []
        it = iter(inputs)
        for i in range(len(inputs)):
            try:
                x = next(it)
            except BaseException:
                _results([f for _, f in pending])   # an earlier input's error comes first
                raise
            pending.append((i, pool.submit(fn, i, x)))
            del x
            if len(pending) > 2 * n:
                k, f = pending.pop(0)
                yield k, _results([f])[0]
        while pending:
            k, f = pending.pop(0)
            yield k, _results([f])[0]


#: Most layers per job of bias correction's error pass (its ``_error_jobs``): a chain of
#: layers each reading the one before reads each float value once (its ``_layer_error``'s
#: ``reader``), and several chains an input keep the worker threads busy side by side
#: (EfficientNet-Lite0, 64 inputs: the gate's CPU 3.04 -> 2.70 s against one job per layer;
#: chains of 2, 4 and 8 measured the same, loaded; ResNet-50's gate the same CPU and wall as
#: per layer).
CHAIN_LAYERS = 4


def chains(layers: list) -> list[list]:
    """``layers`` (graph order) cut into chains of at most :data:`CHAIN_LAYERS`: runs broken
    where a layer's first input is not the output of the layer before it, and a longer run cut
    where the values between its chains hold the fewest elements in all
    (:func:`_cut_run`)."""
    runs: list[list] = []
    for n in layers:
        if runs and n.inputs[0].name == runs[-1][-1].output.name:
            runs[-1].append(n)
        else:
            runs.append([n])
    return [chain for run in runs for chain in _cut_run(run)]


def _cut_run(run: list) -> list[list]:
    """A run of layers, each reading the output of the one before, as chains of at most
    :data:`CHAIN_LAYERS` whose boundary values (the outputs of each chain's last layer but the
    run's last) hold the fewest elements in all (dynamic programming over the cut positions;
    of equal totals, the one whose last chain starts latest, and so on back).

    Why: a value between two chains is read twice, once by each job (its producer's mean
    error, its reader's quantization), where inside a chain one fused pass reads it
    (:func:`~tcc_compiler.quant.bias_fused.error_and_quantized`). Cut every
    :data:`CHAIN_LAYERS` layers, EfficientNet-Lite0's expand, depthwise and project convs
    (runs of 3) put the large expanded values (up to 96 x 112 x 112) at the boundaries; cut
    here, the small project outputs are: its gate (64 inputs) took 0.86-0.93 s of error-job
    CPU against 0.99-1.03 s (4 alternating runs, loaded), the same biases."""
    if len(run) <= CHAIN_LAYERS:
        return [run]
    size = [int(np.prod(n.output.shape, dtype=np.int64)) for n in run]
    inf = float("inf")
    best = [0] + [inf] * len(run)   # best[i]: least boundary elements of run[:i] in chains
    start = [0] * (len(run) + 1)    # start[i]: where the last chain of that best cut starts
    for i in range(1, len(run) + 1):
        for j in range(i - 1, max(0, i - CHAIN_LAYERS) - 1, -1):
            cost = best[j] + (size[j - 1] if j else 0)
            if cost < best[i]:
                best[i], start[i] = cost, j
    out, i = [], len(run)
    while i:
        out.append(run[start[i]:i])
        i = start[i]
    return out[::-1]
