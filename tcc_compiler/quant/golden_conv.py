"""The golden model's own conv kernels (used by :mod:`tcc_compiler.quant.golden`): a depthwise
conv's sums, epilogue and per-channel clamp, a GEMM conv's epilogue and clamp, each one call
of :mod:`tcc_compiler.quant.golden_jit`'s kernels on whole NHWC tensors (a GEMM conv's patch
matrix and sums: :mod:`tcc_compiler.quant.golden_gemm`).

Why not the executor's kernels (``numerics/jit_dw.py``, ``jit.epilogue*``, ``jit.im2col_u8``):
``tccc run --check``
compares the executor against the golden model, so a fault in a kernel both call would be
invisible to it. These are written from the definitions (specs/quantization.md), in other
loop orders, and each releases the GIL for its whole call (the golden model runs on a worker
thread beside the executor).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.numerics import jit
from tcc_compiler.quant.golden_gemm import GoldWeights


def _kernels():
    """The golden model's own compiled kernels (:mod:`tcc_compiler.quant.golden_jit`), or
    None (kernels off, numba missing)."""
    return jit.kernel_module("tcc_compiler.quant.golden_jit")


def tail_params(q, has_sc: bool) -> tuple | None:
    """The epilogue and clamp parameters of :mod:`~tcc_compiler.quant.golden_jit` for the
    ``conv_quant`` ``q`` of a conv with (``has_sc``) or without a shortcut: (b, M, S, R, Msc,
    zp_y, lo, hi, pc, cl, ch): b, M, Msc int32 [O] (Msc = M without a shortcut), S, R int64
    [O] (R = 2**(S-1)), the output zero point and layer clamp (ints), whether a per-channel
    clamp applies and its bounds cl = MIN + clamp_lo, ch = MAX - clamp_hi ([O] of the output
    type; MIN, MAX without one), or None outside the kernels' domain (a shift outside 1..62,
    a multiplier outside 0..2**31 - 1, a bias outside int32: the numpy route serves)."""
    o = np.asarray(q.bias).size
    b, m, s = (np.broadcast_to(np.asarray(v, np.int64).reshape(-1), (o,)).copy()
               for v in (q.bias, q.mult, q.shift))
    msc = (np.broadcast_to(np.asarray(q.sc_mult, np.int64).reshape(-1), (o,)).copy()
           if has_sc else m)
    if not o or s.min() < 1 or s.max() > 62 or min(m.min(), msc.min()) < 0 \
            or max(m.max(), msc.max()) >= 2 ** 31 or b.min() < -2 ** 31 or b.max() >= 2 ** 31:
        return None
    dt = q.out_dtype
    pc = q.clamp_lo is not None or q.clamp_hi is not None
    info = np.iinfo(dt)
    cl = (info.min + (0 if q.clamp_lo is None else np.asarray(q.clamp_lo, np.int64))
          + np.zeros(o, np.int64)).astype(dt)
    ch = (info.max - (0 if q.clamp_hi is None else np.asarray(q.clamp_hi, np.int64))
          + np.zeros(o, np.int64)).astype(dt)
    i32 = np.int32
    return (b.astype(i32), m.astype(i32), s, np.left_shift(np.int64(1), s - 1),
            msc.astype(i32), int(q.zp_out), int(q.act_lo), int(q.act_hi), pc, cl, ch)


#: Stride-1 depthwise convs of at most this many channels run the golden model's row kernel
#: (``golden_jit.depthwise_rows``), the others its per-window one (``window_kernel``).
#: Measured (loaded, CPU us per whole layer, median of 15, EfficientNet-Lite0's layers),
#: rows vs per-window: 112x112x32 3x3 185 vs 314, 56x56x144 3x3 228 vs 179-196, 14x14x480
#: 3x3 44 vs 32-38.
ROWS_MAX_CHANNELS = 64


def own_depthwise(q, cw: GoldWeights, c: int, strides, pads, dilations, shape: tuple):
    """A depthwise conv on the golden model's own whole-tensor kernels (one GIL-free call,
    not the executor's: :func:`~tcc_compiler.quant.golden_jit.depthwise_rows` for a stride of
    1 and at most :data:`ROWS_MAX_CHANNELS` channels, else ``window_kernel``): a routine
    ``f(x) -> y`` for int8 ``x`` [H, W, C] (NHWC, any strides), y a new int8/int16 [OH, OW, C]
    (``shape``): the sums, epilogue and per-channel clamp of ``conv_quant`` ``q`` (a plain
    epilogue: no shortcut, 32-bit accumulator, int8 weights ``cw`` prepared by
    ``golden_gemm.prepare_weights`` with ``cw.dw`` set); or None (no kernels, a window beyond
    ``jit.MAX_DW_TAPS``, parameters outside :func:`tail_params`' domain, C not O).

    Args:
        strides, dilations: (h, w). pads: (top, left, bottom, right)."""
    k = _kernels()
    p = tail_params(q, False) if k is not None else None
    o, kh, kw, _ = cw.w.shape
    if p is None or kh * kw > jit.MAX_DW_TAPS or o != c or not -128 <= int(q.zp_in) <= 127:
        return None
    w = np.ascontiguousarray(cw.w[:, :, :, 0].transpose(1, 2, 0), dtype=np.int16)
    dtype, tail = q.out_dtype, (*p[:4], *p[5:])
    sh, sw, dh, dw = int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1])
    if (sh, sw) == (1, 1) and o <= ROWS_MAX_CHANNELS:
        wt = np.ascontiguousarray(np.tile(w, (1, 1, shape[1])))
        rows = (int(q.zp_in), wt, dh, dw, int(pads[0]), int(pads[1]), *tail)

        def fused_rows(xa: np.ndarray) -> np.ndarray:
            y = np.empty(shape, dtype)
            k.depthwise_rows(np.ascontiguousarray(xa), *rows, y)
            return y
        return fused_rows
    kern = k.window_kernel(kh, kw)
    args = (int(q.zp_in), w, sh, sw, dh, dw, int(pads[0]), int(pads[1]), *tail)

    def fused(xa: np.ndarray) -> np.ndarray:
        y = np.empty(shape, dtype)
        kern(xa, *args, y)
        return y
    return fused


def own_epilogue(q, has_sc: bool):
    """The golden model's own conv epilogue and per-channel clamp (``conv_quant`` ``q``, a
    plain epilogue with (``has_sc``) or without a shortcut) in one GIL-free call
    (:func:`~tcc_compiler.quant.golden_jit.epilogue` / ``epilogue_sc``, not the executor's
    ``jit.epilogue*``): a routine ``f(acc, sc) -> y`` for int32 ``acc`` [..., O] and the
    shortcut ``sc`` (int8/int16 broadcasting to ``acc``, given exactly when ``has_sc``), y a
    new int8/int16 array shaped like ``acc``; or None (no kernels, parameters outside
    :func:`tail_params`' domain)."""
    k = _kernels()
    p = tail_params(q, has_sc) if k is not None else None
    if p is None:
        return None
    tail, msc, zp_sc, dtype = p[:4] + p[5:], p[4], int(q.zp_sc), q.out_dtype

    def run(acc: np.ndarray, sc: np.ndarray | None) -> np.ndarray:
        a2 = np.ascontiguousarray(acc).reshape(-1, acc.shape[-1])
        y = np.empty(acc.shape, dtype)
        if sc is None:
            k.epilogue(a2, *tail, y.reshape(a2.shape))
        else:
            # broadcast only when needed: np.broadcast_to costs ~5 us a call (16 a ResNet-50
            # image), the same-shaped shortcut of a residual add needs none
            s2 = (sc if sc.shape == acc.shape else np.broadcast_to(sc, acc.shape)
                  ).reshape(a2.shape)
            k.epilogue_sc(a2, *tail, s2, zp_sc, msc, y.reshape(a2.shape))
        return y
    return run
