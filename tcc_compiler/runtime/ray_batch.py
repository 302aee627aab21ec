"""Run many inputs through one compiled program on a Ray cluster (``tccc eval --ray``).

The optional extra ``pip install tccc[ray]`` brings Ray. Each worker is a Ray actor that
holds the decoded program, as a ``--jobs`` worker process does (:mod:`.batch`), and applies
the same job function to its items; results come back in item order, so a Ray run gives the
same rows, in the same order, as a local one.

What travels: the compiled folder's files are put once into Ray's object store and written to
a temporary folder on each worker's node (so the folder need not be on a shared filesystem),
and ``tcc_compiler`` itself is shipped as a ``py_modules`` package of the job's runtime
environment (the workers run the driver's code). The items travel as they are: for ``tccc
eval`` that is each sample's path (and the float model's), which every node must be able to
read at the same path (a shared filesystem or the same copy of the dataset).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from tcc_compiler.errors import InputError, TccError
from tcc_compiler.runtime.batch import IN_FLIGHT_PER_WORKER

log = logging.getLogger(__name__)


def import_ray():
    """The ``ray`` module.

    Raises:
        InputError: Ray is not installed (``--ray`` needs the ``tccc[ray]`` extra).
    """
    try:
        import ray
    except ImportError:
        raise InputError("--ray: Ray is not installed; install the extra with "
                         "pip install 'tccc[ray]' (or pip install ray)") from None
    return ray


def folder_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """Every file under a compiled ``folder`` (segmented ones have sub-folders), by relative
    POSIX path.

    Raises:
        InputError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a compiled output folder")
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


class RayWorker:
    """The state of one Ray actor: the program loaded from the folder's files, and the job.

    Args:
        files: :func:`folder_files` of the compiled folder. job: ``job(prog, item)``
            (module-level, picklable), the same function the local path runs.
    """

    def __init__(self, files: dict[str, bytes], job) -> None:
        from tcc_compiler.runtime.loaded import load_program

        self.dir = tempfile.mkdtemp(prefix="tccc-ray-")
        for rel, data in files.items():
            dst = Path(self.dir, rel)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        self.prog = load_program(self.dir)
        self.job = job

    def run(self, item):
        """("ok", result) or ("error", class name, message) for a TccError, as the process
        pool's workers answer (:func:`tcc_compiler.runtime.batch._call_worker`)."""
        try:
            return ("ok", self.job(self.prog, item))
        except TccError as exc:
            return ("error", type(exc).__name__, str(exc))

    def close(self) -> None:
        """Remove the worker's copy of the folder."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _connect(ray, address: str) -> bool:
    """Connect to the cluster at ``address`` ("auto": the running one, else a new local
    instance); True when this call started the connection (and should shut it down).

    Raises:
        InputError: no cluster answers at ``address``.
    """
    if ray.is_initialized():
        return False
    # Ray's core logs its connection retries on stderr; a failure is our one-line error
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    # the tcc_compiler package folder (a path: the package object is a higher layer)
    env = {"py_modules": [str(Path(__file__).resolve().parents[1])]}
    try:
        if address == "auto":
            try:
                ray.init(address="auto", runtime_env=env, log_to_driver=False,
                         configure_logging=False)
            except ConnectionError:   # no cluster running here: start a local one
                ray.init(runtime_env=env, log_to_driver=False, configure_logging=False,
                         include_dashboard=False)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False,
                     configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                         ) from None
    return True


def ray_workers(ray, n_items: int, jobs: int | None) -> int:
    """Actors worth starting: one per CPU of the cluster and per item, at most ``jobs`` when
    given; at least 1."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return max(1, min(n_items, cpus, jobs if jobs else cpus))


def imap_ray(folder: str | os.PathLike, items: list, job, address: str,
             jobs: int | None = None) -> Iterator:
    """Apply ``job(program, item)`` to every item on Ray actors; results in item order.

    Args:
        folder: compiled output folder (shipped to the actors). items: picklable inputs of
            ``job``. address: "auto" or a cluster address (``ray://host:10001``,
            ``host:6379``). jobs: at most this many actors (None: one per cluster CPU).

    Yields:
        ``job``'s results in order.

    Raises:
        InputError: Ray missing or no cluster at ``address``. TccError: what ``job`` raised
        (re-raised here with the worker's message).
    """
    ray = import_ray()
    files = folder_files(folder)
    started = _connect(ray, address)
    actors = []
    try:
        n = ray_workers(ray, len(items), jobs)
        cls = ray.remote(num_cpus=1)(RayWorker)
        ref = ray.put(files)
        actors = [cls.remote(ref, job) for _ in range(n)]
        log.info("--ray %s: %d actor(s) for %d item(s)", address, n, len(items))
        pending: deque = deque()
        nxt = 0
        for _ in range(len(items)):
            while nxt < len(items) and len(pending) < n * IN_FLIGHT_PER_WORKER:
                pending.append(actors[nxt % n].run.remote(items[nxt]))
                nxt += 1
            res = ray.get(pending.popleft())
            if res[0] == "error":
                from tcc_compiler import errors

                kind = getattr(errors, res[1], TccError)
                raise (kind(res[2]) if kind is not errors.UnsupportedError
                       else TccError(res[2]))
            yield res[1]
    finally:
        for a in actors:
            try:
                ray.get(a.close.remote())
                ray.kill(a)
            except Exception:   # a dead actor or a lost cluster: nothing left to clean
                pass
        if started:
            ray.shutdown()
