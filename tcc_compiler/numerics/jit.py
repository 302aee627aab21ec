"""Optional compiled kernels (numba, the ``fast`` extra: ``pip install tccc[fast]``) for the two
memory-bound loops of the conv arithmetic: the epilogue and the depthwise accumulator.

Both are the *definitions* run element by element in one pass, so they are exact by
construction, with no bound to prove:

* :func:`epilogue` computes :func:`~tcc_compiler.numerics.epilogue.conv_epilogue_int64`'s
  formula per element in int64: ``x = wrap32(acc + bias)`` (|x| <= 2**31), ``x M`` (< 2**62),
  ``(sc - zp_sc) Msc`` (|sc - zp_sc| < 2**16, Msc < 2**31: < 2**47), ``2**(S-1)`` (<= 2**61):
  the sum stays below 2**63, so every int64 operation is exact; ``>>`` on int64 is an
  arithmetic shift (floor), then the clamp and ``zp_y`` as in the definition.
* :func:`depthwise` sums ``(x - zp) w`` over the taps inside the input in int32 (taps in the
  padding hold the zero point and add 0): |sum| <= KH KW 255 128 < 2**31 for KH KW <= 65,793,
  which the caller checks.

Without numba (or after :func:`set_enabled` ``(False)``) both return None and the numpy paths
of :mod:`~tcc_compiler.numerics.epilogue` / :mod:`~tcc_compiler.numerics.gemm` run; the tests
check both give the same bytes. Measured on this 2-core machine, loaded, CPU time: the
epilogue of a [1568, 256] int32 accumulator 0.20 ms against 0.9-1.3 ms for the float64 numpy
form (its passes over a float64 copy). numba is imported on the first call (about 0.6 s) and
the kernels are cached on disk (``cache=True``: compiled once per machine, about 1-2 s per
operand type combination, then loaded in milliseconds). Kernels run on the calling thread
(parallelism comes from processes, :mod:`tcc_compiler.sim.blas`).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

_lock = threading.Lock()
_kernels: object | None | bool = False   # False = not loaded yet, None = unavailable
_enabled = True

#: Largest depthwise window whose int32 sum cannot overflow: KH KW 255 128 < 2**31.
MAX_DW_TAPS = (2 ** 31 - 1) // (255 * 128)


def set_enabled(flag: bool) -> bool:
    """Use the compiled kernels (when numba is installed) or not; returns the previous
    setting. Off, every caller takes its numpy path (the same results)."""
    global _enabled
    old, _enabled = _enabled, bool(flag)
    return old


def available() -> bool:
    """Whether the compiled kernels are in use (enabled, numba importable and compiling)."""
    return _enabled and _load() is not None


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


def _c(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous writeable array (a copy only when it is not): one compiled
    specialization per dtype instead of one per layout and read-only flag."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C")


def epilogue(acc: np.ndarray, bias, mult, shift, zp_y: int, lo: int, hi: int,
             shortcut: np.ndarray | None, zp_sc: int, sc_mult, out_dtype) -> np.ndarray | None:
    """:func:`~tcc_compiler.numerics.epilogue.conv_epilogue_int64` (same arguments) in one
    compiled pass, or None when the kernels are unavailable or a parameter is outside the
    definition's domain (shift outside 1..62, a multiplier outside 0..2**31 - 1: the numpy
    path handles or rejects it).

    Args:
        acc: [..., O] int32, or exact integers in float32/float64 (an int16 input's may pass
            2**31; wrapped to 32 bits as the definition does).
        shortcut: int8/int16 [..., O] or None. out_dtype: np.int8 or np.int16.
    """
    if not _enabled or _load() is None:
        return None
    o = acc.shape[-1] if acc.ndim else 0
    params = _params(bias, mult, shift, sc_mult if shortcut is not None else None)
    if params is None or acc.ndim == 0 or params[0].size != o or not o:
        return None
    b, m, s, rnd, msc = params
    if acc.dtype != np.int32:   # exact integers: int64 holds them, int32 wraps as the NPU
        acc = acc.astype(np.int64).astype(np.int32)
    a2 = _c(acc).reshape(-1, o)
    out = np.empty(a2.shape, out_dtype)
    k = _load()
    if shortcut is None:
        k.epilogue(a2, b, m, s, rnd, int(zp_y), int(lo), int(hi), out)
    else:
        sc2 = _c(np.broadcast_to(shortcut, acc.shape)).reshape(-1, o)
        k.epilogue_sc(a2, b, m, s, rnd, int(zp_y), int(lo), int(hi), sc2, int(zp_sc), msc,
                      out)
    return out.reshape(acc.shape)


#: Parameter arrays -> their int64 form (validated), so the tiles of one layer convert and
#: check their parameters once; emptied when it reaches :data:`_PARAMS_MAX` entries.
_params_cache: dict[tuple, tuple | None] = {}
_PARAMS_MAX = 4096


def _params(bias, mult, shift, sc_mult) -> tuple | None:
    """(bias, M, S, 2**(S-1), Msc) as int64 [O] (Msc = M without a shortcut), or None when
    a parameter is outside the definition's domain or the lengths differ."""
    arrs = [np.asarray(a) for a in (bias, mult, shift, mult if sc_mult is None else sc_mult)]
    key = tuple((a.dtype.str, a.shape, a.tobytes()) for a in arrs)
    hit = _params_cache.get(key, False)
    if hit is not False:
        return hit
    b, m, s, msc = (a.astype(np.int64).reshape(-1) for a in arrs)
    ok = (b.size == m.size == s.size == msc.size and m.size
          and s.min() >= 1 and s.max() <= 62 and m.min() >= 0 and m.max() < 2 ** 31
          and msc.min() >= 0 and msc.max() < 2 ** 31)
    if len(_params_cache) >= _PARAMS_MAX:
        _params_cache.clear()
    res = _params_cache[key] = (b, m, s, np.left_shift(np.int64(1), s - 1), msc) if ok \
        else None
    return res


def depthwise(x: np.ndarray, zp: int, taps: np.ndarray, strides, pads, dilations,
              oh: int, ow: int) -> np.ndarray | None:
    """Depthwise accumulator int32 [OH, OW, C] of the int8 input ``x`` [H, W, C] (NHWC) with
    int8 ``taps`` [KH, KW, C] (padding = the zero point ``zp``), or None when the kernels are
    unavailable or the window is beyond :data:`MAX_DW_TAPS`."""
    if not _enabled or _load() is None or x.dtype != np.int8:
        return None
    kh, kw, c = taps.shape
    if kh * kw > MAX_DW_TAPS or x.shape[2] != c or oh < 1 or ow < 1:
        return None
    out = np.zeros((oh, ow, c), np.int32)
    _load().depthwise(_c(x), np.int32(zp), _c(np.asarray(taps).astype(np.int32)),
                      int(strides[0]), int(strides[1]), int(dilations[0]),
                      int(dilations[1]), int(pads[0]), int(pads[1]), out)
    return out
