"""A large CONV_TILE computed as two bands of output rows side by side: the reference
executor's use of a second core.

Why: the executor runs one command after another on one thread, while ONNX Runtime (the
figure of issue 18) uses every core; on EfficientNet-Lite0 the depthwise kernel is the
slowest arithmetic per MAC (about 15-25 GMAC/s on one core here, the integer GEMM over 200).
The kernels a tile runs (numba's ``nogil`` depthwise and epilogue kernels) release the GIL,
so the second band runs on a helper thread while the calling thread computes the first.

Exactness: a conv's output row ``r`` reads only the padded input rows ``r sh .. r sh + (KH-1)
dh``; the rows ``[r0, r1)`` of the output are therefore the output of the same conv over the
input rows they read, with the zero-point padding that falls inside them kept as padding
(:func:`band_input`). Each band is computed by exactly the arithmetic of the whole tile
(:func:`~tcc_compiler.numerics.gemm.conv_accumulate_f`, then the compiled epilogue written into
its own rows of the output box): integer sums, exact in any order, and an element-wise
epilogue, so the bytes are the unsplit tile's. The bands write disjoint rows; each reads the
shortcut rows it writes over (the epilogue's "same elements" rule holds per band); a tile
whose output box shares bytes with its input is not split (one band would overwrite input
rows the other still reads, where the unsplit tile reads all before writing).

The helper is one thread per process (a forked child starts its own), blocking rather than
spinning; the parts of a tile go to whichever thread is free (:func:`run_parts`), so on a
loaded machine, where the helper may wake late, the calling thread computes them all and
waits for nothing it does not need.
:func:`set_threads` ``(1)`` turns the split off (``tccc eval --jobs N`` workers, whose
parallelism is the processes).

Why our own helper thread and not numba's ``parallel=True`` (``prange``) layers: the
``workqueue`` layer is not thread-safe (two threads launching at once abort the process:
``run --check`` and a user's threads run executors side by side) and, measured here (session
17, RT priority, loaded), costs about 30 us of wall time and 65 us of CPU per launch with no
work at all (2 x 116 us of work: 160 us against 150 us with :func:`run_parts`); the ``omp``
layer (GNU OpenMP) spins after each region and is not fork-safe (``tccc eval --jobs N`` forks);
``tbb`` is not installed. The helper blocks when idle (never spins), is made anew in a forked
child (checked: a parent that ran Lite0 with the helper, then ``batch.imap`` with 2 forked
workers, same bytes, no hang) and serves any number of calling threads (three threads running
two programs at once: the serial bytes).

Measured limits of the split on this 2-vCPU virtual machine (session 17, RT priority, loaded;
:func:`run_parts` alone: 2 x 58 us parts 88 us wall, 2 x 116 us 150 us): inside a Lite0 run
the split tiles gained nothing (in-process alternation, 300 images each: wall median 4.49 ms on
one thread, 4.63 ms on two; CPU 4.49 vs 5.05 ms), while the same tile run back to back gains
(28x28x240 5x5 117 -> 82 us): a helper idle for a few hundred microseconds between tiles takes
longer to wake. A helper spinning (without the GIL) for the length of a run did not help either
(4.4-4.6 ms against 4.15 ms on one thread), nor did ONNX Runtime's own two-thread GEMM
(5.4-5.9 ms against 4.6 ms, spinning or not).
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.accumulator import depthwise_epilogue
from tcc_compiler.numerics.gemm import ConvWeights, conv_accumulate_f

#: A depthwise tile is split when it has at least this many multiply-accumulates (padding
#: taps included) and two output rows. Measured on this AMD EPYC, loaded, CPU us per tile
#: (process / calling thread): 28x28x240 5x5 282 unsplit, 299 / 160 split; 14x14x672 5x5 148,
#: 182 / 92; 12x56x144 3x3 (0.9M MACs) 69, 95 / 49: the hand-off costs 15-35 us of CPU, so
#: only tiles of about 60 us and more gain: splitting EfficientNet-Lite0's 0.5-0.9M-MAC
#: tiles too (2**19) made its images slower, 7.6 -> 8.4 ms, CPU 10.3 -> 12.0 ms (in-process
#: alternation, the process at real-time priority on the loaded machine; session 16). GEMM
#: tiles are not split: as two bands of rows, each its own integer GEMM and epilogue, on
#: both threads (session 16, same measurement), Lite0's images were no faster (5.67 vs 5.59
#: ms, 5.78 vs 5.56; CPU +0.6 ms) and ResNet-50's 0.1-0.2 ms faster for 2.6 ms more CPU.
SPLIT_MIN_MACS = 1 << 20

_lock = threading.Lock()
_pool: queue.SimpleQueue | None = None   # the helper thread's jobs
_pool_pid = 0
_cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")   # Linux
         else os.cpu_count() or 1)
_threads = 2 if _cpus > 1 else 1


def set_threads(n: int) -> int:
    """Compute large tiles on ``n`` threads (1: never split; 2: two bands); returns the
    previous setting.

    Raises:
        ValueError: ``n`` is not 1 or 2."""
    global _threads
    if n not in (1, 2):
        raise ValueError(f"band threads must be 1 or 2, not {n}")
    old, _threads = _threads, n
    return old


class _Job:
    """The parts ``fn(0) .. fn(n - 1)`` of one tile, claimed one at a time by whichever
    thread is free (``next`` on an ``itertools.count``: atomic under the GIL)."""

    __slots__ = ("fn", "n", "next", "started", "done", "err")

    def __init__(self, fn: Callable[[int], None], n: int):
        self.fn, self.n, self.next = fn, n, itertools.count()
        self.started = False
        self.done = threading.Lock()
        self.done.acquire()            # released by the helper when its parts are done
        self.err: BaseException | None = None

    def work(self) -> None:
        """Compute parts until none is left (on the calling thread)."""
        fn, n = self.fn, self.n
        for k in self.next:
            if k >= n:
                return
            fn(k)

    def help(self) -> None:
        """The helper's side: claim parts too, record a failure, then release ``done``."""
        self.started = True
        try:
            self.work()
        except BaseException as exc:   # re-raised by the calling thread
            self.err = exc
        finally:
            self.done.release()


