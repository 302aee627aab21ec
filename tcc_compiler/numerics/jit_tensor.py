"""One-pass compiled tensor routines (:mod:`tcc_compiler.numerics.jit`'s entry points,
re-exported there; kernels in :mod:`tcc_compiler.numerics.jit_kernels`): calibration's
histogram counts and zero count, the input quantization, the bias gate's mean output error
and the executor's int8 table gather, each the same operations in the same order as its
numpy form, so the same values.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.jit import contiguous as _c


def hist_count(chunk: np.ndarray, lo: float, width: float, bins: int,
               magnitude: bool) -> np.ndarray | None:
    """Histogram counts int64 [bins] of the float values ``chunk`` [N] (C-contiguous): bin
    ``clip(floor((float64(v) - lo) / width), 0, bins - 1)`` (``magnitude``: of the non-zero
    ``|v|``), the same float64 operations in the same order as
    :meth:`tcc_compiler.quant.calibrate.Histogram._count`'s numpy passes, so the same bins;
    None when the kernels are unavailable or a value gives no bin (NaN)."""
    k = jit.kernels()
    if k is None or chunk.dtype.kind != "f" or chunk.ndim != 1:
        return None
    counts = np.zeros(bins, np.int64)
    if not k.hist_count(_c(chunk), float(lo), float(width), bool(magnitude), counts):
        return None
    return counts


def count_zeros(x: np.ndarray) -> int | None:
    """How many values of the float array ``x`` (any shape) are 0 (-0.0 included, NaN not:
    ``x.size - np.count_nonzero(x)``), in one compiled pass (numpy's float count_nonzero is
    about 4x slower); None when the kernels are unavailable or ``x`` is not float."""
    k = jit.kernels()
    if k is None or x.dtype.kind != "f":
        return None
    return int(k.count_zeros(_c(x).reshape(-1)))


def quantize_nhwc(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray | None:
    """:func:`~tcc_compiler.numerics.requant.quantize_tensor` of the float NCHW ``x``
    [1, C, H, W] (float32 or float64) transposed to NHWC [H, W, C] (``dtype``: int8, int16 or
    int32), in one pass with the same float64 operations (``rint(x / scale) + zero_point``,
    then the type's bounds), so the same integers; None when the kernels are unavailable, ``x``
    is not of that form, or a value is NaN."""
    k = jit.kernels()
    if k is None or x.ndim != 4 or x.shape[0] != 1 or x.dtype not in (np.float32, np.float64):
        return None
    info = np.iinfo(np.dtype(dtype))
    _, c, h, w = x.shape
    out = np.empty((h, w, c), dtype)
    if not k.quantize_nhwc(_c(x), float(scale), float(int(zero_point)), float(info.min),
                           float(info.max), out):
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
    k = jit.kernels()
    if k is None or q.ndim != 3 or q.dtype.kind != "i" \
            or f.ndim != 4 or f.dtype not in (np.float32, np.float64):
        return None
    h, w, c = q.shape
    zp, s = np.asarray(zero_point, np.float64), np.asarray(scale, np.float64)
    if f.shape != (1, c, h, w) or c < 2 or q.size < ELIDE_ELEMS or zp.ndim > 1 \
            or s.ndim > 1 or zp.size not in (1, c) or s.size not in (1, c):
        return None
    zp, s = _c(np.broadcast_to(zp, (c,))), _c(np.broadcast_to(s, (c,)))
    out = np.empty(c, np.float64)
    k.mean_error(_c(q), zp, s, _c(f), out)
    return out


def lut_int8(x: np.ndarray, rot: np.ndarray) -> np.ndarray | None:
    """``rot[x.view(uint8)]`` as a new int8 array shaped like ``x`` (int8, any strides): the
    single-table kernel of numerics/lut.py ``apply_lut`` (``rot`` int8 [256], the table
    rotated by half), one compiled gather without numpy's intp copy of the indices (8 bytes
    an element). None when the kernels are not loaded (their import costs more than one
    table saves) or ``x`` is not int8."""
    if not jit.loaded() or x.dtype != np.int8 or rot.shape != (256,):
        return None
    xc = _c(x)
    out = np.empty(x.shape, np.int8)
    jit.kernels().lut_gather(xc.reshape(-1).view(np.uint8),
                             _c(rot.astype(np.int8, copy=False)), out.reshape(-1))
    return out
