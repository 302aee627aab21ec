"""GPTQ's ``H`` of a depthwise conv from shifted products of its input, per channel.

A depthwise conv's weights mix only the ``K = kh * kw`` taps of one channel, so its ``H`` is
per channel, float64 [C, K, K] (never the dense ``(C K)^2``). Entry ``(t1, t2)`` of channel
``c``, taps ``t = (i, j)`` at padded offsets ``(a, b) = (i dh, j dw)``, is

    H[c, t1, t2] = sum_{r < OH, s < OW} xp[c, r sh + a1, s sw + b1] * xp[c, r sh + a2, s sw + b2]

(``xp`` the zero-padded input). It depends on the two taps through their shift
``(a2 - a1, b2 - b1)`` and the window start: the products of one shift are summed once, as
prefix sums along the columns (per column phase ``b1 mod sw``), each tap pair's column window
is the difference of two prefix sums, and the rows likewise. Per input value that is
``kh (2 kw - 1) - kw + 1`` products (41 for 5x5) instead of ``K (K + 1) / 2`` per output
position (325) for the im2col Gram matrix, and no im2col copy. The result equals that Gram
matrix up to float64 rounding (the sums are taken in another order; products of float32
values are exact in float64).

Evaluation order: for each shift and phase, ``cs[y, v] = cs[y, v - 1] + q[y, v]``
sequentially along ``v`` (``cs[y, 0] = q[y, 0]``), a window ``[n, n + OW)`` is
``cs[y, n + OW - 1] - cs[y, n - 1]`` (``- 0.0`` for ``n = 0``); the rows of a window are summed
the same way along the row phase. The compiled kernel (:mod:`tcc_compiler.quant.hessian_dw_jit`,
numba, the ``fast`` extra) runs these operations with the channels innermost (vectorised
across channels, each channel's sums in the order above). Without numba the caller takes the
im2col Gram matrix instead (:class:`tcc_compiler.quant.weight_rounding.HessianSum`): a numpy
form of the shifts makes one pass over a float64 copy per shift and measured 2-5x slower than
that GEMM. CPU ms per input, Gram matrix (taps copy + GEMM) against this, one BLAS thread,
machine loaded: Lite0's 240 channels at 28x28 5x5 25.8 vs 3.8, 32 at 112x112 3x3 12.0 vs 3.2,
1152 at 7x7 5x5 13.8 vs 6.1, 144 at 56x56 5x5 stride 2 13.1 vs 8.9, 96 at 112x112 3x3 stride 2
13.0 vs 11.4 (:func:`shifts_cheaper` weighs a shifted product at half a Gram product, as
measured, so a stride-2 3x3 takes the shifts too). The two ``H`` differ by
float64 rounding only (about 1e-15 of the largest entry, tested).

Tried on Lite0's 16 depthwise layers (one input, CPU ms, machine loaded, 19-23 ms as it is),
each giving the same bytes and no gain beyond the load's noise: converting the padded input
to float64 once (the kernel then reads twice the bytes: 29-32 ms); the shifts of one row pair
fused into one column pass (the first row's loads shared: 21.5-26 ms), and with the channels
blocked by 128 inside it (72-84 ms: those loops are not vectorised); four columns per channel
pass between the prefix writes (24 ms); channels padded to a multiple of 32 (the vector
loop's step: 19.7-20.4 ms); four channels as scalar chains (54 ms, not vectorised). The
padding copy is about 10% of the time (an empty array with zeroed borders: the same).

Summed over inputs (:class:`DepthwiseHessianSum`), the kernel adds each input's sums into the
running [K, K, C] sum itself (the float64 additions ``sum += h`` made, without ``h``) and the
padded buffer is kept across inputs. Lite0's 16 depthwise layers on 8 inputs, thread CPU,
best of 5, loaded: 185-189 -> 174-177 ms visited as calibration does (each input's layers in
turn, so a layer's sum is out of cache when its next input comes), 191-204 -> 146-154 ms
with one layer's inputs back to back (its sum still in cache).
"""

from __future__ import annotations

import logging

import numpy as np

from tcc_compiler.numerics import jit

log = logging.getLogger(__name__)



def is_depthwise(node) -> bool:
    """Whether ``node`` (a float conv) is depthwise: one input channel per group."""
    a = node.attrs
    w = node.inputs[1].shape
    return a.group > 1 and w[1] == 1


#: How many shifted products (:func:`depthwise_hessian`, compiled) cost as much as one product
#: of the im2col Gram matrix (taps copy, float64 conversion and a batched GEMM of ``C`` tiny
#: ``K x K`` results, which runs far below the BLAS peak). Measured, CPU ms per input on this
#: machine, loaded, Gram against shifts (padding copy included): 96 channels at 112x112 3x3
#: stride 2 7.2 vs 4.5 (1.6x), 240 at 28x28 3x3 stride 2 0.86 vs 0.36 (2.4x), with 52 shifted
#: products per output position against the Gram's 45: a shifted product is about 2x cheaper.
SHIFT_PRODUCT_COST = 0.5


def shifts_cheaper(node) -> bool:
    """Whether :func:`depthwise_hessian` is cheaper than the im2col Gram matrix for the
    depthwise conv ``node``: ``kh (2 kw - 1) - kw + 1`` products per padded input value,
    each :data:`SHIFT_PRODUCT_COST` of a Gram product, against ``K (K + 1) / 2`` per output
    position. A stride-1 window always is (3x3: 13 against 45 per position), and so is a
    stride-2 one (3x3: 52 x 0.5 against 45; 5x5: 164 x 0.5 against 325); a stride-4 3x3 is
    not (208 x 0.5 against 45)."""
    kh, kw, sh, sw, dh, dw, oh, ow, (t, left, b, r) = _geometry(node.inputs[0].shape,
                                                                node.attrs)
    hp = node.inputs[0].shape[2] + t + b
    wp = node.inputs[0].shape[3] + left + r
    k = kh * kw
    shifts = (kh * (2 * kw - 1) - kw + 1) * hp * wp
    return SHIFT_PRODUCT_COST * shifts < k * (k + 1) // 2 * oh * ow


