"""Control the BLAS thread count numpy uses while the reference executor runs (and while
compile calibrates and rounds weights with GPTQ, tcc_compiler/driver/pipeline.py).

Why: the executor's GEMMs are tile-sized (a few MFLOP each). With OpenBLAS's default of one
thread per core, each call pays a thread wake-up and barrier; when another thread pool is
active in the same process (ONNX Runtime's spinning intra-op threads under ``tccc run --check``
or ``tools/bench.py``) or the machine is loaded, the BLAS threads fight for cores and a
ResNet-50 run measured 18.6 s with the default threads against 1.7 s with one thread on this
2-core machine. One thread per process is the default here; ``tccc run/eval --jobs N`` gets
parallelism from processes instead.

The switch is done through OpenBLAS's own C entry points (found among the shared libraries the
process has loaded, as threadpoolctl does), so no dependency is added. Other BLAS builds are
left alone (logged at DEBUG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

_SET_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
              "openblas_set_num_threads64_", "openblas_set_num_threads")
_GET_NAMES = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads_64_",
              "openblas_get_num_threads64_", "openblas_get_num_threads")
_api: tuple | None | bool = False   # False = not probed yet, None = no OpenBLAS found


def _openblas() -> tuple | None:
    """(set_fn, get_fn) of the OpenBLAS numpy loaded, or None."""
    global _api
    if _api is not False:
        return _api
    _api = None
    import numpy  # noqa: F401  (make sure numpy's BLAS is loaded)

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower()})
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setf = next((getattr(lib, n) for n in _SET_NAMES if hasattr(lib, n)), None)
        getf = next((getattr(lib, n) for n in _GET_NAMES if hasattr(lib, n)), None)
        if setf is not None and getf is not None:
            setf.argtypes, setf.restype = [ctypes.c_int], None
            getf.argtypes, getf.restype = [], ctypes.c_int
            _api = (setf, getf)
            log.debug("BLAS thread control through %s", path)
            break
    if _api is None:
        log.debug("no OpenBLAS found; BLAS thread count left as is")
    return _api


def get_blas_threads() -> int | None:
    """Current OpenBLAS thread count, or None when numpy does not use OpenBLAS."""
    api = _openblas()
    return None if api is None else int(api[1]())


#: Guards the process-wide OpenBLAS setting across threads (``tccc run --check`` runs the
#: executor and the golden model side by side, each inside :func:`blas_threads`).
_lock = threading.Lock()
_holders = 0                 # bodies running inside blas_threads(n) with n not None
_saved: int | None = None    # the count before the first of them entered


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the body with OpenBLAS limited to ``n`` threads (None: leave unchanged).

    The count is process-wide: bodies on several threads share it. The first to enter saves
    the previous count, each sets ``n``, the last to leave restores the saved count (also when
    a body raises), so a thread leaving early never hands the others OpenBLAS's default
    threads while they run.
    """
    global _holders, _saved
    api = _openblas() if n is not None else None
    if api is None:
        yield
        return
    setf, getf = api
    with _lock:
        if _holders == 0:
            _saved = int(getf())
        _holders += 1
        setf(int(n))
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                setf(_saved)
