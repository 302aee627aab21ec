"""Optional compiled kernels (numba, the ``fast`` extra: ``pip install tccc[fast]``) for the two
memory-bound loops of the conv arithmetic: the epilogue and the depthwise accumulator
(apart, or fused for a depthwise conv).

Both are the *definitions* run element by element in one pass, so they are exact by
construction, with no bound to prove:

* :func:`epilogue` computes :func:`~tcc_compiler.numerics.epilogue.conv_epilogue_int64`'s
  formula per element in int64: ``x = wrap32(acc + bias)`` (|x| <= 2**31), ``x M`` (< 2**62),
  ``(sc - zp_sc) Msc`` (|sc - zp_sc| < 2**16, Msc < 2**31: < 2**47), ``2**(S-1)`` (<= 2**61):
  the sum stays below 2**63, so every int64 operation is exact; ``>>`` on int64 is an
  arithmetic shift (floor), then the clamp and ``zp_y`` as in the definition. bias, M and
  Msc travel as int32 (all fit), so each product is one 32x32->64-bit multiply, which the
  compiler vectorises (measured about 20 % faster than int64 factors, loaded machine).
* :func:`depthwise` sums ``(x - zp) w`` over the taps inside the input in int32 (taps in the
  padding hold the zero point and add 0): |sum| <= KH KW 255 128 < 2**31 for KH KW <= 65,793,
  which the caller checks. With an int8 zero point each product is computed in int16 (|x -
  zp| <= 255, |w| <= 128: |product| <= 32,640 < 2**15, so exact) and widened before the sum:
  twice the lanes per vector of an int32 multiply.
* :func:`depthwise_epilogue_routine` runs both in one pass: a pixel's (or an output row's)
  sums start at the bias in int32 (adds wrap modulo 2**32, giving ``wrap32(acc + bias)``
  exactly) and go through :func:`epilogue`'s int64 formula while still in the cache.

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

import importlib
import logging
import threading

from collections.abc import Callable

import numpy as np

from tcc_compiler.numerics.dw_route import dw_kernel

log = logging.getLogger(__name__)

_lock = threading.Lock()
_kernels: object | None | bool = False   # False = not loaded yet, None = unavailable
_enabled = True
_warmer: threading.Thread | None = None   # the warm_in_background thread

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


def loaded() -> bool:
    """Whether the compiled kernels are in use and already loaded (no import to pay: numba's
    import costs about 0.4 s of CPU, more than the kernels save on a little data)."""
    return _enabled and _kernels is not False and _kernels is not None


def warm() -> bool:
    """Load the kernels now and dispatch one of them once, so the first real call pays
    neither numba's import (about 0.17 s of CPU) nor its first dispatch (about 0.3 s: numba
    sets up its compiler's registries, importing scipy.linalg on the way, then loads the
    kernel from its disk cache). Returns whether the kernels are in use (:func:`available`).
    Safe to call from any thread, any number of times (the later calls cost nothing)."""
    k = _load() if _enabled else None
    if k is None:
        return False
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


def _c(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous writeable array (a copy only when it is not): one compiled
    specialization per dtype instead of one per layout and read-only flag."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C")


def epilogue(acc: np.ndarray, bias, mult, shift, zp_y: int, lo: int, hi: int,
             shortcut: np.ndarray | None, zp_sc: int, sc_mult, out_dtype,
             params: tuple | None = None, out: np.ndarray | None = None) -> np.ndarray | None:
    """:func:`~tcc_compiler.numerics.epilogue.conv_epilogue_int64` (same arguments) in one
    compiled pass, or None when the kernels are unavailable or a parameter is outside the
    definition's domain (shift outside 1..62, a multiplier outside 0..2**31 - 1: the numpy
    path handles or rejects it).

    Args:
        acc: [..., O] int32, or exact integers in float32/float64 (an int16 input's may pass
            2**31; wrapped to 32 bits as the definition does).
        shortcut: int8/int16 [..., O] (any strides) or None. out_dtype: np.int8 or np.int16.
        params: :func:`epilogue_params` of exactly ``bias, mult, shift`` and ``sc_mult`` (a
            layer run many times prepares them once), or None: derived here.
        out: ``out_dtype`` array shaped like ``acc`` (any strides, e.g. an SRAM box) the
            result is written to, or None: a new array. It must not overlap ``shortcut``
            unless it is the very same elements (read before written).

    Returns:
        The result (``out`` when given), or None (nothing was written).
    """
    if not _enabled or _load() is None:
        return None
    o = acc.shape[-1] if acc.ndim else 0
    if params is None:
        params = epilogue_params(bias, mult, shift, sc_mult if shortcut is not None else None)
    if params is None or acc.ndim == 0 or params[0].size != o or not o:
        return None
    if out is not None and not _writable_like(out, acc, out_dtype, shortcut):
        return None
    b, m, s, rnd, msc = params
    if acc.dtype != np.int32:   # exact integers: int64 holds them, int32 wraps as the NPU
        acc = acc.astype(np.int64).astype(np.int32)
    a3 = _c(acc).reshape(_three(acc.shape))
    y = np.empty(a3.shape, out_dtype) if out is None else out.reshape(a3.shape)
    k = _load()
    if shortcut is None:
        k.epilogue(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi), y)
    else:
        sc = shortcut if shortcut.shape == acc.shape else np.broadcast_to(shortcut, acc.shape)
        sc3 = sc if sc.ndim == 3 else _c(sc).reshape(a3.shape)
        k.epilogue_sc(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi), _apart(sc3, y),
                      int(zp_sc), msc, y)
    return y.reshape(acc.shape) if out is None else out


def epilogue_into(acc: np.ndarray, params: tuple, zp_y: int, lo: int, hi: int,
                  shortcut: np.ndarray | None, zp_sc: int, out: np.ndarray) -> np.ndarray:
    """:func:`epilogue` with its checks done once by the caller (a tile run many times): the
    kernels :func:`available`, ``params`` the (not None) :func:`epilogue_params` of the
    layer, ``acc`` int32 (or exact integers in float32/float64) [A, B, O] in memory of its own
    (not the SRAM's), ``shortcut`` [A, B, O] or None, and ``out`` passing :func:`out_fits`
    for ``acc.shape`` and the shortcut. Returns ``out``, written."""
    b, m, s, rnd, msc = params
    if acc.dtype != np.int32:   # exact integers: int64 holds them, int32 wraps as the NPU
        acc = acc.astype(np.int64).astype(np.int32)
    a3 = _c(acc)
    if shortcut is None:
        _kernels.epilogue(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi), out)
    else:
        _kernels.epilogue_sc(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi),
                             _apart(shortcut, out), int(zp_sc), msc, out)
    return out


def _apart(shortcut: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``shortcut``, copied when it may share memory with ``out`` (a residual output written
    over its shortcut, schedule/overwrite.py: the very same elements, so reading them all
    first gives the same bytes). Aliased operands make the compiled loop take its scalar
    version (ResNet-50 224: the fused residual epilogue 1.0 -> 12 ms per image); a copy of
    the tile is a memcpy."""
    return shortcut.copy() if np.may_share_memory(shortcut, out) else shortcut


def _three(shape: tuple) -> tuple[int, int, int]:
    """``shape`` [..., O] as the kernels' [A, B, O]: unchanged when 3-D, else [1, N, O]."""
    if len(shape) == 3:
        return shape
    return (1, int(np.prod(shape[:-1], dtype=np.int64)), shape[-1])


def _writable_like(out: np.ndarray, acc: np.ndarray, dtype, shortcut) -> bool:
    """Whether the kernels may write the result into ``out`` element by element: 3-D,
    writeable, of ``acc``'s shape and the result's dtype, sharing no memory with ``acc`` nor
    with ``shortcut`` other than the very same elements (each read before its own write)."""
    return out_fits(out, acc.shape, dtype, shortcut) and not np.may_share_memory(out, acc)


def out_fits(out, shape: tuple, dtype, shortcut: np.ndarray | None) -> bool:
    """Whether :func:`epilogue_into` may write ``out`` for accumulators of ``shape``: an
    ndarray, 3-D, writeable, of ``shape`` and ``dtype`` (int8/int16), sharing no memory with
    ``shortcut`` (int8/int16 [..., O] or None) other than the very same elements (each read
    before its own write). A function of the arrays' layout, not their contents: a caller
    writing the same box many times checks once."""
    if (len(shape) != 3 or not isinstance(out, np.ndarray) or out.shape != shape
            or out.dtype != np.dtype(dtype) or not out.flags.writeable):
        return False
    if shortcut is None or not np.may_share_memory(out, shortcut):
        return True
    return (shortcut.shape == out.shape and shortcut.dtype == out.dtype
            and shortcut.strides == out.strides
            and shortcut.__array_interface__["data"][0] == out.__array_interface__["data"][0])


#: Parameter arrays -> their int64 form (validated), so the tiles of one layer convert and
#: check their parameters once; emptied when it reaches :data:`_PARAMS_MAX` entries.
_params_cache: dict[tuple, tuple | None] = {}
_PARAMS_MAX = 4096


def epilogue_params(bias, mult, shift, sc_mult) -> tuple | None:
    """The compiled epilogue's parameters: (bias, M, S, 2**(S-1), Msc) [O], bias, M and Msc
    int32, S and 2**(S-1) int64 (Msc = M without a shortcut, ``sc_mult`` None), or None when a
    parameter is outside the definition's domain (bias outside int32, a shift outside 1..62,
    a multiplier outside 0..2**31 - 1) or the lengths differ. Memoised by the arrays'
    bytes."""
    arrs = [np.asarray(a) for a in (bias, mult, shift, mult if sc_mult is None else sc_mult)]
    key = tuple((a.dtype.str, a.shape, a.tobytes()) for a in arrs)
    hit = _params_cache.get(key, False)
    if hit is not False:
        return hit
    b, m, s, msc = (a.astype(np.int64).reshape(-1) for a in arrs)
    ok = (b.size == m.size == s.size == msc.size and m.size
          and s.min() >= 1 and s.max() <= 62 and m.min() >= 0 and m.max() < 2 ** 31
          and msc.min() >= 0 and msc.max() < 2 ** 31
          and b.min() >= -2 ** 31 and b.max() < 2 ** 31)
    if len(_params_cache) >= _PARAMS_MAX:
        _params_cache.clear()
    i32 = np.int32
    res = _params_cache[key] = (b.astype(i32), m.astype(i32), s, np.left_shift(np.int64(1),
                                s - 1), msc.astype(i32)) if ok else None
    return res


def depthwise(x: np.ndarray, zp: int, taps: np.ndarray, strides, pads, dilations,
              oh: int, ow: int) -> np.ndarray | None:
    """Depthwise accumulator int32 [OH, OW, C] of the int8 input ``x`` [H, W, C] (NHWC) with
    int8 ``taps`` [KH, KW, C] (padding = the zero point ``zp``), or None when the kernels are
    unavailable or the window is beyond :data:`MAX_DW_TAPS`."""
    if not _enabled or _load() is None or x.dtype != np.int8 or x.shape[2] != taps.shape[2]:
        return None
    run = depthwise_routine(zp, taps, strides, pads, dilations, oh, ow)
    return None if run is None else run(x)


def depthwise_routine(zp: int, taps: np.ndarray, strides, pads, dilations, oh: int,
                      ow: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """:func:`depthwise` with its kernel choice (:func:`dw_kernel`: the per-window kernel
    with sums in registers, ``jit_dw``; contiguous row runs, ``depthwise_rows``; or pixel by
    pixel, ``depthwise_px``; all with int16 products; int32 products for a zero point
    outside int8, which no int8 input has)
    and its taps made once: a routine ``f(x) -> int32 [OH, OW, C]`` for int8 ``x`` [H, W, C]
    with C = the taps' channels, or None when the kernels are unavailable, the window is
    beyond :data:`MAX_DW_TAPS` or the output is empty (numerics/accumulator.py keeps one per
    tile shape)."""
    if not _enabled or _load() is None:
        return None
    kh, kw, c = taps.shape
    if kh * kw > MAX_DW_TAPS or oh < 1 or ow < 1:
        return None
    k, z = _load(), np.int32(zp)
    sh, sw, dh, dw = int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1])
    top, left = int(pads[0]), int(pads[1])
    kind = dw_kernel(c, (kh, kw), strides, pads, dilations, oh, ow) if -128 <= zp <= 127 \
        else "channels"
    if kind == "unrolled":
        plain = k.dw_kernels(kh, kw)[0]
        t16 = _c(np.asarray(taps).astype(np.int16))

        def unrolled(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every element written
            plain(_c(x), z, t16, sh, sw, dh, dw, top, left, out)
            return out
        return unrolled
    if kind == "rows":   # runs per row and tap
        tt = _tiled(taps, ow)

        def rows(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every row zeroed by the kernel
            k.depthwise_rows(_c(x), z, tt, sh, dh, dw, top, left, out)
            return out
        return rows
    if kind == "pixels":   # |x - zp| <= 255: each product exact in int16
        t16 = _c(np.asarray(taps).astype(np.int16))

        def pixels(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every element written
            k.depthwise_px(_c(x), z, t16, sh, sw, dh, dw, top, left, out)
            return out
        return pixels
    t32 = _c(np.asarray(taps).astype(np.int32))

    def channels(x: np.ndarray) -> np.ndarray:
        out = np.zeros((oh, ow, c), np.int32)
        k.depthwise(_c(x), z, t32, sh, sw, dh, dw, top, left, out)
        return out
    return channels


def _tiled(taps: np.ndarray, ow: int) -> np.ndarray:
    """The taps int8 [KH, KW, C] as int16 [KH, KW, OW*C], repeated for each output pixel (the
    row kernels' operand, made once per routine)."""
    return np.ascontiguousarray(np.tile(np.asarray(taps).astype(np.int16), (1, 1, ow)))


def depthwise_epilogue_routine(zp: int, taps: np.ndarray, strides, pads, dilations,
                               oh: int, ow: int, params: tuple, zp_y: int, lo: int,
                               hi: int) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """A depthwise conv's accumulator and its epilogue (no shortcut) in one compiled pass
    (``depthwise_epilogue``): a routine ``f(x, out)`` writing ``epilogue(depthwise(x, ...))``
    (:func:`depthwise_routine`'s sums, :func:`epilogue_into`'s formula: the same bytes) into
    ``out`` for int8 ``x`` [H, W, C] (NHWC, any strides), without the int32 accumulator ever
    leaving the cache.

    Args:
        zp, taps, strides, pads, dilations, oh, ow: as :func:`depthwise_routine` (taps int8
            [KH, KW, C]; pads (top, left, ...)).
        params: the layer's :func:`epilogue_params` (not None), each [C].
        zp_y, lo, hi: the output zero point and clamp.

    ``out``: int8/int16 [OH, OW, C] (any strides, writeable, e.g. an SRAM box; the caller
    checks, :func:`out_fits`); it may share memory with ``x``, which the kernel reads whole
    into an int16 copy before writing. Returns None (use the two
    routines) when the kernels are unavailable, the window is beyond :data:`MAX_DW_TAPS`,
    the output empty, ``zp`` outside int8 or ``params`` not of C channels. The kernel is
    :func:`depthwise_routine`'s choice (:func:`dw_kernel`) with the epilogue per channel
    vector, row or pixel.
    """
    if not _enabled or _load() is None or params is None:
        return None
    kh, kw, c = taps.shape
    if (kh * kw > MAX_DW_TAPS or oh < 1 or ow < 1 or not -128 <= zp <= 127
            or params[0].size != c):
        return None
    k, z = _load(), np.int32(zp)
    sh, sw, dh, dw = int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1])
    top, left = int(pads[0]), int(pads[1])
    b, m, s, rnd, _ = params
    zy, lo, hi = int(zp_y), int(lo), int(hi)
    kind = dw_kernel(c, (kh, kw), strides, pads, dilations, oh, ow)
    if kind == "unrolled":   # as depthwise_routine
        fused_k = k.dw_kernels(kh, kw)[1]
        t16 = _c(np.asarray(taps).astype(np.int16))

        def fused_unrolled(x: np.ndarray, out: np.ndarray) -> None:
            fused_k(_c(x), z, t16, sh, sw, dh, dw, top, left, b, m, s, rnd, zy, lo, hi, out)
        return fused_unrolled
    if kind == "rows":   # the row kernel, as depthwise_routine
        tt = _tiled(taps, ow)

        def fused_rows(x: np.ndarray, out: np.ndarray) -> None:
            k.depthwise_rows_epilogue(_c(x), z, tt, sh, dh, dw, top, left, b, m, s, rnd, zy,
                                      lo, hi, out)
        return fused_rows
    t16 = _c(np.asarray(taps).astype(np.int16))

    def fused(x: np.ndarray, out: np.ndarray) -> None:
        k.depthwise_epilogue(_c(x), z, t16, sh, sw, dh, dw, top, left, b, m, s, rnd, zy, lo,
                             hi, out)
    return fused


def im2col_u8(x: np.ndarray, zpu: int, kernel, strides, dilations, pads, oh: int,
              ow: int) -> np.ndarray | None:
    """The integer GEMM's patch matrix uint8 [OH*OW, KH*KW*C] (K order KH, KW, C = OHWI) of
    the int8 input ``x`` [H, W, C] (NHWC, any strides) in one pass: ``x + 128`` inside the
    input, ``zpu`` (the zero point + 128) in the padding, as
    :func:`~tcc_compiler.numerics.gemm._accumulate_i8` builds it with numpy (a padded copy,
    then one strided copy per tap; a strided ``x`` is first copied packed); None when the
    kernels are unavailable."""
    if not _enabled or _load() is None or x.dtype != np.int8 or not 0 <= zpu <= 255:
        return None
    kh, kw = kernel
    out = np.empty((oh * ow, kh * kw * x.shape[2]), np.uint8)
    xu = np.ascontiguousarray(x.view(np.uint8))   # a strided box: one copy, then runs
    _load().im2col_u8(xu, np.uint8(zpu), int(strides[0]), int(strides[1]), int(dilations[0]),
                      int(dilations[1]), int(pads[0]), int(pads[1]), int(kh), int(kw),
                      int(ow), out)
    return out


def hist_count(chunk: np.ndarray, lo: float, width: float, bins: int,
               magnitude: bool) -> np.ndarray | None:
    """Histogram counts int64 [bins] of the float values ``chunk`` [N] (C-contiguous): bin
    ``clip(floor((float64(v) - lo) / width), 0, bins - 1)`` (``magnitude``: of the non-zero
    ``|v|``), the same float64 operations in the same order as
    :meth:`tcc_compiler.quant.calibrate.Histogram._count`'s numpy passes, so the same bins;
    None when the kernels are unavailable or a value gives no bin (NaN)."""
    if not _enabled or _load() is None or chunk.dtype.kind != "f" or chunk.ndim != 1:
        return None
    counts = np.zeros(bins, np.int64)
    if not _load().hist_count(_c(chunk), float(lo), float(width), bool(magnitude), counts):
        return None
    return counts


def count_zeros(x: np.ndarray) -> int | None:
    """How many values of the float array ``x`` (any shape) are 0 (-0.0 included, NaN not:
    ``x.size - np.count_nonzero(x)``), in one compiled pass (numpy's float count_nonzero is
    about 4x slower); None when the kernels are unavailable or ``x`` is not float."""
    if not _enabled or _load() is None or x.dtype.kind != "f":
        return None
    return int(_load().count_zeros(_c(x).reshape(-1)))


def quantize_nhwc(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray | None:
    """:func:`~tcc_compiler.numerics.requant.quantize_tensor` of the float NCHW ``x``
    [1, C, H, W] (float32 or float64) transposed to NHWC [H, W, C] (``dtype``: int8, int16 or
    int32), in one pass with the same float64 operations (``rint(x / scale) + zero_point``,
    then the type's bounds), so the same integers; None when the kernels are unavailable, ``x``
    is not of that form, or a value is NaN."""
    if not _enabled or _load() is None or x.ndim != 4 or x.shape[0] != 1 \
            or x.dtype not in (np.float32, np.float64):
        return None
    info = np.iinfo(np.dtype(dtype))
    _, c, h, w = x.shape
    out = np.empty((h, w, c), dtype)
    if not _load().quantize_nhwc(_c(x), float(scale), float(int(zero_point)),
                                 float(info.min), float(info.max), out):
        return None
    return out


#: numpy computes ``a - b`` in place in ``a`` when ``a`` is a temporary of at least 256 KiB
#: (temporary elision, ``NPY_MIN_ELIDE_BYTES`` in numpy's ``temp_elide.c``): float64 arrays
#: of at least this many elements. :func:`mean_error` reproduces numpy's order of additions
#: only for those (measured on numpy 2.4: 32,768 elements and more sum each channel in pixel
#: order, 32,767 and fewer pairwise).
ELIDE_ELEMS = (256 * 1024) // 8


def mean_error(q: np.ndarray, zero_point, scale, f: np.ndarray) -> np.ndarray | None:
    """Per-channel mean float64 [C] of ``dequantize(q) - f`` over the pixels, bit for bit as
    numpy computes ``(dequantize_output(q, v).astype(float64) - f).mean(axis=(0, 2, 3))``
    (:func:`tcc_compiler.quant.params.mean_output_error`): the same float64 operations
    (:func:`~tcc_compiler.numerics.requant.dequantize_tensor`'s ``(q - zp) s`` rounded to
    float32, the difference in float64) in the same order. That order is numpy's only when
    the float64 copy of the dequantized array (NHWC in memory) holds at least
    :data:`ELIDE_ELEMS` elements and C > 1: numpy then subtracts in place in that copy, so its
    reduction adds each channel's terms one after another, pixels in row-major order, then
    divides by H W (a smaller difference is a new NCHW array, whose channels numpy sums
    pairwise; with one channel the pixels are contiguous either way and summed pairwise).
    None in those other cases, or when the kernels are unavailable.

    Args:
        q: integer NHWC [H, W, C] (an NPU output). zero_point, scale: scalars or [C] (along
            the last axis, as ``dequantize_tensor`` broadcasts them). f: float [1, C, H, W].
    """
    if not _enabled or _load() is None or q.ndim != 3 or q.dtype.kind != "i" \
            or f.ndim != 4 or f.dtype not in (np.float32, np.float64):
        return None
    h, w, c = q.shape
    zp, s = np.asarray(zero_point, np.float64), np.asarray(scale, np.float64)
    if f.shape != (1, c, h, w) or c < 2 or q.size < ELIDE_ELEMS or zp.ndim > 1 \
            or s.ndim > 1 or zp.size not in (1, c) or s.size not in (1, c):
        return None
    zp, s = _c(np.broadcast_to(zp, (c,))), _c(np.broadcast_to(s, (c,)))
    out = np.empty(c, np.float64)
    _load().mean_error(_c(q), zp, s, _c(f), out)
    return out


def lut_int8(x: np.ndarray, rot: np.ndarray) -> np.ndarray | None:
    """``rot[x.view(uint8)]`` as a new int8 array shaped like ``x`` (int8, any strides): the
    single-table kernel of numerics/lut.py ``apply_lut`` (``rot`` int8 [256], the table
    rotated by half), one compiled gather without numpy's intp copy of the indices (8 bytes
    an element). None when the kernels are not loaded (their import costs more than one
    table saves) or ``x`` is not int8."""
    if not loaded() or x.dtype != np.int8 or rot.shape != (256,):
        return None
    xc = _c(x)
    out = np.empty(x.shape, np.int8)
    _load().lut_gather(xc.reshape(-1).view(np.uint8), _c(rot.astype(np.int8, copy=False)),
                       out.reshape(-1))
    return out
