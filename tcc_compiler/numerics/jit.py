"""Optional compiled kernels (numba, the ``fast`` extra: ``pip install tccc[fast]``): the
switch and the loader, and every entry point re-exported from the modules that hold them.

* :mod:`~tcc_compiler.numerics.jit_epilogue`: the conv epilogue (:func:`epilogue`,
  :func:`epilogue_into`, :func:`epilogue_params`, :func:`out_fits`);
* :mod:`~tcc_compiler.numerics.jit_conv`: the conv accumulators: the depthwise sums alone or
  with the epilogue in one pass (:func:`depthwise`, :func:`depthwise_routine`,
  :func:`depthwise_epilogue_routine`, :data:`MAX_DW_TAPS`) and the int8 GEMM's patch matrix
  (:func:`im2col_u8`; :func:`im2col_px4` for three channels, widened to four, over
  :func:`px4_index`);
* :mod:`~tcc_compiler.numerics.jit_tensor`: one-pass tensor routines of calibration,
  quantization and the executor's tables (:func:`hist_count`, :func:`count_zeros`,
  :func:`quantize_nhwc`, :func:`mean_error`, :func:`lut_int8`).

Each is the *definition* run element by element, so exact by construction (the modules give
the bounds). Callers and tests use them as ``jit.X``: a test's ``monkeypatch.setattr(jit, X,
...)`` reaches every caller, and the entry points read this module's switch (``_enabled``,
``_kernels``) at call time, so a patch of those reaches them too.

Without numba (or after :func:`set_enabled` ``(False)``) every entry returns None and the
numpy paths of :mod:`~tcc_compiler.numerics.epilogue` / :mod:`~tcc_compiler.numerics.gemm`
run; the tests check both give the same bytes. Measured on this 2-core machine, loaded, CPU
time: the epilogue of a [1568, 256] int32 accumulator 0.20 ms against 0.9-1.3 ms for the
float64 numpy form (its passes over a float64 copy). numba is imported on the first call
(about 0.6 s) and the kernels are cached on disk (``cache=True``: compiled once per machine,
about 1-2 s per operand type combination, then loaded in milliseconds). Kernels run on the
calling thread (parallelism comes from processes, :mod:`tcc_compiler.sim.blas`).
"""

from __future__ import annotations

import importlib
import logging
import threading

import numpy as np

from tcc_compiler.numerics.jit_startup import without_scipy_linalg

log = logging.getLogger(__name__)

_lock = threading.Lock()
_kernels: object | None | bool = False   # False = not loaded yet, None = unavailable
_enabled = True
_warmer: threading.Thread | None = None   # the warm_in_background thread


def set_enabled(flag: bool) -> bool:
    """Use the compiled kernels (when numba is installed) or not; returns the previous
    setting. Off, every caller takes its numpy path (the same results)."""
    global _enabled
    old, _enabled = _enabled, bool(flag)
    return old


def available() -> bool:
    """Whether the compiled kernels are in use (enabled, numba importable and compiling)."""
    return _enabled and _load() is not None


def loaded() -> bool:
    """Whether the compiled kernels are in use and already loaded (no import to pay: numba's
    import costs about 0.4 s of CPU, more than the kernels save on a little data)."""
    return _enabled and _kernels is not False and _kernels is not None


def warm() -> bool:
    """Load the kernels now and dispatch one of them once, so the first real call pays
    neither numba's import (about 0.17 s of CPU) nor its first dispatch (numba sets up its
    compiler's registries, then loads the kernel from its disk cache). The dispatch runs
    without SciPy's linear algebra, which numba's registries would import for nothing
    (:func:`~tcc_compiler.numerics.jit_startup.without_scipy_linalg`: 0.22 s of CPU less).
    Returns whether the kernels are in use (:func:`available`). Safe to call from any
    thread, any number of times (the later calls cost nothing)."""
    k = _load() if _enabled else None
    if k is None:
        return False
    with without_scipy_linalg():
        k.count_zeros(np.zeros(1, np.float32))   # calibration's first kernel, its own types
    return True


def warm_in_background() -> threading.Thread | None:
    """Start :func:`warm` on a daemon thread (numba's import and first dispatch are mostly
    Python, but the caller's ONNX Runtime session setup and inference release the GIL, so the
    two overlap on a multi-core machine) and return the thread, or None when there is
    nothing to load (kernels disabled or already loaded) or a warm-up already runs. Failures
    are logged, never raised: the first real call then loads (or falls back to numpy) as
    without warming."""
    global _warmer
    if not _enabled or _kernels is not False or (_warmer is not None and _warmer.is_alive()):
        return None

    def run() -> None:
        try:
            warm()
        except Exception as exc:  # noqa: BLE001 -- a failed warm-up only costs its time
            log.debug("warming the compiled kernels failed: %s", exc)

    _warmer = threading.Thread(target=run, name="tccc-jit-warm", daemon=True)
    _warmer.start()
    return _warmer


_modules: dict[str, object] = {}   # module name -> module, or None: unavailable


def kernel_module(name: str):
    """The compiled-kernel module ``name`` (e.g. ``"tcc_compiler.quant.gptq_jit"``), imported
    on first use, or None: the kernels are off or numba is missing (:func:`available`), or
    its import failed (logged once; the caller's numpy path serves). Thread-safe."""
    if not available():
        return None
    if name not in _modules:
        with _lock:
            if name not in _modules:
                try:
                    _modules[name] = importlib.import_module(name)
                except Exception as exc:   # numba raises its own types; numpy serves
                    log.info("compiled kernels %s unavailable (%s): numpy", name, exc)
                    _modules[name] = None
    return _modules[name]


def _load():
    """The namespace of compiled kernels, or None without numba (or with numba's JIT
    disabled, which would run them as slow Python)."""
    global _kernels
    if _kernels is False:
        with _lock:
            if _kernels is False:
                _kernels = _build()
    return _kernels


def _build():
    try:
        import numba
    except ImportError:
        log.debug("numba not installed: numpy kernels")
        return None
    if numba.config.DISABLE_JIT:
        log.debug("numba's JIT is disabled: numpy kernels")
        return None
    try:   # cache=True needs a writable cache folder (next to the module or numba's own)
        from tcc_compiler.numerics import jit_kernels
    except Exception as exc:   # numba raises its own types; the numpy kernels serve
        log.info("numba kernels unavailable (%s): numpy kernels", exc)
        return None
    return jit_kernels


def contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous writeable array (a copy only when it is not): one compiled
    specialization per dtype instead of one per layout and read-only flag."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C")


def kernels():
    """The compiled kernels' namespace (:mod:`tcc_compiler.numerics.jit_kernels`, loaded on
    first use), or None when they are off (:func:`set_enabled`) or unavailable: the entry
    points' one check before a call."""
    return _load() if _enabled else None


# The entry points (imported last: they read this module's switch at call time).
from tcc_compiler.numerics.jit_conv import (  # noqa: E402,F401
    MAX_DW_TAPS, depthwise, depthwise_epilogue_routine, depthwise_routine, dw_kernel,
    im2col_px4, im2col_u8, px4_index)
from tcc_compiler.numerics.jit_epilogue import (  # noqa: E402,F401
    epilogue, epilogue_into, epilogue_params, out_fits)
from tcc_compiler.numerics.jit_tensor import (  # noqa: E402,F401
    ELIDE_ELEMS, count_zeros, hist_count, lut_int8, mean_error, quantize_nhwc)
