"""int16 activations in the shared kernels: the float64 GEMM path is exact (against an int64
reference), wrapping is the 32-bit accumulator's, clamps and pool padding use int16 bounds."""

from __future__ import annotations

import numpy as np

from tcc_compiler.numerics import avgpool_int8, conv_epilogue, maxpool_int8
from tcc_compiler.numerics.eltwise import EwKind, eltwise_int8
from tcc_compiler.numerics.gemm import conv_accumulate_f, prepare_conv_weights


def _ref_conv(x, w, pads, group=1):
    """int64 direct convolution, NHWC x [H, W, C], OHWI w, stride 1."""
    t, l_, b, r = pads
    xp = np.pad(x.astype(np.int64), ((t, b), (l_, r), (0, 0)))
    o, kh, kw, cg = w.shape
    oh, ow = xp.shape[0] - kh + 1, xp.shape[1] - kw + 1
    og = o // group
    out = np.zeros((oh, ow, o), np.int64)
    for oc in range(o):
        g = oc // og
        patch = xp[:, :, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                out[:, :, oc] += patch[i:i + oh, j:j + ow] @ w[oc, i, j].astype(np.int64)
    return out


def test_int16_conv_accumulator_is_exact_full_range():
    r = np.random.default_rng(0)
    x = r.integers(-32768, 32768, (6, 7, 96)).astype(np.int16)
    w = r.choice([-127, 127], (5, 3, 3, 96)).astype(np.int8)   # worst-case magnitudes
    got = conv_accumulate_f(x, 0, prepare_conv_weights(w), pads=(1, 1, 1, 1))
    assert got.dtype == np.float64
    assert np.array_equal(got.astype(np.int64), _ref_conv(x, w, (1, 1, 1, 1)))


def test_int16_depthwise_accumulator_is_exact():
    r = np.random.default_rng(1)
    x = r.integers(-32768, 32768, (5, 5, 8)).astype(np.int16)
    w = r.integers(-127, 128, (8, 3, 3, 1)).astype(np.int8)
    got = conv_accumulate_f(x, 0, prepare_conv_weights(w, 8), pads=(1, 1, 1, 1))
    assert np.array_equal(got.astype(np.int64), _ref_conv(x, w, (1, 1, 1, 1), 8))


def test_int16_epilogue_clamps_to_int16_and_wraps_the_accumulator():
    acc = np.array([[[2.0 ** 31 - 10, 100.0, -5e5]]])    # acc + bias passes 2**31: wraps
    y = conv_epilogue(acc, np.array([20, 0, 0], np.int32), np.full(3, 1 << 30),
                      np.full(3, 31), 0, -32768, 32767, out_dtype=np.int16)
    assert y.dtype == np.int16
    wrapped = (2 ** 31 + 10) - 2 ** 32                    # -2**31 + 10
    assert y.tolist() == [[[max(-32768, round(wrapped / 2)), 50, -32768]]]


def test_int16_pools_and_add():
    x = np.array([[[-30000], [5]], [[7], [-2]]], np.int16)
    assert maxpool_int8(x, (3, 3), (1, 1), (1, 1, 1, 1))[0, 0, 0] == 7
    assert maxpool_int8(np.full((1, 1, 1), -32768, np.int16), (3, 3), (1, 1),
                        (1, 1, 1, 1))[0, 0, 0] == -32768   # pads hold the int16 minimum
    y = avgpool_int8(x, 0, (2, 2), (2, 2), (0, 0, 0, 0), 1 << 29, 31, 0, np.int16)
    assert y.dtype == np.int16 and y[0, 0, 0] == -7497    # (-29990 / 4) half up
    s = eltwise_int8(EwKind.ADD, np.array([30000], np.int16), 0, 1 << 30,
                     np.array([30000], np.int16), 0, 1 << 30, 30, 0,
                     -32768, 32767, out_dtype=np.int16)
    assert s.tolist() == [32767]                            # saturates at the int16 maximum
