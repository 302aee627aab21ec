"""The conv epilogue's float64 form (numerics/kernels.conv_epilogue) against its int64
definition (conv_epilogue_int64) and against plain Python integers: ties, clamps, shortcuts,
int16 outputs, per-channel shifts, and operands past the float64 bound (which must fall back
to int64, never round)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.numerics.epilogue import conv_epilogue, conv_epilogue_int64, epilogue_consts

from helpers.kernels import kernels  # noqa: F401  (the fixture: both kernel sets)

pytestmark = pytest.mark.usefixtures("kernels")


def _python(acc, bias, mult, shift, zp_y, lo, hi, sc=None, zp_sc=0, msc=None):
    """The spec's formula in Python integers (>> on ints is floor division by 2**S)."""
    out = []
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        a = int(acc[idx]) + int(bias[c])
        a = (a + 2 ** 31) % 2 ** 32 - 2 ** 31
        t = a * int(mult[c]) + (1 << (int(shift[c]) - 1))
        if sc is not None:
            t += (int(sc[idx]) - zp_sc) * int(msc[c])
        out.append(min(max((t >> int(shift[c])) + zp_y, lo), hi))
    return np.array(out).reshape(acc.shape)


def test_ties_round_half_up_in_both_forms():
    # 2.5 -> 3, -2.5 -> -2, 0.5 -> 1, -0.5 -> 0 (M = 2**30, S = 31: x / 2)
    acc = np.array([[5, -5, 1, -1, 0, 3]], np.int32)
    o = acc.shape[1]
    args = (np.zeros(o, np.int32), np.full(o, 2 ** 30), np.full(o, 31), 0)
    assert conv_epilogue(acc, *args).tolist() == [[3, -2, 1, 0, 0, 2]]
    assert conv_epilogue_int64(acc, *args).tolist() == [[3, -2, 1, 0, 0, 2]]
    consts = epilogue_consts(*args)
    assert consts is not None and consts.exact_for(5)   # the float64 path serves it
    assert conv_epilogue(acc, *args, consts=consts).tolist() == [[3, -2, 1, 0, 0, 2]]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 62), st.booleans(), st.booleans(),
       st.integers(-128, 127), st.integers(-128, 127), st.integers(0, 24))
def test_float64_form_matches_int64_definition(seed, top_shift, with_sc, wide, zp_y, lo_raw,
                                               acc_bits):
    rng = np.random.default_rng(seed)
    o = 7
    shift = rng.integers(max(1, top_shift - 8), top_shift + 1, o)
    mult = rng.integers(0, 2 ** 31, o)
    mult[0] = 1 << 30                       # exact ties for some accumulators
    acc = rng.integers(-(1 << acc_bits), (1 << acc_bits) + 1, (3, 4, o)).astype(np.int32)
    bias = rng.integers(-2 ** 20, 2 ** 20, o).astype(np.int32)
    out = np.int16 if wide else np.int8
    info = np.iinfo(out)
    zp = 0 if wide else zp_y
    lo = info.min if wide else lo_raw
    hi = info.max if wide else max(lo_raw, 100)
    sc, msc, zp_sc = None, None, 0
    if with_sc:
        sc = rng.integers(info.min, info.max + 1, (3, 4, o)).astype(out)
        msc = rng.integers(0, 2 ** 31, o)
        zp_sc = 0 if wide else int(rng.integers(-128, 128))
    ref = conv_epilogue_int64(acc, bias, mult, shift, zp, lo, hi, sc, zp_sc, msc, out)
    got = conv_epilogue(acc, bias, mult, shift, zp, lo, hi, sc, zp_sc, msc, out)
    assert got.dtype == ref.dtype == out
    np.testing.assert_array_equal(got, ref)
    # factors prepared once (the golden model's and executor's way), the int16 shortcut bound
    consts = epilogue_consts(bias, mult, shift, zp, lo, hi, msc, zp_sc, np.int16, out)
    np.testing.assert_array_equal(
        conv_epilogue(acc, bias, mult, shift, zp, lo, hi, sc, zp_sc, msc, out, consts), ref)
    small = acc[:1, :2]
    np.testing.assert_array_equal(
        conv_epilogue(small, bias, mult, shift, zp, lo, hi,
                      None if sc is None else sc[:1, :2], zp_sc, msc, out),
        _python(small, bias, mult, shift, zp, lo, hi,
                None if sc is None else sc[:1, :2], zp_sc, msc))


