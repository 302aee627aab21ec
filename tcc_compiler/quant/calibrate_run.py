"""The calibration pass over the inputs in ONNX Runtime, its per-value work on worker threads.

Calibration runs the float graph once per input and hands every value to its observers
(and GPTQ's second moments, :class:`tcc_compiler.quant.weight_rounding.HessianSum`). The
values of one input are independent of each other, and the heavy parts of their work --
numpy reductions and copies, BLAS, the compiled histogram kernel -- release the GIL, so the
values of one input are handled on :func:`workers` threads at once while ONNX Runtime (which
releases the GIL too) computes the next input's values.

The results are those of the serial loop, bit for bit: each value name is handed over once
per input and all of one input's values are finished before any of the next input's start,
so every observer and every ``H`` still folds its inputs in input order; an error is raised
as the serial loop would raise it (the earliest input, then the earliest value in the order
below).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Mapping

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp.onnx_float import FloatSession
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph

#: Most worker threads (the per-value work of one input has a few dozen values; beyond a few
#: threads the memory bandwidth, not the cores, bounds it).
MAX_WORKERS = 4


def workers() -> int:
    """Worker threads for the per-value work: the usable CPUs, at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def input_label(inputs, k: int) -> str:
    """``calibration input K``, followed by the file it was read from when ``inputs`` knows it
    (a sequence with a ``label(k)`` method: :class:`tcc_compiler.datasets.images.LazyInputs`,
    the driver's calibration inputs), for error messages."""
    label = getattr(inputs, "label", None)
    src = label(k) if callable(label) else None
    return f"calibration input {k} ({src})" if src else f"calibration input {k}"


def check_input(graph: Graph, k: int, x, label: str | None = None) -> dict[str, np.ndarray]:
    """Calibration input ``k`` of ``graph`` as ``{graph input name: float32 array}``
    (:func:`tcc_compiler.ir.feeds.feeds`: an array for a one-input graph, else a dict), refused
    unless every array has its input's shape (NCHW) and is finite.

    Args:
        label: how errors name the input (:func:`input_label`; default ``calibration input K``).

    Raises:
        InputError: naming the input and what is wrong.
    """
    label = label or f"calibration input {k}"
    if len(graph.inputs) == 1 and not isinstance(x, Mapping):
        expect = tuple(graph.inputs[0].shape)
        if tuple(np.shape(x)) != expect:
            raise InputError(f"{label}: shape {tuple(np.shape(x))}, model expects {expect}")
    try:
        feed = feeds(graph, x)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from None
    if not all(np.all(np.isfinite(a)) for a in feed.values()):
        raise InputError(f"{label}: contains NaN or Inf")
    return feed


def run_values(sess: FloatSession, inputs: Iterable,
               check: Callable[[int, object], dict[str, np.ndarray]],
               visit: Callable[[str, np.ndarray, int], None], overlap: bool) -> None:
    """For each input ``k`` (a float32 NCHW [1, C, H, W] array, or a dict of them for a graph
    with several inputs): ``feed = check(k, x)`` ({graph input name: float32 array},
    :func:`check_input`), then ``visit(name, value, k)`` for every graph input (``feed``'s
    order) and every value ``sess`` returns (``sess.names`` order, float32 NCHW).

    The visits of one input run on :func:`workers` threads (``visit`` must be safe to call
    concurrently for different names); with ``overlap`` ONNX Runtime computes input ``k + 1``
    while input ``k``'s visits run (two inputs' values held at once: the caller allows it
    only below :data:`~tcc_compiler.interp.onnx_float.OVERLAP_BYTES`).

    Raises:
        Whatever ``check``, ``sess.run`` or ``visit`` raise, in the serial loop's order.
    """
    n = workers()
    if n == 1:
        for k, x in enumerate(inputs):
            feed = check(k, x)
            for name, arr in feed.items():
                visit(name, arr, k)
            for name, arr in zip(sess.names, sess.run(feed)):
                visit(name, arr, k)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="tccc-calib") as pool:
        pending: list[Future] = []
        it, k = iter(inputs), 0
        while True:
            if not overlap:
                _finish(pending)
            try:
                x = next(it, _END)
                if x is _END:
                    break
                feed = check(k, x)
                values = list(feed.items())
                values += zip(sess.names, sess.run(feed))
            except BaseException:
                _finish(pending)   # an earlier input's error comes first
                raise
            _finish(pending)       # the previous input's visits, in order (errors first)
            pending = _submit_largest_first(pool, visit, values, k)
            del values, x, feed
            k += 1
        _finish(pending)


#: End of the inputs (``next``'s default).
_END = object()


def _submit_largest_first(pool: ThreadPoolExecutor, visit: Callable, values: list,
                          k: int) -> list[Future]:
    """``visit(name, arr, k)`` of every value on ``pool``, the largest arrays started first
    (their observers and second moments take longest: none starts last and runs alone while
    the other workers idle), the futures returned in ``values``' order (the order errors are
    raised in). Each name is visited once per input, so the order changes no result."""
    order = sorted(range(len(values)), key=lambda i: -values[i][1].size)
    started = {i: pool.submit(visit, values[i][0], values[i][1], k) for i in order}
    return [started[i] for i in range(len(values))]


def _finish(pending: list[Future]) -> None:
    """Wait for ``pending`` in order, raising the first one's error; empties the list."""
    try:
        for f in pending:
            f.result()
    except BaseException:
        for f in pending:
            f.cancel()
        for f in pending:   # no visit may still run once the error reaches the caller
            if not f.cancelled():
                f.exception()
        raise
    finally:
        pending.clear()