def _geometry(shape, attrs) -> tuple:
    """(kh, kw, sh, sw, dh, dw, oh, ow, pads (t, l, b, r)) of a conv on an NCHW ``shape``."""
    kh, kw = attrs.kernel
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    t, left, b, r = attrs.pads
    hp, wp = shape[2] + t + b, shape[3] + left + r
    oh = (hp - (kh - 1) * dh - 1) // sh + 1
    ow = (wp - (kw - 1) * dw - 1) // sw + 1
    return kh, kw, sh, sw, dh, dw, oh, ow, (t, left, b, r)


def padded_nhwc(x: np.ndarray, attrs, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The conv's zero-padded input, channels last, float32 [Hp, Wp + 2 M, C], with ``M =
    (kw - 1) dw`` further zero columns on both sides (so every shifted column index is in
    range), and ``M``. ``x``: float32 NCHW [1, C, H, W].

    ``out``: a buffer this function returned before for an input of the same shape and
    attributes (its borders are still zero; only the interior is written again), or None for
    a new one.
    """
    kh, kw, sh, sw, dh, dw, oh, ow, (t, left, b, r) = _geometry(x.shape, attrs)
    m = (kw - 1) * dw
    c, h, w = x.shape[1:]
    shape = (h + t + b, w + left + r + 2 * m, c)
    if out is None or out.shape != shape:
        out = np.zeros(shape, np.float32)
    out[t:t + h, m + left:m + left + w] = x[0].transpose(1, 2, 0)
    return out, m


def depthwise_hessian(x: np.ndarray, attrs) -> np.ndarray:
    """``H`` of a depthwise conv on one input: float64 [C, K, K], ``K = kh * kw`` in (kh, kw)
    order (the OIHW weight columns of one channel), symmetric.

    Args:
        x: float32 NCHW [1, C, H, W], the conv's float input.
        attrs: the conv's attributes (kernel, strides, dilations, pads; any of them).

    Returns:
        The sum over output positions of each channel's tap outer products (module docstring:
        the same as the im2col Gram matrix up to float64 rounding).

    Raises:
        RuntimeError: the compiled kernels are unavailable (:func:`kernel_available`).
    """
    return np.ascontiguousarray(depthwise_hessian_kkc(x, attrs).transpose(2, 0, 1))


def depthwise_hessian_kkc(x: np.ndarray, attrs) -> np.ndarray:
    """:func:`depthwise_hessian` in the kernel's own layout, channels last: float64
    [K, K, C] (the same values; summing these over inputs and transposing the sum once
    gives, element for element, the sum of the [C, K, K] arrays, without a transposing copy
    per input: half the time of a 1152-channel 7x7 layer's ``H``).

    Raises:
        RuntimeError: the compiled kernels are unavailable (:func:`kernel_available`).
    """
    acc = DepthwiseHessianSum(attrs)
    acc.add(x)
    return acc.kkc


class DepthwiseHessianSum:
    """The [K, K, C] ``H`` of one depthwise conv (:func:`depthwise_hessian_kkc`) summed over
    inputs in place: the first input's ``H`` stored, each later one's added entry by entry in
    the kernel (``sum[t1, t2, c] + h[t1, t2, c]``, the float64 additions of ``sum += h`` with
    a separate ``h``: the same sum bit for bit, without a new [K, K, C] array and a pass over
    it per input), the padded input buffer reused across inputs (its zero borders kept).

    Not safe for concurrent :meth:`add` calls (callers add one input at a time, in order).

    Attributes:
        kkc: float64 [K, K, C], the sum so far (None before the first :meth:`add`).
    """

    def __init__(self, attrs) -> None:
        self.attrs = attrs
        self.kkc: np.ndarray | None = None
        self._pad: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        """Add the ``H`` of one input ``x`` (float32 NCHW [1, C, H, W]).

        Raises:
            RuntimeError: the compiled kernels are unavailable (:func:`kernel_available`).
            ValueError: ``x`` has another channel count or window than the inputs before.
        """
        kern = _load()
        if kern is None:
            raise RuntimeError("depthwise_hessian needs the compiled kernels (kernel_available)")
        x = np.asarray(x, np.float32)
        geo = _geometry(x.shape, self.attrs)
        kh, kw = geo[0], geo[1]
        self._pad, m = padded_nhwc(x, self.attrs, self._pad)
        first = self.kkc is None
        shape = (kh * kw, kh * kw, self._pad.shape[2])
        if first:
            self.kkc = np.empty(shape, np.float64)
        elif self.kkc.shape != shape:   # the kernel does not check its bounds
            raise ValueError(f"depthwise H sum of {self.kkc.shape}: an input giving {shape}")
        kern.dw_hessian(self._pad, m, *geo[:8], not first, self.kkc)


def kernel_available() -> bool:
    """Whether :func:`depthwise_hessian` can run (numba installed and enabled; without it
    callers take the im2col Gram matrix, the same ``H`` up to float64 rounding)."""
    return _load() is not None


def _load():
    """The compiled kernel module, or None (numba unavailable or disabled:
    :func:`tcc_compiler.numerics.jit.available`)."""
    return jit.kernel_module("tcc_compiler.quant.hessian_dw_jit")
