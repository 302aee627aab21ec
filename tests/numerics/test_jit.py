"""The compiled kernels (numerics/jit.py, numba) give the numpy kernels' bytes: the epilogue
against its int64 definition on random operands (wrapping accumulators, int16 operands,
shortcuts, every shift), the depthwise accumulator against the numpy form (pads, strides,
dilations, strided inputs); out-of-domain parameters and the switch fall back to numpy."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
from tcc_compiler.numerics import int8_gemm as I
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.epilogue import conv_epilogue_int64

pytest.importorskip("numba")


@pytest.fixture(autouse=True)
def _enabled():
    old = jit.set_enabled(True)
    yield
    jit.set_enabled(old)


def _case(rng, trial):
    o = int(rng.integers(1, 40))
    shp = (int(rng.integers(1, 7)), int(rng.integers(1, 7)), o)
    big = 2 ** 31 if trial % 3 == 0 else 70000        # every third: acc + bias wraps
    acc = rng.integers(-big, big, shp).astype(np.int32)
    bias = rng.integers(-big, big, o).astype(np.int32)
    mult, shift = rng.integers(0, 2 ** 31, o), rng.integers(1, 63, o)
    od = np.int16 if trial % 4 == 1 else np.int8
    info = np.iinfo(od)
    lo, hi = int(rng.integers(info.min, 1)), int(rng.integers(0, info.max + 1))
    zp = int(rng.integers(info.min, info.max + 1))
    sc = msc = None
    zp_sc = 0
    if trial % 2:
        sdt = np.int16 if trial % 5 == 0 else np.int8
        si = np.iinfo(sdt)
        sc = rng.integers(si.min, si.max + 1, shp).astype(sdt)
        zp_sc, msc = int(rng.integers(si.min, si.max + 1)), rng.integers(0, 2 ** 31, o)
    return acc, bias, mult, shift, zp, lo, hi, sc, zp_sc, msc, od


def test_epilogue_equals_int64_definition():
    rng = np.random.default_rng(0)
    for trial in range(120):
        args = _case(rng, trial)
        got = jit.epilogue(*args)
        want = conv_epilogue_int64(*args)
        assert got.dtype == want.dtype and np.array_equal(got, want), trial


def test_epilogue_float_accumulators_wrap_like_int32():
    # an int16 input's float64 accumulator may pass 2**31: wrapped to 32 bits like the NPU
    acc = np.array([[2.0 ** 31 + 5, -(2.0 ** 31) - 7, 12345.0]]).T.repeat(2, 1)
    args = (np.array([3, -4], np.int32), np.array([2 ** 30, 2 ** 29]), np.array([33, 31]), 1)
    want = conv_epilogue_int64(acc.astype(np.int64).astype(np.int32), *args)
    np.testing.assert_array_equal(jit.epilogue(acc, *args, -128, 127, None, 0, None, np.int8),
                                  want)
    np.testing.assert_array_equal(
        jit.epilogue(acc.astype(np.float32)[2:], *args, -128, 127, None, 0, None, np.int8),
        want[2:])


def test_epilogue_outside_domain_or_disabled_returns_none():
    acc = np.zeros((2, 3), np.int32)
    b, m = np.zeros(3, np.int32), np.full(3, 1 << 30)
    assert jit.epilogue(acc, b, m, np.array([0, 5, 5]), 0, -128, 127, None, 0, None,
                        np.int8) is None
    assert jit.epilogue(acc, b, np.full(3, 2 ** 31), np.full(3, 5), 0, -128, 127, None, 0,
                        None, np.int8) is None
    jit.set_enabled(False)
    assert not jit.available()
    assert jit.epilogue(acc, b, m, np.full(3, 5), 0, -128, 127, None, 0, None, np.int8) is None


@pytest.mark.parametrize("k,stride,dil,pads", [
    (3, 1, 1, (1, 1, 1, 1)), (3, 2, 1, (0, 0, 1, 1)), (5, 2, 1, (1, 2, 2, 1)),
    (3, 1, 2, (2, 2, 2, 2)), (1, 1, 1, (0, 0, 0, 0)), (5, 1, 1, (4, 4, 4, 4))])
def test_depthwise_equals_numpy(k, stride, dil, pads):
    rng = np.random.default_rng(k * 100 + stride * 10 + dil)
    big = rng.integers(-128, 128, (11, 2 * 9 + 1, 7), dtype=np.int8)
    x = big[:, ::2]                                   # a strided [11, 10, 7] input
    w = rng.integers(-128, 128, (7, k, k, 1), dtype=np.int8)
    w[0] = -128
    cw = G.prepare_conv_weights(w, 7)
    args = (x, -3, cw, (stride, stride), pads, (dil, dil))
    got = G.conv_accumulate_f(*args)
    assert got.dtype == np.int32
    jit.set_enabled(False)
    want = G.conv_accumulate_f(*args)
    assert want.dtype != np.int32
    np.testing.assert_array_equal(got, want)


def test_without_numba_every_kernel_declines(monkeypatch):
    monkeypatch.setattr(jit, "_kernels", None)     # as when numba is missing or unusable
    assert not jit.available()
    x = np.zeros((4, 4, 3), np.int8)
    taps = np.ones((3, 3, 3), np.int8)
    assert jit.depthwise(x, 0, taps, (1, 1), (1, 1, 1, 1), (1, 1), 4, 4) is None
    assert jit.epilogue(np.zeros((2, 3), np.int32), np.zeros(3, np.int32), np.full(3, 1 << 30),
                        np.full(3, 5), 0, -128, 127, None, 0, None, np.int8) is None
    assert jit.im2col_u8(x, 128, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 4, 4) is None


@pytest.mark.parametrize("k,stride,dil,pads", [
    (3, 1, 1, (1, 1, 1, 1)), (3, 2, 1, (0, 1, 1, 0)), (7, 2, 1, (3, 3, 3, 3)),
    (3, 1, 2, (2, 0, 2, 1)), (1, 2, 1, (0, 0, 0, 0)), (1, 1, 1, (1, 0, 0, 1))])
@pytest.mark.parametrize("group", [1, 2])
def test_int8_gemm_patch_matrix_equals_numpy(monkeypatch, k, stride, dil, pads, group):
    # the compiled im2col (one pass from the strided int8 input) gives the numpy path's uint8
    # patch matrix: the integer GEMM sees the same operands, so the same int32 sums
    if I.int8_session() is None:
        pytest.skip("ONNX Runtime's int8 GEMM is not exact on this CPU")
    rng = np.random.default_rng(k * 10 + stride + group)
    x = rng.integers(-128, 128, (9, 2 * 11, 8), dtype=np.int8)[:, ::2]   # strided [9, 11, 8]
    w = rng.integers(-128, 128, (6, k, k, 8 // group), dtype=np.int8)
    seen = []
    real = G.int8_matmul

    def spy(a, za, b):
        seen.append((a.copy(), za))
        return real(a, za, b)

    monkeypatch.setattr(G, "int8_matmul", spy)
    for mod in (G, I):   # small test shapes: the integer GEMM all the same
        monkeypatch.setattr(mod, "worth", lambda m, kk, n: True)
    cw = G.prepare_conv_weights(w, group)
    args = (x, -5, cw, (stride, stride), pads, (dil, dil))
    got = G.conv_accumulate_f(*args)
    jit.set_enabled(False)
    want = G.conv_accumulate_f(*args)
    assert len(seen) == 2 * group
    for (a, za), (b, zb) in zip(seen[:group], seen[group:]):
        assert za == zb
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got, want)


def _epilogue_args(rng, shape, with_sc):
    o = shape[-1]
    acc = rng.integers(-70000, 70000, shape).astype(np.int32)
    bias = rng.integers(-1000, 1000, o).astype(np.int32)
    mult, shift = rng.integers(0, 2 ** 31, o), rng.integers(20, 40, o)
    sc = rng.integers(-128, 128, shape).astype(np.int8) if with_sc else None
    msc = rng.integers(0, 2 ** 31, o) if with_sc else None
    return acc, bias, mult, shift, 3, -128, 127, sc, -2, msc, np.int8


@pytest.mark.parametrize("with_sc", [False, True])
def test_epilogue_writes_a_strided_box(with_sc):
    # the executor hands the SRAM output box (pixel and row strides) as ``out``; with the
    # parameters prepared once (epilogue_params): the definition's bytes, written in place
    rng = np.random.default_rng(7)
    args = _epilogue_args(rng, (4, 5, 6), with_sc)
    if with_sc:   # the shortcut read from a strided box too
        box = np.zeros((4, 7, 9), np.int8)[:, 1:6, 2:8]
        box[...] = args[7]
        args = args[:7] + (box,) + args[8:]
    want = conv_epilogue_int64(*args)
    sram = np.full((4, 8, 10), 99, np.int8)
    out = sram[:, 1:6, 3:9]
    params = jit.epilogue_params(args[1], args[2], args[3], args[9])
    got = jit.epilogue(*args, params=params, out=out)
    assert got is out
    np.testing.assert_array_equal(out, want)
    rest = sram.copy()
    rest[:, 1:6, 3:9] = 99
    assert (rest == 99).all()     # nothing written outside the box


def test_epilogue_in_place_over_its_shortcut_and_overlap_declined():
    # out may be the shortcut's own elements (each read before written); a shifted overlap
    # would read bytes already written: declined (the caller's numpy path computes first)
    rng = np.random.default_rng(8)
    args = _epilogue_args(rng, (3, 4, 5), True)
    want = conv_epilogue_int64(*args)
    buf = np.zeros((3, 5, 5), np.int8)
    sc = buf[:, :4]
    sc[...] = args[7]
    got = jit.epilogue(*args[:7], sc, *args[8:], out=sc)
    assert got is sc
    np.testing.assert_array_equal(sc, want)
    buf[:, :4] = args[7]
    assert jit.epilogue(*args[:7], buf[:, :4], *args[8:], out=buf[:, 1:]) is None
    from tcc_compiler.numerics import conv_epilogue
    out = buf[:, 1:]
    conv_epilogue(*args[:7], buf[:, :4], *args[8:], out=out)
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("magnitude", [False, True])
def test_histogram_counts_equal_numpy(magnitude):
    # the compiled counting pass (jit.hist_count) gives calibration's numpy counts bit for
    # bit: values on bin edges, zeros, both ends clamped, float32 and float64 inputs
    from tcc_compiler.quant.calibrate import Histogram

    rng = np.random.default_rng(11)
    x = rng.standard_normal(50_000).astype(np.float32) * 3
    x[:200] = 0.0
    x[200:400] = np.float32(1.5)             # an edge of the histogram below
    assert jit.available() and jit.loaded()  # loaded: small inputs take the kernel too
    for dt in (np.float32, np.float64):
        hists = []
        for on in (False, True):
            jit.set_enabled(on)
            h = Histogram(64)
            h.add(np.linspace(-4, 4, 9).astype(dt), magnitude=magnitude)   # bins [-4, 4]
            h._count(x.astype(dt), magnitude)                              # beyond both ends
            h.add(x[:1000].astype(dt) * 0.5, magnitude=magnitude)
            hists.append(h.counts.copy())
        np.testing.assert_array_equal(hists[0], hists[1])
        assert hists[0].sum() > 0
    jit.set_enabled(True)
    assert jit.hist_count(np.array([np.nan], np.float32), 0.0, 1.0, 4, False) is None


def test_zero_count_and_blocked_histogram_equal_numpy():
    # the compiled zero count (jit.count_zeros, the MSE observer's) is numpy's, -0.0 counted
    # and NaN not; the blocked counting pass (bins of HIST_BLOCK values, then four
    # interleaved sub-histograms) gives numpy's bins over a length no block or 4 divides,
    # with long runs in one bin (ReLU zeros)
    from tcc_compiler.quant.calibrate import Histogram

    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal(3 * 2048 + 7), 0).astype(np.float32)
    x[5:9] = -0.0
    x[11] = np.nan
    for dt in (np.float32, np.float64):
        y = x.astype(dt)
        assert jit.count_zeros(y) == y.size - np.count_nonzero(y) > 3000
        assert jit.count_zeros(y[1:].reshape(2, -1)[:, ::3]) == \
            y[1:].reshape(2, -1)[:, ::3].size - np.count_nonzero(y[1:].reshape(2, -1)[:, ::3])
    assert jit.count_zeros(np.zeros(3, np.int32)) is None
    x[11] = 0.0
    hists = []
    for on in (False, True):
        jit.set_enabled(on)
        h = Histogram(97)
        h.add(x)
        h.add(x[:4099] * 3.0 - 1.0)
        hists.append(h.counts.copy())
    jit.set_enabled(True)
    np.testing.assert_array_equal(hists[0], hists[1])
    assert hists[0].sum() == x.size + 4099


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_quantize_nhwc_equals_numpy(dtype):
    # the compiled input quantization (jit.quantize_nhwc, behind params.quantize_input) gives
    # quantize_tensor's integers, transposed to NHWC: ties to even (x/s = k + 0.5 exactly),
    # both bounds clipped, float32 and float64 inputs, rows wider and narrower than the
    # channels; a NaN is left to numpy
    from tcc_compiler.numerics.requant import quantize_tensor

    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    for c, h, w in ((3, 5, 7), (40, 2, 3), (1, 9, 1), (7, 1, 1), (3, 3, 67)):
        s = 0.25
        x = rng.standard_normal((1, c, h, w)) * s * info.max * 0.7
        x.reshape(-1)[::3] = (np.round(x.reshape(-1)[::3] / s) + 0.5) * s   # exact ties
        x.reshape(-1)[1::7] = s * info.max * 4.0                            # above the top
        x.reshape(-1)[2::11] = -s * info.max * 4.0                          # below the bottom
        for xd in (x.astype(np.float32), x.astype(np.float64)):
            zp = 3 if dtype is np.int8 else 0
            want = np.ascontiguousarray(quantize_tensor(xd, s, zp, dtype)[0].transpose(1, 2, 0))
            got = jit.quantize_nhwc(xd, s, zp, dtype)
            assert got.dtype == dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want)
    for c in (2, 3):   # three channels take their own loop (jit_kernels.quantize_rgb)
        bad = np.zeros((1, c, 2, 5), np.float32)
        bad[0, c - 1, 1, 4] = np.nan
        assert jit.quantize_nhwc(bad, 0.1, 0, np.int8) is None


def _expr_mean_error(q, v, f):
    """Bias correction's per-channel mean error as numpy computes it (the definition)."""
    from tcc_compiler.quant.params import dequantize_output

    qd = dequantize_output(q, v).reshape(f.shape)
    return (qd.astype(np.float64) - f).mean(axis=(0, 2, 3))