def _helper_loop(q: queue.SimpleQueue) -> None:
    while True:
        q.get().help()


def _helper() -> queue.SimpleQueue:
    """The helper thread's job queue (the thread made on first use, and anew in a forked
    child, which inherits the object but not its thread)."""
    global _pool, _pool_pid
    if _pool is None or _pool_pid != os.getpid():
        with _lock:
            if _pool is None or _pool_pid != os.getpid():
                q: queue.SimpleQueue = queue.SimpleQueue()
                threading.Thread(target=_helper_loop, args=(q,), daemon=True,
                                 name="tccc-band").start()
                _pool, _pool_pid = q, os.getpid()
    return _pool


def run_parts(fn: Callable[[int], None], n: int) -> None:
    """``fn(k)`` for k in 0 .. n-1, on the calling thread and the helper thread side by side:
    each part is claimed by whichever thread is free, so a helper the OS does not schedule in
    time (a loaded machine) costs nothing: the calling thread takes its parts too. Returns
    when every part is done. The parts must write disjoint memory (each tile's caller's
    guarantee) and release the GIL to gain (numba's ``nogil`` kernels, ONNX Runtime).

    Raises:
        What a part raised (the calling thread's first), after every started part ended.
    """
    job = _Job(fn, n)
    _helper().put(job)
    try:
        job.work()
    finally:
        if job.started:   # else the helper claims nothing: every part is taken
            job.done.acquire()
    if job.err is not None:
        raise job.err


#: Fewest accumulator elements whose epilogue (after the tile's GEMM) is computed in parts on
#: both threads (:func:`epilogue_in_parts`): about 130 us on one thread (7-8 elements a ns
#: here). From 2**15 on (about 4 us) the hand-offs cost more than they saved: per image
#: (in-process alternation, the process at real-time priority on the loaded machine, wall /
#: CPU ms) EfficientNet-Lite0 6.52 / 8.05 at 2**15, 6.04 / 7.19 with no split; 2**17 still
#: 0.1-0.5 ms slower than none; ResNet-50 20.6 / 24.0 at 2**17, 20.4 / 23.3 with none.
EPILOGUE_SPLIT_MIN = 1 << 20
#: Parts of such an epilogue (row ranges): several, so the calling thread takes the ones a
#: late helper leaves.
EPILOGUE_PARTS = 4


