"""The compiled conv epilogue (:mod:`tcc_compiler.numerics.jit`'s entry points, re-exported
there; kernels in :mod:`tcc_compiler.numerics.jit_kernels`).

:func:`epilogue` computes :func:`~tcc_compiler.numerics.epilogue.conv_epilogue_int64`'s
formula per element in int64: ``x = wrap32(acc + bias)`` (|x| <= 2**31), ``x M`` (< 2**62),
``(sc - zp_sc) Msc`` (|sc - zp_sc| < 2**16, Msc < 2**31: < 2**47), ``2**(S-1)`` (<= 2**61):
the sum stays below 2**63, so every int64 operation is exact; ``>>`` on int64 is an
arithmetic shift (floor), then the clamp and ``zp_y`` as in the definition. bias, M and
Msc travel as int32 (all fit), so each product is one 32x32->64-bit multiply, which the
compiler vectorises (measured about 20 % faster than int64 factors, loaded machine).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.jit import contiguous as _c


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
    k = jit.kernels()
    if k is None:
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
    kernels :func:`~tcc_compiler.numerics.jit.available`, ``params`` the (not None)
    :func:`epilogue_params` of the layer, ``acc`` int32 (or exact integers in
    float32/float64) [A, B, O] in memory of its own (not the SRAM's), ``shortcut`` [A, B, O]
    or None, and ``out`` passing :func:`out_fits` for ``acc.shape`` and the shortcut.
    Returns ``out``, written."""
    b, m, s, rnd, msc = params
    if acc.dtype != np.int32:   # exact integers: int64 holds them, int32 wraps as the NPU
        acc = acc.astype(np.int64).astype(np.int32)
    a3 = _c(acc)
    k = jit.kernels()   # in use: the caller checked (jit.available)
    if shortcut is None:
        k.epilogue(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi), out)
    else:
        k.epilogue_sc(a3, b, m, s, rnd, int(zp_y), int(lo), int(hi),
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
