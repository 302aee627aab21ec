"""The golden model's own average pooling (used by :mod:`tcc_compiler.quant.golden`): window
sums from a summed-area table, one requantization per output pixel, written from
specs/quantization.md ("Pooling", "Requantization and rounding") and specs/isa.md (POOL_TILE).

Why not the executor's ``numerics.kernels.avgpool_int8``: ``tccc run --check`` compares the
executor against the golden model, so a fault in a kernel both call would be invisible to it.
Here a window's sum is four lookups in the running 2-D sum of the zero-padded ``x - zp_x``
(not a strided window view), the divisor of a ``count_include_pad = 0`` pool comes from the
same table built over a map of ones (not ``numerics.window_counts``), and the rounding is a
floor division (not ``numerics.requant.requantize``'s shift); no code is shared with them.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Node
from tcc_compiler.quant.params import pool_divisors, pool_quant


def rescale(t: np.ndarray, mult, shift) -> np.ndarray:
    """``floor((t M + 2**(S-1)) / 2**S)`` in int64 (the NPU's requantization, round half up;
    specs/quantization.md "Requantization and rounding").

    Args:
        t: int64 array (any shape), ``|t| M < 2**63``. mult: M, 0 <= M < 2**31, scalar or
            int64 array broadcasting over ``t``. shift: S in 1..62, scalar or likewise.

    Returns:
        int64 array of the broadcast shape.
    """
    s = np.asarray(shift, dtype=np.int64)
    half = np.left_shift(np.int64(1), s - 1)
    return np.floor_divide(t * np.asarray(mult, dtype=np.int64) + half, half * 2)


def window_sums(v: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Sum of every ``kh x kw`` window of ``v`` padded with zeros.

    Args:
        v: int64 [H, W, C] (NHWC) or [H, W, 1]. kernel: (kh, kw). strides: (sh, sw).
        pads: (top, left, bottom, right) zero rows/columns around ``v`` (the bottom/right ones
            include a ceil-mode window's overhang). out_hw: (OH, OW), the output size; every
            window must lie in the padded map.

    Returns:
        int64 [OH, OW, C]: window (i, j) covers padded rows ``i sh .. i sh + kh - 1`` and
        columns ``j sw .. j sw + kw - 1``.

    Raises:
        InternalError: a window past the padded map.
    """
    (kh, kw), (sh, sw), (t, left, b, r), (oh, ow) = kernel, strides, pads, out_hw
    h, w, c = v.shape
    ph, pw = h + t + b, w + left + r
    if (oh - 1) * sh + kh > ph or (ow - 1) * sw + kw > pw:
        raise InternalError(f"golden average pool: {oh}x{ow} windows of {kh}x{kw} stride "
                            f"{sh}x{sw} do not fit the padded {ph}x{pw} map")
    # sat[i, j] = sum of padded rows < i and columns < j (a zero first row and column)
    sat = np.zeros((ph + 1, pw + 1, c), np.int64)
    sat[t + 1:t + h + 1, left + 1:left + w + 1] = v
    np.cumsum(sat, axis=0, out=sat)
    np.cumsum(sat, axis=1, out=sat)
    r0 = np.arange(oh) * sh
    c0 = np.arange(ow) * sw
    r1, c1 = r0 + kh, c0 + kw
    return (sat[r1][:, c1] - sat[r0][:, c1] - sat[r1][:, c0] + sat[r0][:, c0])


def pixel_counts(hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                 pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """How many input (not padding) pixels each window covers: int64 [OH, OW], the divisor of
    an ONNX AveragePool with ``count_include_pad = 0`` (specs/quantization.md "Pooling").
    Arguments as :func:`window_sums` for an [H, W] map ``hw``."""
    return window_sums(np.ones((*hw, 1), np.int64), kernel, strides, pads, out_hw)[..., 0]


def avgpool_int(x: np.ndarray, zp_x: int, kernel: tuple[int, int], strides: tuple[int, int],
                pads: tuple[int, int, int, int], out_hw: tuple[int, int], mult, shift,
                zp_y: int) -> np.ndarray:
    """Average pooling of the NHWC int8/int16 map ``x`` [H, W, C]:
    ``y = clamp(zp_y + floor((sum_window(x - zp_x) M + 2**(S-1)) / 2**S))`` in ``x``'s type's
    range, padded positions contributing 0 (they hold ``zp_x``), the divisor folded into M, S.
    Sums of int16 windows (< 2**16 * 255**2) times M (< 2**31) stay below 2**63.

    Args:
        x: int8 or int16 [H, W, C]. zp_x, zp_y: zero points. kernel, strides, pads, out_hw:
            as :func:`window_sums`. mult, shift: M (< 2**31) and S (1..62), scalars (one
            divisor, the kernel area) or int64 [OH, OW, 1] (one per output pixel:
            ``count_include_pad = 0``).

    Returns:
        ``x``'s dtype [OH, OW, C] (the output value's type equals the input's: POOL_CFG
        ``wide`` sets both or neither).

    Raises:
        InternalError: ``x`` not int8/int16, or a window past the padded map.
    """
    if x.dtype not in (np.int8, np.int16):
        raise InternalError(f"golden average pool: int8/int16 input expected, got {x.dtype}")
    v = x.astype(np.int64)
    v -= int(zp_x)
    y = rescale(window_sums(v, kernel, strides, pads, out_hw), mult, shift)
    y += int(zp_y)
    info = np.iinfo(x.dtype)
    np.clip(y, info.min, info.max, out=y)
    return y.astype(x.dtype)


def avgpool_node(node: Node, x: np.ndarray) -> np.ndarray:
    """An AveragePool IR ``node`` on its NHWC int8/int16 input ``x`` [H, W, C]: its
    :func:`~tcc_compiler.quant.params.pool_quant` (the kernel area folded in), or, when its
    divisor varies per pixel (:func:`~tcc_compiler.quant.params.pool_divisors` is not None:
    ``count_include_pad = 0`` with padding reached), one ``pool_quant(node, n)`` per output
    pixel of :func:`pixel_counts` ``n``.

    Returns:
        ``x``'s dtype [OH, OW, C], OH x OW the node's output size.
    """
    a = node.attrs
    out_hw = tuple(node.output.shape[2:])
    p = pool_quant(node)
    mult, shift = p.mult, p.shift
    if pool_divisors(node) is not None:
        n = pixel_counts(x.shape[:2], a.kernel, a.strides, a.pads, out_hw)
        mult, shift = np.empty(n.shape + (1,), np.int64), np.empty(n.shape + (1,), np.int64)
        for d in np.unique(n):
            q = pool_quant(node, int(d))
            mult[n == d], shift[n == d] = q.mult, q.shift
    return avgpool_int(x, p.zp_in, a.kernel, a.strides, a.pads, out_hw, mult, shift, p.zp_out)