@pytest.mark.parametrize("qdtype", [np.int8, np.int16, np.int32])
def test_mean_error_equals_numpy_bit_for_bit(qdtype):
    # bias correction's per-channel mean error (params.mean_output_error: the compiled
    # jit.mean_error where it applies) equals numpy's (dequantize_output(q).astype(float64) -
    # f).mean(axis=(0, 2, 3)) bit for bit, on float values spread over 2**-17..2**17 so that
    # another order of additions rounds differently: above jit.ELIDE_ELEMS (numpy sums each
    # channel in pixel order: the kernel) and below it (numpy sums pairwise: numpy), one pixel
    # (fc), one row or column, per-tensor and per-channel parameters, one channel, 256
    # channels (the kernel's padded transposition rows)
    from tcc_compiler.ir.graph import QuantParams, Value
    from tcc_compiler.quant.params import mean_output_error

    rng = np.random.default_rng(9)
    info = np.iinfo(qdtype)
    lo, hi = max(info.min, -2 ** 20), min(info.max, 2 ** 20)
    kernel = 0
    for c, h, w in ((8, 64, 64), (8, 63, 64), (16, 46, 46), (16, 45, 45), (3, 1, 11000),
                    (40, 820, 1), (40000, 1, 1), (2, 7, 5), (1, 200, 200), (256, 12, 12)):
        q = rng.integers(lo, hi, (h, w, c)).astype(qdtype)
        f = (rng.standard_normal((1, c, h, w)) * np.exp2(rng.uniform(-17, 17, (1, c, h, w)))
             ).astype(np.float32)
        for per_channel in (False, True):
            s = rng.uniform(1e-3, 1.0, c) if per_channel else 0.0173
            zp = rng.integers(-5, 5, c) if per_channel else 2
            v = Value("y", (1, c, h, w), quant=QuantParams(scale=s, zero_point=zp))
            want = _expr_mean_error(q, v, f)
            np.testing.assert_array_equal(mean_output_error(q, v, f), want)
            got = jit.mean_error(q, zp, s, f)
            assert (got is not None) == (c > 1 and q.size >= jit.ELIDE_ELEMS)
            if got is not None:
                kernel += 1
                np.testing.assert_array_equal(got, want)
                if h * w > 1:   # the data tells this order from numpy's pairwise sums
                    d = np.ascontiguousarray(dequantize(q, v, f))
                    assert not np.array_equal(d.reshape(c, -1).sum(axis=1) / (h * w), want)
    assert kernel >= 8


def dequantize(q, v, f):
    """``dequantize_output(q, v) - f`` as a float64 NCHW array."""
    from tcc_compiler.quant.params import dequantize_output

    return dequantize_output(q, v).reshape(f.shape).astype(np.float64) - f
