"""Integer kernels of the NPU, on single-image NHWC tensors ([H, W, C], no batch axis).

These are the arithmetic of the machine, shared by the golden integer model (whole tensors)
and the reference executor (tiles). Weights are OHWI int8 ([O, KH, KW, C/group]).

Exactness: conv accumulations run in float32 BLAS only where no partial sum can leave float32's
exact integer range, else over K-chunks summed in float64 (proof in
:mod:`tcc_compiler.numerics.gemm`). The result is therefore the exact integer sum whatever order
BLAS adds in. The accumulator is 32-bit two's complement (specs/quantization.md).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tcc_compiler.numerics.gemm import ConvWeights, conv_accumulate_f, prepare_conv_weights
from tcc_compiler.numerics.epilogue import (  # noqa: F401  (kernels' public names)
    EpilogueConsts, conv_epilogue, conv_epilogue_int64, epilogue_consts)
from tcc_compiler.numerics.requant import requantize

INT8_MIN, INT8_MAX = -128, 127


def int_range(dtype) -> tuple[int, int]:
    """(min, max) of an integer activation dtype: int8 -128..127, int16 -32768..32767."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


def _windows(xp: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             dilations: tuple[int, int]) -> np.ndarray:
    """Sliding windows of a padded [H, W, C] array -> view [OH, OW, C, KH, KW]."""
    kh, kw = kernel
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(xp, (eh, ew), axis=(0, 1))
    return win[::strides[0], ::strides[1], :, ::dh, ::dw]


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value) -> np.ndarray:
    top, left, bottom, right = pads
    if top == left == bottom == right == 0:
        return x
    return np.pad(x, ((top, bottom), (left, right), (0, 0)), mode="constant",
                  constant_values=value)


def conv_accumulate(x: np.ndarray, zp_x: int, w: np.ndarray | ConvWeights, strides=(1, 1),
                    pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1) -> np.ndarray:
    """Conv accumulator ``sum((x - zp_x) * w)`` with padding by the zero point.

    Exact: float32 BLAS where every partial sum provably stays within float32's exact integer
    range, else K-chunks summed in float64 (proof in :mod:`tcc_compiler.numerics.gemm`).

    Args:
        x: int8 [H, W, C] input (NHWC, one image).
        zp_x: input zero point; padded positions hold zp_x, i.e. contribute 0.
        w: int8 [O, KH, KW, C // group] weights (OHWI), or the same prepared once with
            :func:`~tcc_compiler.numerics.gemm.prepare_conv_weights` (then ``group`` is its own).
        strides, dilations: (h, w). pads: (top, left, bottom, right).
        group: number of groups; C and O divisible by it.

    Returns:
        int32 [OH, OW, O] accumulators (32-bit two's complement; no bias).
    """
    cw = w if isinstance(w, ConvWeights) else prepare_conv_weights(w, group)
    return conv_accumulate_f(x, zp_x, cw, strides, pads, dilations).astype(np.int32)


def conv_epilogue_int32(acc: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Raw output mode: ``acc + bias`` as int32 (32-bit wrap), for host-side dequantization."""
    a = acc.astype(np.int64) + bias.astype(np.int64)
    return (((a + 2 ** 31) % 2 ** 32) - 2 ** 31).astype(np.int32)


def add_int8(a: np.ndarray, zp_a: int, mult_a: int, b: np.ndarray, zp_b: int, mult_b: int,
             shift: int, zp_y: int, lo: int = INT8_MIN, hi: int = INT8_MAX) -> np.ndarray:
    """Element-wise quantized add: ``clamp(zp_y + ((a-zp_a)Ma + (b-zp_b)Mb + r) >> S, lo, hi)``.

    Args: int8 arrays ``a``, ``b`` of one shape; integer parameters as in the spec.
    Returns: int8 array of that shape.
    """
    t = (a.astype(np.int64) - zp_a) * mult_a + (b.astype(np.int64) - zp_b) * mult_b
    y = ((t + (np.int64(1) << (shift - 1))) >> shift) + zp_y
    return np.clip(y, lo, hi).astype(np.int8)


def maxpool_int8(x: np.ndarray, kernel: tuple[int, int], strides=(1, 1),
                 pads=(0, 0, 0, 0)) -> np.ndarray:
    """Max pooling on int8 or int16 [H, W, C]; padded positions hold the type's minimum
    (-128 / -32768; ONNX pads with -inf).

    Returns: [OH, OW, C] of ``x``'s dtype.
    """
    xp = _pad(x, pads, int_range(x.dtype)[0])
    return _windows(xp, kernel, strides, (1, 1)).max(axis=(3, 4)).astype(x.dtype)


def channel_shuffle_order(c: int, groups: int) -> np.ndarray:
    """Input channel of each output channel of a channel shuffle (ShuffleNet): output
    ``j * groups + i`` reads input ``i * (c // groups) + j``. int64 [c]; ``c`` a multiple of
    ``groups``."""
    return np.arange(c, dtype=np.int64).reshape(groups, c // groups).T.reshape(-1)


def window_counts(size: int, kernel: int, stride: int, pad_before: int,
                  out: int) -> np.ndarray:
    """Along one axis: how many of each output position's ``kernel`` window positions lie inside
    the input ``[0, size)`` (ONNX AveragePool's divisor factor with count_include_pad=0; the
    divisor of output pixel (i, j) is ``rows[i] * cols[j]``).

    Args:
        size: input extent (pixels); kernel, stride: the window along this axis;
        pad_before: padding before the input; out: number of output positions.

    Returns:
        int64 [out], each in [1, kernel] for a window that overlaps the input.
    """
    start = np.arange(out, dtype=np.int64) * stride - pad_before
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def avgpool_int8(x: np.ndarray, zp_x: int, kernel: tuple[int, int], strides, pads,
                 mult, shift, zp_y: int, out_dtype=np.int8) -> np.ndarray:
    """Average pooling with the divisor folded into (mult, shift).

    ``y = clamp(zp_y + (sum_window(x - zp_x) * M + r) >> S)``; padded positions contribute 0.
    ``mult``/``shift`` are scalars (the divisor is the kernel area: count_include_pad
    semantics) or int arrays broadcasting over [OH, OW, 1] (one divisor per output pixel:
    count_include_pad=0, see :func:`window_counts`). Global average pooling is the case
    kernel = (H, W). ``x``: int8 or int16; sums of int16 windows (< 2**16 * 65025) times M
    (< 2**31) stay below 2**63.

    Returns: ``out_dtype`` (np.int8 or np.int16) [OH, OW, C].
    """
    xs = _pad(x.astype(np.int64) - zp_x, pads, 0)
    sums = _windows(xs, kernel, strides, (1, 1)).sum(axis=(3, 4))
    y = requantize(sums, mult, shift) + zp_y
    return np.clip(y, *int_range(out_dtype)).astype(out_dtype)
