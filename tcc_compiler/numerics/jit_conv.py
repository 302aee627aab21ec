"""The compiled conv accumulators (:mod:`tcc_compiler.numerics.jit`'s entry points,
re-exported there; kernels in :mod:`tcc_compiler.numerics.jit_kernels` and
:mod:`tcc_compiler.numerics.jit_dw`).

* :func:`depthwise` sums ``(x - zp) w`` over the taps inside the input in int32 (taps in the
  padding hold the zero point and add 0): |sum| <= KH KW 255 128 < 2**31 for KH KW <= 65,793,
  which the caller checks. With an int8 zero point each product is computed in int16 (|x -
  zp| <= 255, |w| <= 128: |product| <= 32,640 < 2**15, so exact) and widened before the sum:
  twice the lanes per vector of an int32 multiply.
* :func:`depthwise_epilogue_routine` runs both in one pass: a pixel's (or an output row's)
  sums start at the bias in int32 (adds wrap modulo 2**32, giving ``wrap32(acc + bias)``
  exactly) and go through :func:`~tcc_compiler.numerics.jit_epilogue.epilogue`'s int64
  formula while still in the cache.
* :func:`im2col_u8` builds the integer GEMM's patch matrix in one pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.numerics.dw_route import dw_kernel
from tcc_compiler.numerics.jit import contiguous as _c

#: Largest depthwise window whose int32 sum cannot overflow: KH KW 255 128 < 2**31.
MAX_DW_TAPS = (2 ** 31 - 1) // (255 * 128)


def depthwise(x: np.ndarray, zp: int, taps: np.ndarray, strides, pads, dilations,
              oh: int, ow: int) -> np.ndarray | None:
    """Depthwise accumulator int32 [OH, OW, C] of the int8 input ``x`` [H, W, C] (NHWC) with
    int8 ``taps`` [KH, KW, C] (padding = the zero point ``zp``), or None when the kernels are
    unavailable or the window is beyond :data:`MAX_DW_TAPS`."""
    if jit.kernels() is None or x.dtype != np.int8 or x.shape[2] != taps.shape[2]:
        return None
    # through jit: a test's patch of jit.depthwise_routine reaches this call too
    run = jit.depthwise_routine(zp, taps, strides, pads, dilations, oh, ow)
    return None if run is None else run(x)


def depthwise_routine(zp: int, taps: np.ndarray, strides, pads, dilations, oh: int,
                      ow: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """:func:`depthwise` with its kernel choice (:func:`dw_kernel`: the per-window kernel
    with sums in registers, ``jit_dw``; contiguous row runs, ``depthwise_rows``; or pixel by
    pixel, ``depthwise_px``; all with int16 products; int32 products for a zero point
    outside int8, which no int8 input has)
    and its taps made once: a routine ``f(x) -> int32 [OH, OW, C]`` for int8 ``x`` [H, W, C]
    with C = the taps' channels, or None when the kernels are unavailable, the window is
    beyond :data:`MAX_DW_TAPS` or the output is empty (numerics/accumulator.py keeps one per
    tile shape)."""
    k = jit.kernels()
    if k is None:
        return None
    kh, kw, c = taps.shape
    if kh * kw > MAX_DW_TAPS or oh < 1 or ow < 1:
        return None
    z = np.int32(zp)
    sh, sw, dh, dw = int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1])
    top, left = int(pads[0]), int(pads[1])
    kind = dw_kernel(c, (kh, kw), strides, pads, dilations, oh, ow) if -128 <= zp <= 127 \
        else "channels"
    if kind == "unrolled":
        plain = k.dw_kernels(kh, kw, sw, dw)[0]
        t16 = k.dw_padded_taps(np.asarray(taps))
        start = k.dw_sums_start(t16, zp)

        def unrolled(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every element written
            plain(_c(x), z, t16, start, sh, dh, top, left, out)
            return out
        return unrolled
    if kind == "rows":   # runs per row and tap
        tt = _tiled(taps, ow)

        def rows(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every row zeroed by the kernel
            k.depthwise_rows(_c(x), z, tt, sh, dh, dw, top, left, out)
            return out
        return rows
    if kind == "pixels":   # |x - zp| <= 255: each product exact in int16
        t16 = _c(np.asarray(taps).astype(np.int16))

        def pixels(x: np.ndarray) -> np.ndarray:
            out = np.empty((oh, ow, c), np.int32)   # every element written
            k.depthwise_px(_c(x), z, t16, sh, sw, dh, dw, top, left, out)
            return out
        return pixels
    t32 = _c(np.asarray(taps).astype(np.int32))

    def channels(x: np.ndarray) -> np.ndarray:
        out = np.zeros((oh, ow, c), np.int32)
        k.depthwise(_c(x), z, t32, sh, sw, dh, dw, top, left, out)
        return out
    return channels


def _tiled(taps: np.ndarray, ow: int) -> np.ndarray:
    """The taps int8 [KH, KW, C] as int16 [KH, KW, OW*C], repeated for each output pixel (the
    row kernels' operand, made once per routine)."""
    return np.ascontiguousarray(np.tile(np.asarray(taps).astype(np.int16), (1, 1, ow)))


def depthwise_epilogue_routine(zp: int, taps: np.ndarray, strides, pads, dilations,
                               oh: int, ow: int, params: tuple, zp_y: int, lo: int,
                               hi: int) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """A depthwise conv's accumulator and its epilogue (no shortcut) in one compiled pass
    (``depthwise_epilogue``): a routine ``f(x, out)`` writing ``epilogue(depthwise(x, ...))``
    (:func:`depthwise_routine`'s sums, :func:`epilogue_into`'s formula: the same bytes) into
    ``out`` for int8 ``x`` [H, W, C] (NHWC, any strides), without the int32 accumulator ever
    leaving the cache.

    Args:
        zp, taps, strides, pads, dilations, oh, ow: as :func:`depthwise_routine` (taps int8
            [KH, KW, C]; pads (top, left, ...)).
        params: the layer's :func:`epilogue_params` (not None), each [C].
        zp_y, lo, hi: the output zero point and clamp.

    ``out``: int8/int16 [OH, OW, C] (any strides, writeable, e.g. an SRAM box; the caller
    checks, :func:`out_fits`); it may share memory with ``x``, which the kernel reads whole
    into an int16 copy before writing. Returns None (use the two
    routines) when the kernels are unavailable, the window is beyond :data:`MAX_DW_TAPS`,
    the output empty, ``zp`` outside int8 or ``params`` not of C channels. The kernel is
    :func:`depthwise_routine`'s choice (:func:`dw_kernel`) with the epilogue per channel
    vector, row or pixel.
    """
    k = jit.kernels()
    if k is None or params is None:
        return None
    kh, kw, c = taps.shape
    if (kh * kw > MAX_DW_TAPS or oh < 1 or ow < 1 or not -128 <= zp <= 127
            or params[0].size != c):
        return None
    z = np.int32(zp)
    sh, sw, dh, dw = int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1])
    top, left = int(pads[0]), int(pads[1])
    b, m, s, rnd, _ = params
    zy, lo, hi = int(zp_y), int(lo), int(hi)
    kind = dw_kernel(c, (kh, kw), strides, pads, dilations, oh, ow)
    if kind == "unrolled":   # as depthwise_routine
        fused_k = k.dw_kernels(kh, kw, sw, dw)[1]
        t16 = k.dw_padded_taps(np.asarray(taps))
        start = k.dw_sums_start(t16, zp, b)
        ep = k.dw_epilogue_table(m, s, rnd, zy, lo, hi, t16.shape[2])

        def fused_unrolled(x: np.ndarray, out: np.ndarray) -> None:
            fused_k(_c(x), z, t16, start, sh, dh, top, left, m, s, rnd, zy, lo, hi, ep, out)
        return fused_unrolled
    if kind == "rows":   # the row kernel, as depthwise_routine
        tt = _tiled(taps, ow)

        def fused_rows(x: np.ndarray, out: np.ndarray) -> None:
            k.depthwise_rows_epilogue(_c(x), z, tt, sh, dh, dw, top, left, b, m, s, rnd, zy,
                                      lo, hi, out)
        return fused_rows
    t16 = _c(np.asarray(taps).astype(np.int16))

    def fused(x: np.ndarray, out: np.ndarray) -> None:
        k.depthwise_epilogue(_c(x), z, t16, sh, sw, dh, dw, top, left, b, m, s, rnd, zy, lo,
                             hi, out)
    return fused


