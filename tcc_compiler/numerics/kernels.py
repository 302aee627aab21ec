"""Integer kernels of the NPU, on single-image NHWC tensors ([H, W, C], no batch axis).

These are the arithmetic of the machine, shared by the golden integer model (whole tensors)
and the reference executor (tiles). Weights are OHWI int8 ([O, KH, KW, C/group]).

Exactness: accumulations run in float64 BLAS. Every product (x - zp) * w has |.| <= 255 * 128
and K <= 65,535 terms are summed, so every partial sum is an integer below 2**31 < 2**53, which
float64 represents exactly; the result is therefore the exact integer sum whatever order BLAS
adds in. The accumulator is 32-bit two's complement (specs/quantization.md).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tcc_compiler.numerics.requant import requantize

INT8_MIN, INT8_MAX = -128, 127


def _windows(xp: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
             dilations: tuple[int, int]) -> np.ndarray:
    """Sliding windows of a padded [H, W, C] array -> view [OH, OW, C, KH, KW]."""
    kh, kw = kernel
    dh, dw = dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = sliding_window_view(xp, (eh, ew), axis=(0, 1))
    return win[::strides[0], ::strides[1], :, ::dh, ::dw]


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value) -> np.ndarray:
    t, l, b, r = pads
    if t == l == b == r == 0:
        return x
    return np.pad(x, ((t, b), (l, r), (0, 0)), mode="constant", constant_values=value)


def conv_accumulate(x: np.ndarray, zp_x: int, w: np.ndarray, strides=(1, 1),
                    pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1) -> np.ndarray:
    """Conv accumulator ``sum((x - zp_x) * w)`` with padding by the zero point.

    Args:
        x: int8 [H, W, C] input (NHWC, one image).
        zp_x: input zero point; padded positions hold zp_x, i.e. contribute 0.
        w: int8 [O, KH, KW, C // group] weights (OHWI).
        strides, dilations: (h, w). pads: (top, left, bottom, right).
        group: number of groups; C and O divisible by it.

    Returns:
        int32 [OH, OW, O] accumulators (32-bit two's complement; no bias).
    """
    o, kh, kw, cg = w.shape
    xs = _pad(x.astype(np.float64) - float(zp_x), pads, 0.0)
    win = _windows(xs, (kh, kw), strides, dilations)          # [OH, OW, C, KH, KW]
    oh, ow = win.shape[:2]
    og = o // group
    wf = w.astype(np.float64)
    if cg == 1 and og == 1:  # depthwise: one tap loop, no im2col
        acc = np.einsum("hwckl,ckl->hwc", win, wf[:, :, :, 0], optimize=True)
    else:
        acc = np.empty((oh, ow, o), dtype=np.float64)
        for g in range(group):
            cols = win[:, :, g * cg:(g + 1) * cg].transpose(0, 1, 3, 4, 2).reshape(oh * ow, -1)
            wg = wf[g * og:(g + 1) * og].reshape(og, -1)
            acc[:, :, g * og:(g + 1) * og] = (cols @ wg.T).reshape(oh, ow, og)
    return acc.astype(np.int64).astype(np.int32)


def conv_epilogue(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                  zp_y: int, lo: int = INT8_MIN, hi: int = INT8_MAX,
                  shortcut: np.ndarray | None = None, zp_sc: int = 0,
                  sc_mult: np.ndarray | None = None) -> np.ndarray:
    """Requantize conv accumulators to int8, with an optional fused residual add.

    ``y = clamp(zp_y + ((acc + bias) * M[c] + (sc - zp_sc) * Msc[c] + 2**(S[c]-1)) >> S[c],
    lo, hi)``: one rounding for both terms (specs/quantization.md, "Conv epilogue").

    Args:
        acc: int32 [..., O] accumulators. bias: int32 [O].
        mult, shift: int [O] multiplier (< 2**31) and shift (1..62) per output channel.
        zp_y: output zero point. lo, hi: int8 clamp bounds (activation folded in).
        shortcut: int8 [..., O] residual input or None; zp_sc its zero point;
        sc_mult: int [O] its multiplier (same shift).

    Returns:
        int8 array shaped like ``acc``.
    """
    a = acc.astype(np.int64) + bias.astype(np.int64)
    a = ((a + 2 ** 31) % 2 ** 32) - 2 ** 31          # the accumulator is 32-bit
    shift = np.asarray(shift, dtype=np.int64)
    t = a * np.asarray(mult, dtype=np.int64)
    if shortcut is not None:
        t = t + (shortcut.astype(np.int64) - zp_sc) * np.asarray(sc_mult, dtype=np.int64)
    y = ((t + (np.int64(1) << (shift - 1))) >> shift) + zp_y
    return np.clip(y, lo, hi).astype(np.int8)


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
    """Max pooling on int8 [H, W, C]; padded positions hold -128 (ONNX pads with -inf).

    Returns: int8 [OH, OW, C].
    """
    xp = _pad(x, pads, INT8_MIN)
    return _windows(xp, kernel, strides, (1, 1)).max(axis=(3, 4)).astype(np.int8)


def avgpool_int8(x: np.ndarray, zp_x: int, kernel: tuple[int, int], strides, pads,
                 mult: int, shift: int, zp_y: int) -> np.ndarray:
    """Average pooling with a constant divisor folded into (mult, shift).

    ``y = clamp(zp_y + (sum_window(x - zp_x) * M + r) >> S)``; padded positions contribute 0
    (count_include_pad semantics; the divisor is kernel area, folded into M by the compiler).
    Global average pooling is the case kernel = (H, W).

    Returns: int8 [OH, OW, C].
    """
    xs = _pad(x.astype(np.int64) - zp_x, pads, 0)
    sums = _windows(xs, kernel, strides, (1, 1)).sum(axis=(3, 4))
    y = requantize(sums, mult, shift) + zp_y
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)
