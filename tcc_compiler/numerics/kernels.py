"""Integer kernels of the NPU, on single-image NHWC tensors ([H, W, C], no batch axis).

These are the arithmetic of the machine, shared by the golden integer model (whole tensors)
and the reference executor (tiles). Weights are OHWI int8 ([O, KH, KW, C/group]).

Exactness: conv accumulations run in float32 BLAS over K-chunks sized so that no partial sum
can leave float32's exact integer range (proof in :func:`exact_chunk_terms`); chunk results are
summed in float64, exact below 2**53 (K <= 65,535 terms of |.| <= 255 * 128 stay below 2**31).
The result is therefore the exact integer sum whatever order BLAS adds in. The accumulator is
32-bit two's complement (specs/quantization.md).
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


#: float32 represents every integer of magnitude <= 2**24 exactly (24-bit significand).
F32_EXACT = 1 << 24


def exact_chunk_terms(max_abs_x: int, max_abs_w: int) -> int:
    """How many products ``x * w`` a float32 dot product may sum and stay exact.

    Proof: every product of integers with ``|x| <= X``, ``|w| <= Wm`` is an integer with
    ``|x w| <= X Wm``. Summing ``n`` of them in *any* order and association (what BLAS does,
    with or without FMA), every partial sum is an integer of magnitude ``<= n X Wm``. If
    ``n X Wm <= 2**24`` every such partial sum, and every product, is exactly representable in
    float32 (binary32 has a 24-bit significand, so all integers in ``[-2**24, 2**24]`` are
    representable); each IEEE-754 operation returns the correctly rounded exact result, which is
    then the exact result itself. By induction over the additions, the float32 result equals
    the exact integer sum. Worst case int8: ``X = 255`` (``x - zp`` with x, zp in int8),
    ``Wm = 128`` gives 514 terms; the bound uses the actual tile maxima, so a typical tile
    (ReLU activations, per-channel weights) gets about 520 terms per chunk.

    Args:
        max_abs_x, max_abs_w: bounds on ``|x - zp|`` and ``|w|`` (integers >= 0).

    Returns:
        The largest safe number of terms per float32 chunk (>= 1; 2**24 if a bound is 0).
    """
    per_term = max(1, int(max_abs_x) * int(max_abs_w))
    return max(1, F32_EXACT // per_term)


def _im2col(xs: np.ndarray, kernel, strides, dilations) -> np.ndarray:
    """Padded float32 [H, W, C] -> [OH*OW, KH*KW*C] patch matrix (K order KH, KW, C = OHWI)."""
    kh, kw = kernel
    if kh == kw == 1:
        v = xs[::strides[0], ::strides[1]]
        return v.reshape(-1, xs.shape[2])
    win = _windows(xs, kernel, strides, dilations)          # [OH, OW, C, KH, KW]
    oh, ow = win.shape[:2]
    return np.ascontiguousarray(win.transpose(0, 1, 3, 4, 2)).reshape(oh * ow, -1)


def _exact_matmul(a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
    """Exact integer ``a @ b`` of float32 integer matrices a [M, K], b [K, N].

    Float32 BLAS over K-chunks of at most ``chunk`` terms (each exact, see
    :func:`exact_chunk_terms`); the chunk results are summed in float64, exact while the total
    stays below 2**53 (at most K * 255 * 128 < 2**31 for K <= 65,535). Returns float64 [M, N]
    (or float32 when one chunk covers K; then every value is an exact integer below 2**24).
    """
    k = a.shape[1]
    if k <= chunk:
        return a @ b
    acc = None
    for k0 in range(0, k, chunk):
        part = a[:, k0:k0 + chunk] @ b[k0:k0 + chunk]
        if acc is None:
            acc = part.astype(np.float64)
        else:
            acc += part
    return acc


def conv_accumulate(x: np.ndarray, zp_x: int, w: np.ndarray, strides=(1, 1),
                    pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1) -> np.ndarray:
    """Conv accumulator ``sum((x - zp_x) * w)`` with padding by the zero point.

    Exact: float32 BLAS on K-chunks small enough that no partial sum can leave float32's exact
    integer range (proof in :func:`exact_chunk_terms`), chunks summed in float64.

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
    xf = x.astype(np.float32)
    xf -= np.float32(zp_x)
    xs = _pad(xf, pads, 0.0)
    max_x = int(np.abs(xf).max(initial=0.0))
    max_w = int(np.abs(w.astype(np.int16)).max(initial=0))
    chunk = exact_chunk_terms(max_x, max_w)
    og = o // group
    wf = w.astype(np.float32)
    if cg == 1 and og == 1 and kh * kw <= chunk:  # depthwise: one tap loop, no im2col
        win = _windows(xs, (kh, kw), strides, dilations)          # [OH, OW, C, KH, KW]
        acc = np.einsum("hwckl,ckl->hwc", win, wf[:, :, :, 0], optimize=True)
        return acc.astype(np.int32)
    if group == 1:
        cols = _im2col(xs, (kh, kw), strides, dilations)
        oh = (xs.shape[0] - ((kh - 1) * dilations[0] + 1)) // strides[0] + 1
        ow = (xs.shape[1] - ((kw - 1) * dilations[1] + 1)) // strides[1] + 1
        acc = _exact_matmul(cols, wf.reshape(o, -1).T, chunk)
        return acc.reshape(oh, ow, o).astype(np.int64).astype(np.int32)
    win = _windows(xs, (kh, kw), strides, dilations)              # [OH, OW, C, KH, KW]
    oh, ow = win.shape[:2]
    out = np.empty((oh, ow, o), dtype=np.int32)
    for g in range(group):
        cols = win[:, :, g * cg:(g + 1) * cg].transpose(0, 1, 3, 4, 2).reshape(oh * ow, -1)
        wg = wf[g * og:(g + 1) * og].reshape(og, -1)
        acc = _exact_matmul(np.ascontiguousarray(cols), wg.T, chunk)
        out[:, :, g * og:(g + 1) * og] = acc.reshape(oh, ow, og).astype(np.int64)
    return out


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
    t = acc.astype(np.int64)
    t += bias.astype(np.int64)
    if t.size and (t.min() < -(2 ** 31) or t.max() >= 2 ** 31):
        t = ((t + 2 ** 31) % 2 ** 32) - 2 ** 31      # the accumulator is 32-bit (wraps)
    shift = np.asarray(shift, dtype=np.int64)
    t *= np.asarray(mult, dtype=np.int64)          # in place: this runs on every output
    if shortcut is not None:
        sc = shortcut.astype(np.int64)
        sc -= zp_sc
        sc *= np.asarray(sc_mult, dtype=np.int64)
        t += sc
    t += np.int64(1) << (shift - 1)
    t >>= shift
    t += zp_y
    np.clip(t, lo, hi, out=t)
    return t.astype(np.int8)


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
