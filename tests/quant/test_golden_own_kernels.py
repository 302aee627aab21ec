"""The golden model's own compiled conv tails (quant/golden_conv.py, quant/golden_jit.py) give
the definition's bytes: depthwise sums in int64 numpy here, then the int64 epilogue
(``conv_epilogue_int64``) and the per-channel clamp (``channel_clamp``), over the kernels'
choices (row kernel, per-window unrolled kernel, the generic one beyond 7x7), strides,
dilations, asymmetric padding, wrapping biases, int16 outputs and shortcuts."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.isa.spec import WIDE_OUT
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.epilogue import channel_clamp, conv_epilogue_int64
from tcc_compiler.numerics.gemm import prepare_conv_weights
from tcc_compiler.quant import golden_conv
from tcc_compiler.quant.params import ConvQuant

pytestmark = pytest.mark.skipif(not jit.available(), reason="needs the compiled kernels")


def _quant(rng, o: int, wide_out: bool, clamp: bool, zp_in: int) -> ConvQuant:
    dt = np.int16 if wide_out else np.int8
    info = np.iinfo(dt)
    bias = rng.integers(-2 ** 31, 2 ** 31, o)          # some acc + bias wrap at 32 bits
    bias[::3] = rng.integers(-3000, 3000, bias[::3].size)
    shift = rng.integers(20, 40, o)
    mult = rng.integers(2 ** 28, 2 ** 31, o)
    return ConvQuant(bias=bias.astype(np.int64), mult=mult, shift=shift,
                     sc_mult=rng.integers(0, 2 ** 31, o), zp_in=zp_in,
                     zp_out=int(rng.integers(-20, 20)), zp_sc=int(rng.integers(-128, 128)),
                     act_lo=int(info.min) + 5, act_hi=int(info.max) - 3, out_int32=False,
                     wide=WIDE_OUT if wide_out else 0,
                     clamp_lo=rng.integers(0, 60, o) if clamp else None,
                     clamp_hi=rng.integers(0, 60, o) if clamp else None)


def _definition(acc: np.ndarray, q: ConvQuant, sc=None) -> np.ndarray:
    y = conv_epilogue_int64(acc, q.bias, q.mult, q.shift, q.zp_out, q.act_lo, q.act_hi, sc,
                            q.zp_sc, q.sc_mult if sc is not None else None, q.out_dtype)
    return channel_clamp(y, q.clamp_lo, q.clamp_hi)


def _dw_sums(x, zp, w, strides, pads, dilations, oh, ow) -> np.ndarray:
    """int64 [OH, OW, C]: sum of (x - zp) w over the taps inside x (w OHWI [C, KH, KW, 1])."""
    h, wd, c = x.shape
    _, kh, kw, _ = w.shape
    acc = np.zeros((oh, ow, c), np.int64)
    xc = x.astype(np.int64) - zp
    for oy in range(oh):
        for ox in range(ow):
            for ky in range(kh):
                for kx in range(kw):
                    iy = oy * strides[0] + ky * dilations[0] - pads[0]
                    ix = ox * strides[1] + kx * dilations[1] - pads[1]
                    if 0 <= iy < h and 0 <= ix < wd:
                        acc[oy, ox] += xc[iy, ix] * w[:, ky, kx, 0]
    return acc


@pytest.mark.parametrize("h, w, c, k, stride, pads, dil", [
    (9, 11, 16, 3, 1, (1, 1, 1, 1), 1),      # rows kernel (stride 1, <= 64 channels)
    (8, 8, 8, 3, 1, (2, 2, 2, 2), 2),        # rows kernel, dilated
    (7, 9, 24, 3, 1, (0, 1, 1, 0), 1),       # rows kernel, asymmetric padding
    (9, 11, 80, 3, 2, (1, 1, 1, 1), 1),      # per-window kernel, stride 2
    (10, 7, 72, 5, 1, (2, 2, 2, 2), 1),      # per-window kernel, stride 1
    (11, 9, 96, 5, 2, (1, 2, 2, 1), 2),      # per-window kernel, dilated, asymmetric
    (13, 13, 66, 9, 2, (4, 4, 4, 4), 1),     # beyond 7x7: the generic kernel
])
@pytest.mark.parametrize("wide_out, clamp", [(False, False), (False, True), (True, True)])
def test_depthwise_is_the_definition(h, w, c, k, stride, pads, dil, wide_out, clamp):
    rng = np.random.default_rng(h * 1000 + c * 10 + k + wide_out + 2 * clamp)
    zp = int(rng.integers(-128, 128))
    q = _quant(rng, c, wide_out, clamp, zp)
    wts = rng.integers(-128, 128, (c, k, k, 1)).astype(np.int8)
    wts[0] = -128                               # the extreme product (x - zp) w = -128 * 255
    x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
    x[0, 0, 0] = 127
    oh = (h + pads[0] + pads[2] - (k - 1) * dil - 1) // stride + 1
    ow = (w + pads[1] + pads[3] - (k - 1) * dil - 1) // stride + 1
    run = golden_conv.own_depthwise(q, prepare_conv_weights(wts, c), c, (stride, stride), pads,
                                    (dil, dil), (oh, ow, c))
    assert run is not None
    acc = _dw_sums(x, zp, wts, (stride, stride), pads, (dil, dil), oh, ow)
    want = _definition(acc.astype(np.int32), q)
    got = run(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)
    # a strided (non-contiguous) input view gives the same bytes
    big = np.zeros((h, w, 2 * c), np.int8)
    big[:, :, ::2] = x
    assert np.array_equal(run(big[:, :, ::2]), want)


@pytest.mark.parametrize("wide_out, clamp, sc_kind", [
    (False, False, None), (False, True, None), (True, True, None),
    (False, True, "int8"), (True, False, "int16"), (False, False, "broadcast")])
def test_epilogue_is_the_definition(wide_out, clamp, sc_kind):
    rng = np.random.default_rng(7 + wide_out + 2 * clamp + len(sc_kind or ""))
    o = 37
    q = _quant(rng, o, wide_out, clamp, 0)
    acc = rng.integers(-2 ** 31, 2 ** 31, (5, 6, o)).astype(np.int32)
    acc[0, 0] = 2 ** 31 - 1                    # wraps with a positive bias
    sc = None
    if sc_kind == "int8":
        sc = rng.integers(-128, 128, (5, 6, o)).astype(np.int8)
    elif sc_kind == "int16":
        sc = rng.integers(-2 ** 15, 2 ** 15, (5, 6, o)).astype(np.int16)
    elif sc_kind == "broadcast":
        sc = rng.integers(-128, 128, (1, 1, o)).astype(np.int8)
    run = golden_conv.own_epilogue(q, sc is not None)
    assert run is not None
    want = _definition(acc, q, None if sc is None else np.broadcast_to(sc, acc.shape))
    got = run(acc, sc)
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_outside_the_domain_declines():
    # a shift of 0 (outside 1..62) has no R = 2**(S-1): the numpy route serves
    rng = np.random.default_rng(3)
    q = _quant(rng, 8, False, False, 0)
    bad = ConvQuant(**{**q.__dict__, "shift": np.zeros(8, np.int64)})
    assert golden_conv.tail_params(bad, False) is None
    assert golden_conv.own_epilogue(bad, False) is None


@pytest.mark.parametrize("hwc,kernel,strides,dilations,pads", [
    ((16, 16, 3), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),     # a stem: 3 channels
    ((9, 11, 5), (7, 7), (2, 1), (1, 1), (3, 2, 3, 4)),      # asymmetric, window > input
    ((10, 10, 8), (3, 3), (1, 1), (2, 2), (2, 2, 2, 2)),     # dilated
    ((8, 8, 16), (1, 1), (2, 2), (1, 1), (0, 0, 0, 0)),      # 1x1 stride 2
    ((6, 7, 4), (2, 3), (1, 2), (1, 2), (0, 1, 1, 0)),
])
def test_own_patch_matrix_is_the_definition(hwc, kernel, strides, dilations, pads):
    """golden_jit.patches: row oy OW + ox holds x + 128 at each window tap (KH, KW, C
    order), the zero point + 128 in the padding (numpy's padded windows here)."""
    from tcc_compiler.quant import golden_jit

    rng = np.random.default_rng(11)
    h, w, c = hwc
    (kh, kw), (sh, sw), (dh, dw), (t, left, b, r) = kernel, strides, dilations, pads
    x = rng.integers(-128, 128, hwc).astype(np.int8)
    zp = int(rng.integers(-128, 128))
    xp = np.full((h + t + b, w + left + r, c), zp + 128, np.int64)
    xp[t:t + h, left:left + w] = x.astype(np.int64) + 128
    oh = (h + t + b - (kh - 1) * dh - 1) // sh + 1
    ow = (w + left + r - (kw - 1) * dw - 1) // sw + 1
    want = np.stack([xp[oy * sh + ky * dh, ox * sw + kx * dw]
                     for oy in range(oh) for ox in range(ow)
                     for ky in range(kh) for kx in range(kw)]).reshape(oh * ow, kh * kw * c)
    got = np.empty((oh * ow, kh * kw * c), np.uint8)
    golden_jit.patches(x, zp + 128, sh, sw, dh, dw, t, left, kh, kw, ow, got)
    np.testing.assert_array_equal(got, want)
