"""The depthwise kernels with int16 products (numerics/jit.py ``depthwise_routine``: rows
for stride-1 layers of few channels, pixels otherwise) and the depthwise conv's accumulator
and epilogue in one pass (``depthwise_epilogue_routine``, numerics/accumulator.py
``depthwise_epilogue``) give the bytes of the numpy definitions: the float32 accumulator of
``conv_accumulate_f`` and the int64 epilogue."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import accumulator as A
from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.epilogue import conv_epilogue_int64

pytestmark = pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")


@pytest.fixture(autouse=True)
def _kernels_on():
    old = jit.set_enabled(True)
    yield
    jit.set_enabled(old)

#: (channels, kernel, stride, dilation, pads): rows (stride 1, <= W1_MAX_CHANNELS channels)
#: and pixels (a column stride of 2, or more channels), padding on every side.
CASES = [(32, 3, 1, 1, (1, 1, 1, 1)), (40, 5, 1, 1, (2, 0, 2, 4)), (7, 3, 1, 2, (2, 2, 2, 2)),
         (24, 3, 2, 1, (0, 0, 1, 1)), (200, 5, 1, 1, (2, 2, 2, 2)), (176, 5, 2, 1, (1, 2, 2, 1)),
         (161, 3, 1, 1, (0, 1, 1, 0)), (16, 1, 1, 1, (0, 0, 0, 0))]


def _layer(rng, c: int, k: int, h: int = 9, w: int = 11):
    big = rng.integers(-128, 128, (h, 2 * w, c), dtype=np.int8)
    x = big[:, ::2]                                     # a strided [h, w, c] input
    wts = rng.integers(-128, 128, (c, k, k, 1), dtype=np.int8)
    wts[0] = -128                                       # the largest products
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    bias[1 % c] = 2 ** 31 - 5                           # acc + bias wraps at 2**31
    mult = rng.integers(1 << 28, 1 << 31, c)
    shift = rng.integers(30, 40, c)
    return x, G.prepare_conv_weights(wts, c), bias, mult, shift


@pytest.mark.parametrize("c, k, s, d, pads", CASES)
@pytest.mark.parametrize("zp", [-128, -3, 127])
def test_depthwise_routine_equals_numpy(c, k, s, d, pads, zp):
    rng = np.random.default_rng(c * 10 + k + s)
    x, cw, *_ = _layer(rng, c, k)
    args = (x, zp, cw, (s, s), pads, (d, d))
    got = G.conv_accumulate_f(*args)
    assert got.dtype == np.int32
    jit.set_enabled(False)
    want = G.conv_accumulate_f(*args)
    assert want.dtype != np.int32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c, k, s, d, pads", CASES)
@pytest.mark.parametrize("out_dtype, lo, hi", [(np.int8, -128, 127), (np.int8, -20, 90),
                                               (np.int16, -32768, 32767)])
def test_fused_depthwise_epilogue_equals_the_definition(c, k, s, d, pads, out_dtype, lo, hi):
    rng = np.random.default_rng(c + k * 3 + s)
    x, cw, bias, mult, shift = _layer(rng, c, k)
    zp, zp_y = -9, 4
    params = jit.epilogue_params(bias, mult, shift, None)
    fused = A.depthwise_epilogue(x.shape, zp, cw, (s, s), pads, (d, d), params, zp_y, lo, hi)
    assert fused is not None
    acc = A.accumulator(x.shape, zp, cw, (s, s), pads, (d, d))(x)
    oh, ow, _ = acc.shape
    box = np.full((oh + 2, ow, c + 3), 55, out_dtype)   # the output inside a larger SRAM box
    fused(x, box[1:-1, :, 2:-1])
    jit.set_enabled(False)   # the numpy accumulator, the int64 definition
    want = conv_epilogue_int64(G.conv_accumulate_f(x, zp, cw, (s, s), pads, (d, d)), bias,
                               mult, shift, zp_y, lo, hi, out_dtype=out_dtype)
    np.testing.assert_array_equal(box[1:-1, :, 2:-1], want)
    assert (box[0] == 55).all() and (box[-1] == 55).all()
    assert (box[:, :, :2] == 55).all() and (box[:, :, -1] == 55).all()


def test_fused_output_may_be_the_input_itself():
    # the kernel reads the whole input into its int16 copy before writing: an output box
    # over the input (same shape: stride 1, "same" pads) gets the bytes of a separate one
    rng = np.random.default_rng(3)
    c = 48
    x, cw, bias, mult, shift = _layer(rng, c, 3, 8, 8)
    x = np.ascontiguousarray(x)
    params = jit.epilogue_params(bias, mult, shift, None)
    fused = A.depthwise_epilogue(x.shape, 1, cw, (1, 1), (1, 1, 1, 1), (1, 1), params, 0,
                                 -128, 127)
    want = np.empty_like(x)
    fused(x, want)
    fused(x, x)
    np.testing.assert_array_equal(x, want)


def test_fused_declines_outside_its_domain():
    rng = np.random.default_rng(4)
    x, cw, bias, mult, shift = _layer(rng, 8, 3)
    params = jit.epilogue_params(bias, mult, shift, None)
    args = ((1, 1), (1, 1, 1, 1), (1, 1))
    assert A.depthwise_epilogue(x.shape, 200, cw, *args, params, 0, -128, 127) is None
    assert A.depthwise_epilogue(x.shape, 0, cw, *args, None, 0, -128, 127) is None
    gemm = G.prepare_conv_weights(rng.integers(-128, 128, (8, 3, 3, 8), dtype=np.int8), 1)
    assert A.depthwise_epilogue(x.shape, 0, gemm, *args, params, 0, -128, 127) is None
    jit.set_enabled(False)
    assert A.depthwise_epilogue(x.shape, 0, cw, *args, params, 0, -128, 127) is None


def test_a_kept_gemm_routine_outlives_the_kernels():
    """An integer-GEMM routine made while the compiled kernels are on (its patch matrix by
    the compiled im2col) still gives the numpy definition's sums after
    ``jit.set_enabled(False)``: it fed ONNX Runtime None (a missing input) before."""
    from tcc_compiler.numerics.int8_gemm import int8_session

    if int8_session() is None:
        pytest.skip("no exact integer GEMM in this ONNX Runtime")
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (12, 2 * 10, 24), dtype=np.int8)[:, ::2]   # strided [12, 10, 24]
    cw = G.prepare_conv_weights(rng.integers(-128, 128, (40, 3, 3, 24), dtype=np.int8), 1)
    args = (-128, cw, (2, 1), (1, 0, 2, 1), (1, 2))
    run = A.accumulator(x.shape, *args)
    assert isinstance(run, A.GemmRoutine)
    jit.set_enabled(False)
    np.testing.assert_array_equal(run(x), G.conv_accumulate_f(x, *args))
