"""The compiled kernels (numerics/jit.py, numba) give the numpy kernels' bytes: the epilogue
against its int64 definition on random operands (wrapping accumulators, int16 operands,
shortcuts, every shift), the depthwise accumulator against the numpy form (pads, strides,
dilations, strided inputs); out-of-domain parameters and the switch fall back to numpy."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import gemm as G
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