def im2col_u8(x: np.ndarray, zpu: int, kernel, strides, dilations, pads, oh: int,
              ow: int) -> np.ndarray | None:
    """The integer GEMM's patch matrix uint8 [OH*OW, KH*KW*C] (K order KH, KW, C = OHWI) of
    the int8 input ``x`` [H, W, C] (NHWC, any strides) in one pass: ``x + 128`` inside the
    input, ``zpu`` (the zero point + 128) in the padding, as
    :func:`~tcc_compiler.numerics.gemm._accumulate_i8` builds it with numpy (a padded copy,
    then one strided copy per tap; a strided ``x`` is first copied packed); None when the
    kernels are unavailable."""
    k = jit.kernels()
    if k is None or x.dtype != np.int8 or not 0 <= zpu <= 255:
        return None
    kh, kw = kernel
    out = np.empty((oh * ow, kh * kw * x.shape[2]), np.uint8)
    xu = np.ascontiguousarray(x.view(np.uint8))   # a strided box: one copy, then runs
    k.im2col_u8(xu, np.uint8(zpu), int(strides[0]), int(strides[1]), int(dilations[0]),
                int(dilations[1]), int(pads[0]), int(pads[1]), int(kh), int(kw), int(ow), out)
    return out



def px4_index(h: int, w: int, kernel, strides, dilations, pads, oh: int,
              ow: int) -> np.ndarray:
    """The pixel each tap of each output reads, for :func:`im2col_px4`: intp [OH*OW*KH*KW]
    (order OH, OW, KH, KW) of ``iy * W + ix`` for a tap inside the [H, W] input, ``H * W``
    for one in the padding (``pads`` top, left, bottom, right; the tap of output (oy, ox),
    kernel position (ky, kx) reads (oy sh + ky dh - top, ox sw + kx dw - left)). numpy, made
    once per tile geometry."""
    kh, kw = kernel
    oy, ox, ky, kx = np.meshgrid(np.arange(oh), np.arange(ow), np.arange(kh), np.arange(kw),
                                 indexing="ij")
    iy = oy * strides[0] + ky * dilations[0] - pads[0]
    ix = ox * strides[1] + kx * dilations[1] - pads[1]
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    return np.ascontiguousarray(np.where(inside, iy * w + ix, h * w).astype(np.intp).reshape(-1))


def im2col_px4(x: np.ndarray, zpu: int, idx: np.ndarray, rows: int) -> np.ndarray | None:
    """The integer GEMM's patch matrix uint8 [rows, KH*KW*4] of a three-channel int8 input
    ``x`` [H, W, 3] (NHWC, any strides), each tap's three channels followed by a fourth byte
    (``zpu``, the zero point + 128: it meets a zero weight, :func:`~tcc_compiler.numerics.
    accumulator.accumulator`'s widened weights), K order KH, KW, C + 1: ``x + 128`` inside the
    input, ``zpu`` in the padding; ``idx`` is :func:`px4_index` of the tile's geometry
    (``rows`` = OH*OW). None when the kernels are unavailable or ``x`` is not int8 with three
    channels."""
    k = jit.kernels()
    if k is None or x.dtype != np.int8 or x.ndim != 3 or x.shape[2] != 3 or not 0 <= zpu <= 255:
        return None
    out = np.empty((rows, idx.size // rows), np.uint32)
    k.im2col_px4(np.ascontiguousarray(x.view(np.uint8)), np.uint8(zpu), idx, out)
    return out.view(np.uint8)
