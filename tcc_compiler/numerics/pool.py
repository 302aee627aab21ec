"""Global average pooling in one compiled pass (:func:`global_avgpool`), the executor's route
for a POOL_TILE whose window is its whole unpadded input (EfficientNet-Lite0's head: 7x7x1280).

Why: :func:`~tcc_compiler.numerics.kernels.avgpool_int8` runs about ten numpy passes (an int64
copy, a strided window sum, the requantization, the clip), 45 us on that tile alone and about
170 us inside a run, where those small numpy calls start cold after the conv kernels.

Exactness: the same int64 arithmetic as ``avgpool_int8`` for kernel = (H, W), no padding and
a scalar multiplier: ``sum(x - zp_x) = sum(x) - H W zp_x`` (integer sums, exact in any order
and wrapping identically), then ``requantize``'s ``(s M + 2**(S-1)) >> S``, ``+ zp_y`` and the
output type's clamp.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.kernels import int_range


def global_avgpool(x: np.ndarray, zp_x: int, mult: int, shift: int, zp_y: int,
                   out_dtype=np.int8) -> np.ndarray | None:
    """``avgpool_int8(x, zp_x, (H, W), (1, 1), (0, 0, 0, 0), mult, shift, zp_y, out_dtype)``,
    int8/int16 [1, 1, C], of the int8 or int16 ``x`` [H, W, C] (NHWC, any strides); None when
    the compiled kernels are unavailable or an operand is outside that form (a multiplier or
    shift that is not a scalar, a shift outside 1..62, another dtype): the caller's numpy
    path then."""
    if x.ndim != 3 or x.dtype not in (np.int8, np.int16) or np.ndim(mult) or np.ndim(shift) \
            or not 1 <= int(shift) <= 62:
        return None
    k = jit.kernel_module("tcc_compiler.numerics.jit_pool")
    if k is None:
        return None
    lo, hi = int_range(out_dtype)
    out = np.empty(x.shape[2], out_dtype)
    k.global_avgpool(x, np.int64(zp_x), np.int64(mult), np.int64(shift), np.int64(zp_y),
                     np.int64(lo), np.int64(hi), out)
    return out.reshape(1, 1, -1)
