"""numerics/accumulator.py: the routine chosen once per input shape gives
conv_accumulate_f's int32 sums on every route (depthwise by rows and by channels, the plain
1x1 integer GEMM, the integer GEMM through the compiled im2col), and declines where
conv_accumulate_f would take another route."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.accumulator import accumulator
from tcc_compiler.numerics.int8_gemm import int8_session

needs_kernels = pytest.mark.skipif(not jit.available() or int8_session() is None,
                                   reason="numba kernels or an exact integer GEMM missing")


def _x(rng, shape, strided):
    if not strided:
        return rng.integers(-128, 128, shape, dtype=np.int8)
    h, w, c = shape
    return rng.integers(-128, 128, (h, w + 3, c), dtype=np.int8)[:, 1:w + 1]   # an SRAM box


@needs_kernels
@pytest.mark.parametrize("shape, oc, k, group, strides, pads, dil, strided", [
    ((11, 13, 16), 16, 3, 16, (1, 1), (1, 1, 1, 1), (1, 1), False),      # depthwise, rows
    ((11, 13, 80), 80, 5, 80, (2, 2), (2, 1, 2, 2), (1, 1), True),       # depthwise, channels
    ((9, 10, 96), 96, 3, 96, (1, 1), (0, 0, 0, 0), (1, 1), False),       # channels, stride 1
    ((14, 12, 40), 72, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), True),        # plain 1x1 GEMM
    ((15, 17, 24), 32, 3, 1, (2, 2), (1, 0, 1, 1), (1, 1), False),       # im2col GEMM
    ((12, 12, 32), 48, 3, 1, (1, 1), (2, 2, 2, 2), (2, 2), True),        # dilated im2col
])
def test_routine_gives_conv_accumulate_f_sums(shape, oc, k, group, strides, pads, dil,
                                              strided):
    rng = np.random.default_rng(oc + k)
    w = rng.integers(-128, 128, (oc, k, k, shape[2] // group), dtype=np.int8)
    cw = G.prepare_conv_weights(w, group)
    fn = accumulator(shape, -5, cw, strides, pads, dil)
    assert fn is not None
    for seed in range(2):   # the same routine on new inputs
        x = _x(np.random.default_rng(seed), shape, strided)
        got = fn(x)
        want = G.conv_accumulate_f(x, -5, cw, strides, pads, dil)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)


@needs_kernels
def test_declines_other_routes():
    rng = np.random.default_rng(3)
    small = G.prepare_conv_weights(rng.integers(-128, 128, (4, 1, 1, 4), dtype=np.int8))
    assert accumulator((2, 2, 4), 0, small, (1, 1), (0, 0, 0, 0), (1, 1)) is None  # tiny GEMM
    grouped = G.prepare_conv_weights(rng.integers(-128, 128, (64, 3, 3, 32), dtype=np.int8), 2)
    assert accumulator((20, 20, 64), 0, grouped, (1, 1), (1, 1, 1, 1), (1, 1)) is None
    wide = G.prepare_conv_weights(rng.integers(-300, 300, (64, 1, 1, 64)).astype(np.int16))
    assert accumulator((20, 20, 64), 0, wide, (1, 1), (0, 0, 0, 0), (1, 1)) is None
    dw = G.prepare_conv_weights(rng.integers(-128, 128, (8, 5, 5, 1), dtype=np.int8), 8)
    assert accumulator((3, 3, 8), 0, dw, (1, 1), (0, 0, 0, 0), (1, 1)) is None  # no fit
    old = jit.set_enabled(False)
    try:
        assert accumulator((9, 9, 8), 0, dw, (1, 1), (2, 2, 2, 2), (1, 1)) is None
    finally:
        jit.set_enabled(old)


@needs_kernels
def test_three_channel_input_takes_four_byte_words_with_the_same_sums():
    """A three-channel input (an image's stem) takes the widened route (each tap's pixel one
    four-byte word, its weights given a zero fourth channel, jit.im2col_px4): the sums of
    conv_accumulate_f on random geometries (kernels 1-7, strides 1-3, dilations, pads beyond
    the window, strided boxes, extreme weights and zero points); with the kernels switched off
    the numpy patch matrix is the same bytes."""
    rng = np.random.default_rng(11)
    taken = 0
    for t in range(60):
        kh, kw = (int(v) for v in rng.integers(1, 8, 2))
        strides = tuple(int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        h = int(rng.integers((kh - 1) * dil[0] + 1, 24))
        w = int(rng.integers((kw - 1) * dil[1] + 1, 24))
        pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        wt = rng.integers(-128, 128, (int(rng.integers(1, 70)), kh, kw, 3), dtype=np.int8)
        if t % 6 == 0:
            wt[:] = -128
        zp = (-128, 127, int(rng.integers(-128, 128)))[t % 3]
        cw = G.prepare_conv_weights(wt)
        fn = accumulator((h, w, 3), zp, cw, strides, pads, dil, any_size=True)
        assert fn is not None and fn.b.shape[0] == kh * kw * 4
        x = _x(rng, (h, w, 3), t % 2 == 1)
        np.testing.assert_array_equal(fn(x), G.conv_accumulate_f(x, zp, cw, strides, pads,
                                                                 dil))
        cols = fn.cols(x)
        old = jit.set_enabled(False)
        try:
            np.testing.assert_array_equal(fn.cols(x), cols)
        finally:
            jit.set_enabled(old)
        taken += 1
    assert taken == 60
