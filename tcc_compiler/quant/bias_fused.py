"""Bias correction's error pass reads most float values twice: as the output of the conv whose
mean error it measures (:func:`~tcc_compiler.quant.params.mean_output_error`) and as the input
of the next conv, quantized (:func:`~tcc_compiler.quant.analyze.quantize_value`). Both are
memory-bound passes over one float array; :func:`error_and_quantized` makes them one pass (the
compiled kernel :mod:`tcc_compiler.quant.bias_jit`), giving the same float64 error and the same
integers, bit for bit, where its conditions hold, and None elsewhere (the caller then takes
the two functions)."""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.graph import Value
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.jit import ELIDE_ELEMS, contiguous
from tcc_compiler.quant.params import int_dtype


def error_and_quantized(q: np.ndarray, out: Value, f: np.ndarray,
                        reader: Value) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(mean_output_error(q, out, f), quantize_value(f, reader))`` in one pass over ``f``.

    Args:
        q: the conv's integer output, NHWC [H, W, C] (int8/int16). out: its quantized value.
        f: the float value, NCHW [1, C, H, W] (float32 or float64). reader: the same value as
            the next conv's input (its per-tensor scale and zero point, int8 or int16).

    Returns:
        (float64 [C] mean error, integer NHWC [H, W, C] quantized value, or None at a NaN of
        ``f``: quantize it on the usual path), or None -- nothing computed -- unless the
        kernels are in use and the error is one the compiled mean takes
        (:func:`~tcc_compiler.numerics.jit_tensor.mean_error`: C > 1, at least
        :data:`~tcc_compiler.numerics.jit_tensor.ELIDE_ELEMS` values, numpy's order of
        additions), ``reader`` is a rank-4 per-tensor int8/int16 value and ``f`` has the shape
        ``q`` gives.
    """
    kern = jit.kernel_module("tcc_compiler.quant.bias_jit")
    if kern is None or q.ndim != 3 or q.dtype.kind != "i" or f.ndim != 4 \
            or f.dtype not in (np.float32, np.float64) or len(reader.shape) != 4 \
            or np.size(reader.quant.scale) != 1 or np.size(reader.quant.zero_point) != 1:
        return None
    dtype = int_dtype(reader)
    h, w, c = q.shape
    zp = np.asarray(out.quant.zero_point, np.float64)
    s = np.asarray(out.quant.scale, np.float64)
    if dtype not in (np.int8, np.int16) or f.shape != (1, c, h, w) or c < 2 \
            or q.size < ELIDE_ELEMS or zp.ndim > 1 or s.ndim > 1 or zp.size not in (1, c) \
            or s.size not in (1, c):
        return None
    info = np.iinfo(dtype)
    err = np.empty(c, np.float64)
    fq = np.empty((h, w, c), dtype)
    ok = kern.mean_error_quantize(
        contiguous(q), contiguous(np.broadcast_to(zp, (c,))),
        contiguous(np.broadcast_to(s, (c,))), contiguous(f),
        float(reader.quant.scale), float(int(reader.quant.zero_point)), float(info.min),
        float(info.max), err, fq)
    return err, (fq if ok else None)
