"""Exact integer convolution accumulators through float32 BLAS (the speed path of the NPU's
CONV arithmetic in the reference executor; the golden integer model has its own,
``quant/golden_gemm.py``, so a fault here fails ``tccc run --check``).

The accumulator ``acc[m, n] = sum_k (x[m, k] - zp) * w[k, n]`` of int8 operands is an integer.
float32 GEMM computes it *exactly* whenever every partial sum BLAS can form is an integer of
magnitude <= 2**24 (float32's 24-bit significand holds every such integer, so each IEEE-754
add/multiply/FMA returns the exact value; by induction the whole sum is exact, in any order or
association). Any partial sum for output ``(m, n)`` adds a subset of the products, so

    |partial| <= sum_k |x[m, k] - zp| * |w[k, n]| <= sum_k |x[m, k] - zp| * wmax[k]

with ``wmax[k] = max_n |w[k, n]|``. :func:`conv_accumulate_f` bounds that *row bound* per output
pixel from the input (one GEMV over the input plus a window sum, far cheaper than the GEMM) and
runs one float32 GEMM over the whole K when it is <= 2**24 (on the zoo models it stays below
0.5 * 2**24: activations are small next to their worst case). Otherwise the K axis is cut into
chunks of at most :func:`exact_chunk_terms` terms (the worst-case bound per term), each exact,
summed in float64 (exact below 2**53; |acc| <= K * 255 * 128 < 2**31 for K <= 65,535).

Depthwise convs (one input and one output channel per group) sum at most KH*KW <= 25 * 255 *
128 < 2**24 per output in float32: one vector multiply-add per tap, exact.

int8 inputs with enough output pixels go first to ONNX Runtime's integer GEMM
(:mod:`tcc_compiler.numerics.int8_gemm`: exact int32 arithmetic, probed once per process, on
uint8 ``x + 128`` with zero point ``zp + 128``, the same differences); the float32 path above
is the fallback when that kernel is not exact on the CPU or not worth it (few rows).

int16 inputs (mixed precision, specs/quantization.md) run in float64 throughout: every product
is an integer of magnitude <= 65535 * 128 < 2**23, so any partial sum of K <= 2**30 of them
stays below 2**53 (float64's exact integer range) and the same argument makes one float64 GEMM
exact in any order. The hardware accumulator is 32-bit: the caller wraps (conv_epilogue).

int16 weights (mixed precision, CONV_CFG flags bit7) run in float64 likewise: every product
is an integer of magnitude <= 65535 * 32767 < 2**31, and a layer is given int16 weights only
when ``K * max|x - zp| * 32767 < 2**47`` (isa/spec.py ``WIDE_W_ACC_LIMIT``), so every partial
sum stays below 2**47 < 2**53 and one float64 GEMM is exact in any order. That accumulator is
64-bit on the NPU: it never wraps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.int8_gemm import MAX_K, int8_matmul, worth

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
    ``Wm = 128`` gives 514 terms.

    Args:
        max_abs_x, max_abs_w: bounds on ``|x - zp|`` and ``|w|`` (integers >= 0).

    Returns:
        The largest safe number of terms per float32 chunk (>= 1; 2**24 if a bound is 0).
    """
    per_term = max(1, int(max_abs_x) * int(max_abs_w))
    return max(1, F32_EXACT // per_term)


@dataclass(frozen=True)
class ConvWeights:
    """int8 (or int16) OHWI conv weights prepared once for the exact float32 GEMM.

    Attributes:
        w: the int8 or int16 weights [O, KH, KW, C/group] (OHWI), as given.
        group: number of groups.
        mats: per group, float32 [KH*KW*C/group, O/group] (K order KH, KW, C = OHWI; C-order
            contiguous, the float GEMM's right operand); empty for depthwise. Made from ``w``
            on first use: a conv whose GEMMs all take the integer kernel (``imats``) never
            needs it (ResNet-50: 85 MB of float32 weights and about 0.05 s of CPU each time
            its weights are prepared).
        cmax: float64 [C]: for each input channel, ``max |w|`` over its group's output channels
            and all taps (the ``wmax`` of the row bound, per channel).
        wmax: ``max |w|`` over all weights (int).
        dw: float32 [KH, KW, C] depthwise taps (one input and one output channel per group),
            else None.
        imats: per group, int8 [KH*KW*C/group, O/group] (C-contiguous; the integer GEMM's
            right operand); empty for depthwise and for int16 weights.
        memo: forms of these weights their users make once and keep as long as the weights
            (:func:`~tcc_compiler.numerics.accumulator.packed`: the integer GEMM session
            holding ``imats[0]`` packed, shared by every tile of the layer); not compared.
    """

    w: np.ndarray
    group: int
    cmax: np.ndarray
    wmax: int
    dw: np.ndarray | None
    imats: tuple[np.ndarray, ...] = ()
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def mats(self) -> tuple[np.ndarray, ...]:
        """Per group the float32 GEMM operand (see the class attributes), made once."""
        if self.dw is not None:
            return ()
        o = self.w.shape[0]
        og = o // self.group
        wf = self.w.astype(np.float32)
        return tuple(np.ascontiguousarray(wf[g * og:(g + 1) * og].reshape(og, -1).T)
                     for g in range(self.group))


def prepare_conv_weights(w: np.ndarray, group: int = 1) -> ConvWeights:
    """Prepare int8 (or int16) OHWI weights ``w`` [O, KH, KW, C/group] for
    :func:`conv_accumulate_f`.

    Raises:
        ValueError: O is not divisible by ``group``.
    """
    o, kh, kw, cg = w.shape
    if group < 1 or o % group:
        raise ValueError(f"{o} output channels not divisible by {group} groups")
    og = o // group
    a = np.abs(w.astype(np.int32))
    wmax = int(a.max(initial=0))
    # per input channel c of group g: max over the group's outputs and all taps
    cmax = a.reshape(group, og, kh * kw, cg).max(axis=(1, 2), initial=0).reshape(-1)
    if cg == 1 and og == 1:
        return ConvWeights(w, group, cmax.astype(np.float64), wmax, np.ascontiguousarray(
            w[:, :, :, 0].astype(np.float32).transpose(1, 2, 0)))
    imats = () if w.dtype.itemsize > 1 else tuple(
        np.ascontiguousarray(w[g * og:(g + 1) * og].reshape(og, -1).T) for g in range(group))
    return ConvWeights(w, group, cmax.astype(np.float64), wmax, None, imats)


def _out_len(n: int, k: int, s: int, d: int) -> int:
    return (n - ((k - 1) * d + 1)) // s + 1


def _padded(x: np.ndarray, zp: int, pads, dtype=np.float32) -> np.ndarray:
    """``x - zp`` as ``dtype`` (float32; float64 for int16 inputs) [H + top + bottom, W + left
    + right, C], padded with 0 (= the zero point)."""
    top, left, bottom, right = pads
    h, w, c = x.shape
    if top == left == bottom == right == 0:
        xs = np.empty((h, w, c), dtype)
        np.subtract(x, dtype(zp), out=xs, dtype=dtype)
        return xs
    xs = np.zeros((h + top + bottom, w + left + right, c), dtype)
    np.subtract(x, dtype(zp), out=xs[top:top + h, left:left + w], dtype=dtype)
    return xs


def _windows(xs: np.ndarray, kernel, strides, dilations) -> np.ndarray:
    """Sliding windows of a padded [H, W, C] array -> view [OH, OW, C, KH, KW]."""
    kh, kw = kernel
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    win = sliding_window_view(xs, (eh, ew), axis=(0, 1))
    return win[::strides[0], ::strides[1], :, ::dilations[0], ::dilations[1]]


def _im2col(xs: np.ndarray, kernel, strides, dilations, oh: int, ow: int) -> np.ndarray:
    """Padded float [H, W, C] -> [OH*OW, KH*KW*C] patch matrix (K order KH, KW, C = OHWI; the
    dtype of ``xs``)."""
    kh, kw = kernel
    c = xs.shape[2]
    if kh == kw == 1:
        v = xs[:(oh - 1) * strides[0] + 1:strides[0], :(ow - 1) * strides[1] + 1:strides[1]]
        return v.reshape(oh * ow, c)
    cols = np.empty((oh, ow, kh, kw, c), xs.dtype)
    sh, sw = strides
    for i in range(kh):
        y0 = i * dilations[0]
        for j in range(kw):
            x0 = j * dilations[1]
            cols[:, :, i, j] = xs[y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]
    return cols.reshape(oh * ow, kh * kw * c)


def _row_bound(xs: np.ndarray, cmax: np.ndarray, kernel, strides, dilations) -> float:
    """An upper bound of ``sum_k |x[m, k] - zp| * wmax[k]`` over all output pixels m (the
    largest partial sum of any output, module docstring): per padded input pixel
    ``s[p] = sum_c |xs[p, c]| * cmax[c]`` (an upper bound of each group's share), summed over
    each window.

    Computed in float32 (half the memory traffic of float64): every term is an exact float32
    integer (<= 255 * 128) and all terms are >= 0, so the computed sum of ``n`` terms is at
    least ``true * (1 - n u)`` with ``u = 2**-24`` in any summation order (Higham, *Accuracy
    and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4); the result is divided by
    ``1 - n u`` (float64) to stay an upper bound. Returns inf when ``n u >= 1/2``.
    """
    c = xs.shape[2]
    n = c * kernel[0] * kernel[1]
    if n * 2.0 ** -24 >= 0.5:
        return float("inf")
    a = np.abs(xs).reshape(-1, c)
    s = (a @ cmax.astype(np.float32)).reshape(xs.shape[:2])[:, :, None]
    if kernel == (1, 1):   # one pixel per window: its own sum (an FC layer's one row)
        top = float(s[::strides[0], ::strides[1]].max(initial=0.0))
    else:
        win = _windows(s, kernel, strides, dilations)          # [OH, OW, 1, KH, KW]
        top = float(win.sum(axis=(3, 4), dtype=np.float32).max(initial=0.0))
    return top / (1.0 - n * 2.0 ** -24)


def _exact_gemm(cols: np.ndarray, mat: np.ndarray, chunk: int) -> np.ndarray:
    """Exact ``cols @ mat`` (float32 integer matrices): one GEMM when ``chunk >= K``, else
    float32 GEMMs over K-chunks of ``chunk`` terms summed in float64."""
    k = cols.shape[1]
    if k <= chunk:
        return cols @ mat
    acc = None
    for k0 in range(0, k, chunk):
        part = cols[:, k0:k0 + chunk] @ mat[k0:k0 + chunk]
        if acc is None:
            acc = part.astype(np.float64)
        else:
            acc += part
    return acc


def _depthwise(xs: np.ndarray, taps: np.ndarray, strides, dilations, oh: int, ow: int,
               dtype) -> np.ndarray:
    """Depthwise accumulator: one multiply-add per tap. Each product (|.| <= 255 * 128) is
    exact in float32; the sum is exact in float32 while KH*KW * 255 * wmax <= 2**24 (any
    kernel up to 5x5), else the caller passes float64 (exact below 2**53)."""
    kh, kw, c = taps.shape
    sh, sw = strides
    acc = np.zeros((oh, ow, c), dtype)
    tmp = np.empty((oh, ow, c), xs.dtype)
    for i in range(kh):
        y0 = i * dilations[0]
        for j in range(kw):
            x0 = j * dilations[1]
            v = xs[y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]
            np.multiply(v, taps[i, j], out=tmp)
            acc += tmp
    return acc


def patches_u8(x: np.ndarray, zpu: int, kernel, strides, dilations, pads, oh: int,
               ow: int) -> np.ndarray:
    """The integer GEMM's patch matrix uint8 [OH*OW, KH*KW*C] (K order KH, KW, C = OHWI) of
    the int8 input ``x`` [H, W, C] (NHWC, any strides) with numpy: ``x + 128`` inside the
    input, ``zpu`` (the zero point + 128, 0..255) in the padding (``pads`` top, left, bottom,
    right); the matrix :func:`~tcc_compiler.numerics.jit.im2col_u8` makes in one compiled
    pass, for when the kernels are off."""
    top, left, bottom, right = pads
    h, w, c = x.shape
    xs = np.full((h + top + bottom, w + left + right, c), zpu, np.uint8)
    np.bitwise_xor(x.view(np.uint8), np.uint8(0x80), out=xs[top:top + h, left:left + w])
    return np.ascontiguousarray(_im2col(xs, kernel, strides, dilations, oh, ow))


def _accumulate_i8(x: np.ndarray, zp_x: int, cw: ConvWeights, strides, pads,
                   dilations) -> np.ndarray | None:
    """The int32 accumulator [OH, OW, O] of an int8 input through the exact integer GEMM
    (:func:`~tcc_compiler.numerics.int8_gemm.int8_matmul`) on uint8 ``x + 128`` padded with
    ``zp_x + 128``; None when that kernel is not used here (then nothing was computed)."""
    o, kh, kw, cg = cw.w.shape
    top, left, bottom, right = pads
    h, w, c = x.shape
    oh = _out_len(h + top + bottom, kh, strides[0], dilations[0])
    ow = _out_len(w + left + right, kw, strides[1], dilations[1])
    zpu = int(zp_x) + 128
    og = o // cw.group
    if oh < 1 or ow < 1 or not worth(oh * ow, kh * kw * cg, og) or kh * kw * cg > MAX_K \
            or not 0 <= zpu <= 255:
        return None
    plain = top == left == bottom == right == 0 and kh == kw == 1 and strides == (1, 1)
    xs = None
    if plain or not jit.available():
        xu = x.view(np.uint8)
        if top == left == bottom == right == 0:
            xs = np.bitwise_xor(xu, np.uint8(0x80))            # int8 v -> uint8 v + 128
        else:
            xs = np.full((h + top + bottom, w + left + right, c), zpu, np.uint8)
            np.bitwise_xor(xu, np.uint8(0x80), out=xs[top:top + h, left:left + w])
    out = None
    for g in range(cw.group):
        if xs is None:   # the same matrix in one compiled pass, no padded copy
            cols = jit.im2col_u8(x if cw.group == 1 else x[:, :, g * cg:(g + 1) * cg], zpu,
                                 (kh, kw), strides, dilations, pads, oh, ow)
        else:
            part = xs if cw.group == 1 else xs[:, :, g * cg:(g + 1) * cg]
            cols = np.ascontiguousarray(_im2col(part, (kh, kw), strides, dilations, oh, ow))
        acc = int8_matmul(cols, zpu, cw.imats[g])
        if acc is None:
            return None
        if cw.group == 1:
            return acc.reshape(oh, ow, o)
        if out is None:
            out = np.empty((oh, ow, o), np.int32)
        out[:, :, g * og:(g + 1) * og] = acc.reshape(oh, ow, og)
    return out


def _depthwise_jit(x: np.ndarray, zp_x: int, cw: ConvWeights, strides, pads,
                   dilations) -> np.ndarray | None:
    """The int32 depthwise accumulator [OH, OW, C] of an int8 input by the compiled kernel
    (:func:`~tcc_compiler.numerics.jit.depthwise`: exact int32 sums, no padded copy), or None
    without it."""
    if not jit.available():
        return None
    _, kh, kw, _ = cw.w.shape
    top, left, bottom, right = pads
    oh = _out_len(x.shape[0] + top + bottom, kh, strides[0], dilations[0])
    ow = _out_len(x.shape[1] + left + right, kw, strides[1], dilations[1])
    return jit.depthwise(x, zp_x, cw.w[:, :, :, 0].transpose(1, 2, 0), strides, pads,
                         dilations, oh, ow)


def _accumulate_f64(xs: np.ndarray, cw: ConvWeights, strides, dilations, oh: int,
                    ow: int) -> np.ndarray:
    """The accumulator of an int16 input or int16 weights (``xs``: padded float64 ``x - zp``)
    in float64, one GEMM per group (exact: module docstring)."""
    o, kh, kw, cg = cw.w.shape
    if cw.dw is not None:
        return _depthwise(xs, cw.dw.astype(np.float64), strides, dilations, oh, ow, np.float64)
    og = o // cw.group
    out = np.empty((oh, ow, o), np.float64)
    for g in range(cw.group):
        cols = _im2col(xs[:, :, g * cg:(g + 1) * cg], (kh, kw), strides, dilations, oh, ow)
        out[:, :, g * og:(g + 1) * og] = (cols @ cw.mats[g].astype(np.float64)).reshape(
            oh, ow, og)
    return out


def _int8_fast_path(x, zp_x, cw: ConvWeights, strides, pads, dilations):
    """An int8 input's accumulator from the compiled depthwise kernel or the integer GEMM
    (:func:`_depthwise_jit`, :func:`_accumulate_i8`); None when neither applies."""
    if cw.dw is not None:
        return _depthwise_jit(x, zp_x, cw, strides, pads, dilations)
    if cw.imats:
        return _accumulate_i8(x, zp_x, cw, strides, pads, dilations)
    return None


def conv_accumulate_f(x: np.ndarray, zp_x: int, cw: ConvWeights, strides=(1, 1),
                      pads=(0, 0, 0, 0), dilations=(1, 1)) -> np.ndarray:
    """Conv accumulator ``sum((x - zp_x) * w)`` (padding = zero point), exact, as floats.

    Args:
        x: int8 or int16 [H, W, C] input (NHWC, one image; any strides); int16 (or int16
            weights) runs in float64 (module docstring) and its sums may exceed 2**31 (the
            caller wraps them, or keeps them for int16 weights' 64-bit accumulator).
        zp_x: input zero point; padded positions hold zp_x, i.e. contribute 0.
        cw: the prepared weights (:func:`prepare_conv_weights`), C = group * C/group.
        strides, dilations: (h, w). pads: (top, left, bottom, right).

    Returns:
        int32 (the integer GEMM), or float32 / float64 [OH, OW, O] holding the exact integer
        accumulators (|acc| < 2**31 for int8 operands; ``astype`` to int64 is exact).

    Raises:
        ValueError: the input's channels do not match the weights, or the window does not fit.
    """
    o, kh, kw, cg = cw.w.shape
    if x.shape[2] != cg * cw.group:
        raise ValueError(f"input has {x.shape[2]} channels, weights expect {cg * cw.group}")
    wide = x.dtype.itemsize > 1 or cw.w.dtype.itemsize > 1
    if not wide:
        acc = _int8_fast_path(x, zp_x, cw, strides, pads, dilations)
        if acc is not None:
            return acc
    xs = _padded(x, zp_x, pads, np.float64 if wide else np.float32)
    oh = _out_len(xs.shape[0], kh, strides[0], dilations[0])
    ow = _out_len(xs.shape[1], kw, strides[1], dilations[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"window {kh}x{kw} does not fit the padded input {xs.shape[:2]}")
    if wide:
        return _accumulate_f64(xs, cw, strides, dilations, oh, ow)
    worst = kh * kw * cg * 255 * max(cw.wmax, 1)          # |x - zp| <= 255
    if worst > F32_EXACT and x.size:   # the tile's actual max |x - zp| (int8 reductions, cheap)
        worst = kh * kw * cg * max(int(x.max()) - zp_x, zp_x - int(x.min()), 0) * cw.wmax
    if cw.dw is not None:
        dtype = np.float32 if worst <= F32_EXACT else np.float64
        return _depthwise(xs, cw.dw, strides, dilations, oh, ow, dtype)
    chunk = kh * kw * cg
    if worst > F32_EXACT and _row_bound(xs, cw.cmax, (kh, kw), strides,
                                        dilations) > F32_EXACT:
        max_x = int(np.abs(xs).max(initial=0.0))
        chunk = exact_chunk_terms(max_x, cw.wmax)
    if cw.group == 1:
        acc = _exact_gemm(_im2col(xs, (kh, kw), strides, dilations, oh, ow), cw.mats[0], chunk)
        return acc.reshape(oh, ow, o)
    og = o // cw.group
    out = np.empty((oh, ow, o), np.float64)
    for g in range(cw.group):
        cols = _im2col(xs[:, :, g * cg:(g + 1) * cg], (kh, kw), strides, dilations, oh, ow)
        out[:, :, g * og:(g + 1) * og] = _exact_gemm(cols, cw.mats[g], chunk).reshape(oh, ow, og)
    return out