def threads() -> int:
    """The threads a tile is computed on (:func:`set_threads`)."""
    return _threads


def epilogue_in_parts(acc: np.ndarray, params: tuple, zp_y: int, lo: int, hi: int,
                      sc: np.ndarray | None, zp_sc: int, out: np.ndarray) -> np.ndarray:
    """:func:`~tcc_compiler.numerics.jit.epilogue_into` (same arguments and conditions:
    acc int32 [A, B, O] in memory of its own, sc [A, B, O] or None, out passing
    :func:`~tcc_compiler.numerics.jit.out_fits`) as up to :data:`EPILOGUE_PARTS` ranges of
    rows A computed by :func:`run_parts`: element-wise, each element once, each row's
    shortcut read by the part writing that row (the "same elements" rule holds per part),
    so the same bytes. Returns ``out``."""
    rows = acc.shape[0]
    n = min(EPILOGUE_PARTS, rows)
    cuts = [rows * k // n for k in range(n + 1)]

    def part(k: int) -> None:
        a, b = cuts[k], cuts[k + 1]
        jit.epilogue_into(acc[a:b], params, zp_y, lo, hi, None if sc is None else sc[a:b],
                          zp_sc, out[a:b])

    run_parts(part, n)
    return out


def band_input(x: np.ndarray, pads: tuple, r0: int, r1: int, kh: int, sh: int,
               dh: int) -> tuple[np.ndarray, tuple] | None:
    """The input rows and pads of output rows ``[r0, r1)`` of a conv (module docstring).

    Args:
        x: the tile's input [H, W, C] (NHWC, any dtype and strides). pads: (top, left,
            bottom, right). kh, sh, dh: kernel rows, row stride, row dilation.

    Returns:
        (the view of ``x``'s rows the band reads, its (top, left, bottom, right) pads), or
        None when the band reads no input row (all padding: not split).
    """
    top, left, _, right = pads
    a = r0 * sh - top                                  # first padded row, input coordinates
    b = (r1 - 1) * sh + (kh - 1) * dh + 1 - top        # one past the last
    lo, hi = max(a, 0), min(b, x.shape[0])
    if hi <= lo:
        return None
    return x[lo:hi], (lo - a, left, b - hi, right)


def _band(x: np.ndarray, pads: tuple, cw: ConvWeights, strides, dilations, zp_in: int,
          params: tuple, zp_out: int, lo: int, hi: int, sc: np.ndarray | None, zp_sc: int,
          out: np.ndarray) -> None:
    """One band: the accumulator of ``x`` (its pads) and the compiled epilogue into ``out``
    (the band's rows of the output box); without a shortcut both in one pass
    (:func:`~tcc_compiler.numerics.accumulator.depthwise_epilogue`, the same bytes), made
    once per band shape and kept (:func:`_fused`)."""
    if sc is None:
        fused = _fused(x.shape, pads, cw, strides, dilations, zp_in, params, zp_out, lo, hi)
        if fused is not None:
            fused(x, out)
            return
    acc = conv_accumulate_f(x, zp_in, cw, strides, pads, dilations)
    jit.epilogue_into(acc, params, zp_out, lo, hi, sc, zp_sc, out)


#: (id(weights), band shape, pads, ...) -> (weights, fused routine or None); emptied when it
#: reaches :data:`_FUSED_MAX` entries. The weights are kept with their routine, so an id is
#: never reused for other weights while its entry lives.
_fused_cache: dict[tuple, tuple] = {}
_FUSED_MAX = 512


def _fused(shape: tuple, pads: tuple, cw: ConvWeights, strides, dilations, zp_in: int,
           params: tuple, zp_out: int, lo: int, hi: int):
    """The band's :func:`~tcc_compiler.numerics.accumulator.depthwise_epilogue` routine
    (or None), made on its first run and kept: the bands of a tile have the same shapes,
    pads and weights on every run."""
    key = (id(cw), shape, tuple(pads), tuple(strides), tuple(dilations), int(zp_in),
           id(params), int(zp_out), int(lo), int(hi))
    hit = _fused_cache.get(key)
    if hit is not None and hit[0] is cw and hit[1] is params:
        return hit[2]
    fused = depthwise_epilogue(shape, zp_in, cw, strides, pads, dilations, params, zp_out,
                               lo, hi)
    with _lock:
        if len(_fused_cache) >= _FUSED_MAX:
            _fused_cache.clear()
        _fused_cache[key] = (cw, params, fused)
    return fused


def fused_bands(x: np.ndarray, pads: tuple, cw: ConvWeights, strides, dilations, kh: int,
                epi: tuple, out: np.ndarray) -> list[tuple] | None:
    """The two bands :func:`conv_in_bands` computes for a depthwise tile without a shortcut,
    made once for a tile run many times (its input and output boxes fixed): per band (input
    rows, output rows, its fused routine), the routine ``f(xb, ob)`` being
    :func:`_band`'s (:func:`_fused`), so the bytes are :func:`conv_in_bands`'s; None where
    that declines (not depthwise, one output row, the output over the input, a band of
    padding only, not int8) or a band's fused routine does (the caller keeps the general
    route).

    Args: as :func:`conv_in_bands` (``epi``'s ``zp_sc`` unused). Call the bands with
    :func:`run_parts` (or compute the whole tile with its own fused routine on one thread:
    the same bytes).
    """
    oh = out.shape[0]
    if cw.dw is None or oh < 2 or x.dtype != np.int8 or np.may_share_memory(x, out):
        return None
    params, zp_in, zp_out, lo, hi, _ = epi
    mid = oh // 2
    bands = []
    for r0, r1 in ((0, mid), (mid, oh)):
        part = band_input(x, pads, r0, r1, kh, strides[0], dilations[0])
        if part is None:
            return None
        xb, pb = part
        fn = _fused(xb.shape, pb, cw, strides, dilations, zp_in, params, zp_out, lo, hi)
        if fn is None:
            return None
        bands.append((xb, out[r0:r1], fn))
    return bands


def conv_in_bands(x: np.ndarray, pads: tuple, cw: ConvWeights, strides, dilations,
                  kh: int, macs: int, epi: tuple, sc: np.ndarray | None,
                  out: np.ndarray) -> bool:
    """Compute a tile whose result goes straight into ``out`` through the compiled epilogue
    (:func:`~tcc_compiler.numerics.jit.epilogue_into`'s conditions, checked by the caller)
    as two bands of output rows, the second on the helper thread; False (nothing written)
    when the tile is not split (one thread, not depthwise, fewer than :data:`SPLIT_MIN_MACS`
    MACs or two rows, a band of padding only, the output sharing bytes with the input).

    Args:
        x: the input [H, W, C] int8 (NHWC). pads: (top, left, bottom, right). cw: the
            prepared weights. strides, dilations: (h, w). kh: kernel rows. macs: the tile's
            multiply-accumulates.
        epi: (epilogue params, zp_in, zp_out, lo, hi, zp_sc): the compiled epilogue's
            parameters (:func:`~tcc_compiler.numerics.jit.epilogue_params`), the input zero
            point and the epilogue's scalars.
        sc: the shortcut [OH, OW, O] or None. out: the output box [OH, OW, O] (int8/int16).

    Raises:
        What the accumulator or epilogue raises (ValueError for a window that does not fit),
        after both bands finished.
    """
    oh = out.shape[0]
    if _threads < 2 or cw.dw is None or macs < SPLIT_MIN_MACS or oh < 2 or x.dtype != np.int8 \
            or np.may_share_memory(x, out):   # a band would overwrite rows the other reads
        return False
    mid = oh // 2
    parts = [band_input(x, pads, r0, r1, kh, strides[0], dilations[0])
             for r0, r1 in ((0, mid), (mid, oh))]
    if parts[0] is None or parts[1] is None:
        return False
    params, zp_in, zp_out, lo, hi, zp_sc = epi

    rows = ((0, mid), (mid, oh))

    def run(k: int) -> None:
        xb, pb = parts[k]
        r0, r1 = rows[k]
        _band(xb, pb, cw, strides, dilations, zp_in, params, zp_out, lo, hi,
              None if sc is None else sc[r0:r1], zp_sc, out[r0:r1])

    run_parts(run, 2)
    return True
