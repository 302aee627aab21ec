"""Run many inputs through one compiled program, in this process, in worker processes or on
a Ray cluster (:mod:`.ray_batch`).

The decoded program (both binaries, the executor's happens-before table) is built once per
process and reused for every input. With ``jobs > 1`` a :mod:`multiprocessing` pool of ``jobs``
workers each loads the folder once (its initializer) and results come back in input order.
Each worker limits BLAS to one thread (the executor's default), so N jobs use N cores.
Items are taken from their iterable only as workers free up (at most
:data:`IN_FLIGHT_PER_WORKER` per worker submitted and not yet returned), so a lazy iterable
of decoded inputs holds a bounded number of them, however many there are.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tcc_compiler.errors import InputError, TccError

log = logging.getLogger(__name__)

#: A job: callable(program, item) -> result, run in whichever process holds the program.
Job = Callable[[Any, Any], Any]

#: Items submitted to each worker (process or Ray actor) and not yet returned: enough to keep
#: it busy while results travel back, few enough to bound the items held.
IN_FLIGHT_PER_WORKER = 2

_worker_prog = None
_worker_job: Job | None = None


def _init_worker(folder: str, job: Job) -> None:
    """Load ``folder`` once in a worker process; its executor computes every tile on one
    thread (sim/conv_bands.py: the workers are the parallelism). The worker ignores SIGINT:
    a terminal's Ctrl-C reaches the whole process group, and the parent alone handles it
    (its KeyboardInterrupt terminates the pool). A worker interrupted too printed a traceback
    under the parent's one line, and one interrupted just after taking the task queue's lock
    died holding it, so ``Pool.terminate()`` waited forever."""
    from tcc_compiler.runtime.loaded import load_program
    from tcc_compiler.sim import conv_bands

    global _worker_prog, _worker_job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conv_bands.set_threads(1)
    _worker_prog = load_program(folder)
    _worker_job = job


def _call_worker(item):
    try:
        return ("ok", _worker_job(_worker_prog, item))
    except TccError as exc:  # sent back as text: exception classes with custom args
        return ("error", type(exc).__name__, str(exc))   # may not unpickle


def run_input(prog, x: np.ndarray, schedule: str = "inorder", seed: int = 0) -> dict:
    """Default job: :meth:`LoadedProgram.run` on one float input with a schedule.

    Returns:
        {name: array} as :meth:`LoadedProgram.decode_outputs` gives.
    """
    if getattr(prog, "segmented", False):  # NPU and host segments, walked in order
        return prog.run(x, schedule, seed)
    out = prog.execute(prog.quantize(x), schedule=schedule, seed=seed)
    return prog.decode_outputs(out)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def effective_jobs(jobs: int, n_items: int) -> int:
    """Worker processes worth starting for ``n_items`` items with ``jobs`` asked for: at most
    one per item and one per usable CPU (each worker runs single-threaded BLAS, so more
    workers than CPUs only add start-up time and memory), at least 1."""
    n = max(1, min(jobs, n_items, usable_cpus()))
    if n < jobs:
        log.info("--jobs %d: using %d worker process(es) (%d input(s), %d usable CPU(s))",
                 jobs, n, n_items, usable_cpus())
    return n


def imap(folder: str | os.PathLike, items: Iterable, job: Job, jobs: int = 1,
         prog=None, ray: str | None = None, count: int | None = None) -> Iterator:
    """Apply ``job(program, item)`` to every item, results in item order.

    Args:
        folder: compiled output folder. items: inputs for ``job`` (picklable when jobs > 1);
            a lazy iterable is read one item at a time as each is needed (in this process,
            or as a worker frees up: :data:`IN_FLIGHT_PER_WORKER`), except on Ray.
        count: the number of ``items`` when it is a lazy iterable (for the jobs cap); None:
            ``len(items)``, an iterable without a length being read into a list first.
        job: a module-level function (picklable) ``job(prog, item) -> result``.
        jobs: worker processes at most; 1 runs in this process (reusing ``prog`` if
            given). Capped by :func:`effective_jobs` at the number of items and of usable
            CPUs (``--jobs 500`` on 12 inputs used to start hundreds of processes).
        prog: an already loaded program for the in-process case.
        ray: run on the Ray cluster at this address ("auto": the running one or a new local
            one) instead (:func:`tcc_compiler.runtime.ray_batch.imap_ray`: the same ``job``
            on actors, results in the same order); ``jobs`` > 1 then caps the actors.

    Yields:
        ``job``'s results in order.

    Raises:
        InputError: jobs < 1. TccError: what ``job`` raised (re-raised in this process with
            the worker's message when jobs > 1).
    """
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: must be >= 1")
    if count is None and not hasattr(items, "__len__"):
        items = list(items)
    if ray is not None:
        from tcc_compiler.runtime.ray_batch import imap_ray

        yield from imap_ray(folder, list(items), job, ray, jobs if jobs > 1 else None)
        return
    jobs = effective_jobs(jobs, len(items) if count is None else count)
    if jobs == 1:
        from tcc_compiler.runtime.loaded import load_program

        prog = prog if prog is not None else load_program(folder)
        for item in items:
            yield job(prog, item)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(str(Path(folder)), job))
    try:
        for res in _windowed(pool, iter(items), jobs * IN_FLIGHT_PER_WORKER):
            if res[0] == "error":
                from tcc_compiler import errors

                cls = getattr(errors, res[1], TccError)
                raise (cls(res[2]) if cls is not errors.UnsupportedError else TccError(res[2]))
            yield res[1]
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _windowed(pool, items: Iterator, window: int) -> Iterator:
    """:func:`_call_worker`'s answers for ``items`` in order, at most ``window`` submitted to
    ``pool`` and not yet returned (``Pool.imap`` reads its whole iterable at once: every
    decoded input in memory). An item that cannot be made (``items`` raising a TccError,
    e.g. an unreadable photo) is raised in its turn, after the answers of those before it."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.apply_async(_call_worker, (item,)))
            if len(pending) >= window:
                yield pending.popleft().get()
    except TccError:
        while pending:
            yield pending.popleft().get()
        raise
    while pending:
        yield pending.popleft().get()