@pytest.mark.parametrize("acc_dtype", [np.int32, np.float32, np.float64])
def test_past_the_bound_falls_back_exactly(acc_dtype):
    # |acc| M ~ 2**30 * 2**31 = 2**61: float64 would round; the int64 path must serve it
    acc = np.array([[2 ** 30 - 1, -(2 ** 30) + 3, 12345]], np.int64).astype(acc_dtype)
    if acc_dtype is np.float32:
        acc = np.array([[2 ** 24 - 1, -(2 ** 24) + 3, 12345]], np.float32)
    bias = np.array([7, -3, 0], np.int32)
    mult = np.array([2 ** 31 - 1, 2 ** 31 - 3, 2 ** 30 + 1])
    shift = np.array([60, 61, 55])
    consts = epilogue_consts(bias, mult, shift, 0)
    amax = int(np.abs(acc).max())
    # float64 only where every channel is provably constant (dead channels: the float32 case)
    assert consts is None or not consts.exact_for(amax) or (
        consts.dead_amax is not None and not consts.m_max)
    want = _python(acc.astype(np.int64), bias, mult, shift, 0, -128, 127)
    np.testing.assert_array_equal(conv_epilogue(acc, bias, mult, shift, 0), want)


def test_float64_path_is_taken_on_typical_layers():
    # ResNet-like: |acc| < 2**22, M ~ 2**30, S ~ 40: the bound holds, float64 serves them
    mult, shift = np.full(4, 3 << 29), np.full(4, 40)
    consts = epilogue_consts(np.full(4, -5000), mult, shift, -3, -3, 127, np.full(4, 1 << 30),
                             9, np.int8)
    assert consts is not None and consts.exact_for(2 ** 21)
    assert not consts.exact_for(2 ** 31)


def test_float_accumulators_and_clamp_with_lo_above_zero_point():
    acc = np.array([[-3000.0, -1.0, 0.0, 1.0, 999.0, 5000.0]], np.float32)
    o = acc.shape[1]
    bias = np.arange(o, dtype=np.int32) - 2
    mult = np.full(o, 3 * 2 ** 28)
    shift = np.full(o, 33)
    for lo, hi, zp in ((-20, 127, -20), (-10, 40, -30), (-128, -68, -128)):
        want = _python(acc.astype(np.int64), bias, mult, shift, zp, lo, hi)
        np.testing.assert_array_equal(conv_epilogue(acc, bias, mult, shift, zp, lo, hi), want)


@pytest.mark.parametrize("with_sc", [False, True])
def test_dead_channels_keep_the_float64_path(with_sc):
    # EfficientNet-Lite0's layers: a few channels with a bias saturated near +-2**31 and
    # shifts 53-58 (constant outputs) used to send the whole layer to int64
    rng = np.random.default_rng(7)
    o = 16
    acc = rng.integers(-130000, 130000, (9, 7, o)).astype(np.int32)
    bias = rng.integers(-3000, 3000, o).astype(np.int32)
    mult, shift = rng.integers(2 ** 30, 2 ** 31, o), rng.integers(33, 40, o)
    bias[:3] = [-2147268920, 2147268920, 17]
    shift[:3] = [54, 56, 58]
    sc = msc = None
    if with_sc:
        sc = rng.integers(-128, 128, acc.shape).astype(np.int8)
        msc = rng.integers(2 ** 29, 2 ** 30, o)
        msc[:3] = 1000
    args = (bias, mult, shift, 3, 0, 127, sc, -4, msc)
    consts = epilogue_consts(bias, mult, shift, 3, 0, 127, msc, -4)
    assert consts is not None and consts.dead_amax is not None
    assert consts.exact_for(int(np.abs(acc).max()))            # float64 serves this layer
    assert not consts.exact_for(consts.dead_amax + 1)
    want = conv_epilogue_int64(acc, *args)
    np.testing.assert_array_equal(conv_epilogue(acc, *args, consts=consts), want)
    assert (want[..., 0] == 0).all() and (want[..., 1] == want[0, 0, 1]).all()   # constant
    big = acc.copy()
    big[0, 0, 0] = consts.dead_amax + 1      # past the limit: int64, still exact
    np.testing.assert_array_equal(conv_epilogue(big, *args, consts=consts),
                                  conv_epilogue_int64(big, *args))
    np.testing.assert_array_equal(conv_epilogue(big, *args, consts=consts),
                                  _python(big, bias, mult, shift, 3, 0, 127, sc, -4, msc))
