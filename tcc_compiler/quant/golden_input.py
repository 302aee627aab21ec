"""The golden model's own host input quantization (used by :mod:`tcc_compiler.quant.golden`):
float NCHW -> int8/int16 NHWC, ``clamp(rint(x / s) + zp)`` (specs/quantization.md, "Input
quantization (host)").

Why not ``quant.params.quantize_input`` / ``numerics.jit.quantize_nhwc``: the executor's
input bytes come from that kernel (``runtime/loaded.py``), so while the golden model called
it too, a fault in it gave both sides the same wrong input and ``tccc run --check`` passed.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.graph import Value
from tcc_compiler.numerics import jit
from tcc_compiler.quant.params import int_dtype


def quantize_input(x: np.ndarray, v: Value) -> np.ndarray:
    """Quantize the graph input ``v``'s float array ``x`` with its scale and zero point.

    Args:
        x: float32 (or float64) NCHW [1, C, H, W]. v: the quantized graph input (int8 or
            int16, per-tensor ``quant``).

    Returns:
        int8 (int16) NHWC [H, W, C], a new C-contiguous array: the golden model's compiled
        kernel (:func:`~tcc_compiler.quant.golden_jit.quantize_input`) or, without it (or at
        a NaN, where no integer is defined), the definition in numpy: float64 ``x / s``
        rounded half to even, plus ``zp``, clipped to the type's range, then transposed.
    """
    dt = np.dtype(int_dtype(v))
    info = np.iinfo(dt)
    s, zp = float(v.quant.scale), int(v.quant.zero_point)
    x = np.asarray(x)
    k = jit.kernel_module("tcc_compiler.quant.golden_jit")
    if k is not None and x.ndim == 4 and x.shape[0] == 1 and x.dtype in (np.float32,
                                                                         np.float64):
        out = np.empty((x.shape[2], x.shape[3], x.shape[1]), dt)
        if k.quantize_input(np.ascontiguousarray(x), s, float(zp), float(info.min),
                            float(info.max), out):
            return out
    q = np.clip(np.rint(np.asarray(x, np.float64) / s) + zp, info.min, info.max).astype(dt)
    return np.ascontiguousarray(q[0].transpose(1, 2, 0))
