"""NPU integer arithmetic (tcc_compiler.numerics) against hand-computed values and brute-force
loops written independently here (plain Python integers, no numpy tricks)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.errors import InternalError
from tcc_compiler.numerics import (SHIFT_MAX, add_int8, avgpool_int8, conv_accumulate,
                                   conv_epilogue, maxpool_int8, quantize_multiplier,
                                   quantize_multipliers_shared, requantize)
from tcc_compiler.numerics.kernels import conv_epilogue_int32

# ---- multipliers -------------------------------------------------------------------------

reals = st.floats(min_value=2.0 ** -31, max_value=2.0 ** 29, allow_nan=False,
                  allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(reals)
def test_quantize_multiplier_properties(real):
    m, s = quantize_multiplier(real)
    assert 1 <= s <= SHIFT_MAX
    assert 2 ** 30 <= m < 2 ** 31             # 31 significant bits in this range
    # M is the nearest integer to real * 2**S: error at most half a unit in the last place
    err = abs(Fraction(m) - Fraction(real) * 2 ** s)
    assert err <= Fraction(1, 2)
    assert abs(m / 2.0 ** s - real) <= real * 2.0 ** -30


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=1e-25, max_value=2.0 ** -32))
def test_quantize_multiplier_tiny_scales_clamp_shift(real):
    m, s = quantize_multiplier(real)
    assert s == SHIFT_MAX and 0 <= m < 2 ** 31
    assert abs(Fraction(m) - Fraction(real) * 2 ** s) <= Fraction(1, 2)


@pytest.mark.parametrize("k", range(-31, 30))
def test_quantize_multiplier_powers_of_two_exact(k):
    m, s = quantize_multiplier(2.0 ** k)
    assert (m, s) == (2 ** 30, 30 - k)


def test_quantize_multiplier_rounding_up_to_next_power():
    # mantissa rounds to 1.0: M renormalised to 2**30 with one less shift
    real = 1.0 - 2.0 ** -40
    assert quantize_multiplier(real) == (2 ** 30, 30)


def test_quantize_multiplier_zero_and_errors():
    assert quantize_multiplier(0.0) == (0, 1)
    for bad in (-1e-3, float("nan"), float("inf"), 2.0 ** 30):
        with pytest.raises(InternalError):
            quantize_multiplier(bad)


def test_quantize_multiplier_just_below_limit():
    real = 2.0 ** 30 - 2.0 ** -3
    try:
        _, s = quantize_multiplier(real)
    except InternalError:
        return
    assert 1 <= s <= SHIFT_MAX


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=2.0 ** -20, max_value=2.0 ** 10), min_size=1, max_size=3))
def test_shared_multipliers(rs):
    ms, s = quantize_multipliers_shared(rs)
    assert 1 <= s <= SHIFT_MAX and len(ms) == len(rs)
    assert all(0 <= m < 2 ** 31 for m in ms)
    big = ms[rs.index(max(rs))]
    assert 2 ** 30 <= big < 2 ** 31        # the biggest keeps 31 bits
    for m, r in zip(ms, rs):
        assert abs(Fraction(m) - Fraction(r) * 2 ** s) <= Fraction(1, 2)


def test_shared_multipliers_hand():
    assert quantize_multipliers_shared([0.5, 0.25]) == ([2 ** 30, 2 ** 29], 31)
    with pytest.raises(InternalError):
        quantize_multipliers_shared([0.0, 0.0])


# ---- requantize --------------------------------------------------------------------------

@pytest.mark.parametrize("x,m,s,want", [
    (5, 2 ** 30, 31, 3),       # 2.5 -> 3 (ties up)
    (-5, 2 ** 30, 31, -2),     # -2.5 -> -2 (ties toward +inf)
    (3, 2 ** 30, 31, 2),       # 1.5 -> 2
    (-3, 2 ** 30, 31, -1),     # -1.5 -> -1
    (7, 2 ** 30, 31, 4),       # 3.5 -> 4
    (-7, 2 ** 30, 31, -3),     # -3.5 -> -3
    (5, 2 ** 30, 32, 1),       # 1.25 -> 1
    (-7, 2 ** 30, 32, -2),     # -1.75 -> -2
    (-1, 2 ** 30, 31, 0),      # -0.5 -> 0
    (0, 2 ** 30, 31, 0),
    (2 ** 31 - 1, 2 ** 31 - 1, 62, 1),        # 0.99999... -> 1 (no overflow)
    (2 ** 31 - 1, 2 ** 30, 62, 0),            # 0.2499... -> 0
    (-(2 ** 31), 2 ** 31 - 1, 31, -(2 ** 31) + 1),  # no int64 overflow at the extremes
])
def test_requantize_hand_values(x, m, s, want):
    assert int(requantize(np.array([x]), m, s)[0]) == want
    assert int(requantize(x, m, s)) == want


def test_requantize_per_channel_broadcast():
    x = np.array([[5, 5, 5], [-5, -5, -5]])
    y = requantize(x, np.array([2 ** 30, 2 ** 30, 3 * 2 ** 29]), np.array([31, 32, 31]))
    assert y.tolist() == [[3, 1, 4], [-2, -1, -4]]   # 2.5, 1.25, 3.75 / -2.5, -1.25, -3.75


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2 ** 31), 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1), st.integers(1, 62))
def test_requantize_is_floor_of_value_plus_half(x, m, s):
    want = math.floor(Fraction(x * m, 2 ** s) + Fraction(1, 2))
    assert int(requantize(x, m, s)) == want


# ---- conv accumulate ---------------------------------------------------------------------

def _brute_conv(x, zp, w, strides, pads, dil, group):
    """Direct loops over NHWC x [H,W,C] and OHWI w, padding contributes 0 (= zp)."""
    h, wd, c = x.shape
    o, kh, kw, cg = w.shape
    og = o // group
    t, l, b, r = pads
    oh = (h + t + b - ((kh - 1) * dil[0] + 1)) // strides[0] + 1
    ow = (wd + l + r - ((kw - 1) * dil[1] + 1)) // strides[1] + 1
    out = np.zeros((oh, ow, o), np.int64)
    for oy, ox, oc in itertools.product(range(oh), range(ow), range(o)):
        g = oc // og
        acc = 0
        for ky, kx, ci in itertools.product(range(kh), range(kw), range(cg)):
            iy = oy * strides[0] - t + ky * dil[0]
            ix = ox * strides[1] - l + kx * dil[1]
            if 0 <= iy < h and 0 <= ix < wd:
                acc += (int(x[iy, ix, g * cg + ci]) - zp) * int(w[oc, ky, kx, ci])
        out[oy, ox, oc] = acc
    return out


@pytest.mark.parametrize("case", [
    # (H, W, C, O, k, strides, pads, dilations, group)
    (5, 6, 4, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (7, 5, 4, 6, (3, 2), (2, 1), (0, 1, 2, 0), (1, 1), 2),
    (7, 7, 6, 6, (3, 3), (1, 2), (2, 2, 2, 2), (2, 2), 6),    # depthwise, dilated
    (6, 6, 3, 5, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (8, 6, 4, 8, (2, 3), (3, 2), (1, 0, 0, 2), (2, 1), 4),
    (4, 4, 2, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),    # grouped, 2 out per group
])
def test_conv_accumulate_vs_brute_force(rng, case):
    h, w, c, o, k, s, p, d, g = case
    x = rng.integers(-128, 128, (h, w, c), dtype=np.int8)
    wt = rng.integers(-127, 128, (o, k[0], k[1], c // g), dtype=np.int8)
    zp = int(rng.integers(-128, 128))
    got = conv_accumulate(x, zp, wt, s, p, d, g)
    want = _brute_conv(x, zp, wt, s, p, d, g)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_conv_accumulate_extreme_values_exact():
    # every product at its extreme (-128 - 127) * -127 over 3x3x64 taps: exact integers
    x = np.full((3, 3, 64), -128, np.int8)
    w = np.full((2, 3, 3, 64), -127, np.int8)
    acc = conv_accumulate(x, 127, w)
    assert acc.shape == (1, 1, 2) and int(acc[0, 0, 0]) == 255 * 127 * 9 * 64


# ---- epilogues ---------------------------------------------------------------------------

def test_conv_epilogue_hand_values():
    acc = np.array([[100, 100]], np.int32)
    bias = np.array([-20, -20], np.int32)
    # channel 0: 80 / 32 = 2.5 -> 3; channel 1: 80 * 3/64 = 3.75 -> 4; zp_y = -3
    y = conv_epilogue(acc, bias, np.array([2 ** 26, 3 * 2 ** 25]), np.array([31, 31]), -3)
    assert y.dtype == np.int8 and y.tolist() == [[0, 1]]


def test_conv_epilogue_shortcut_single_rounding():
    # acc term 80/32 = 2.5, shortcut term (6-3)*0.5 = 1.5: one rounding of 4.0 gives 4,
    # two separate roundings would give 3 + 2 = 5.
    y = conv_epilogue(np.array([100], np.int32), np.array([-20], np.int32),
                      np.array([2 ** 26]), np.array([31]), -3,
                      shortcut=np.array([6], np.int8), zp_sc=3, sc_mult=np.array([2 ** 30]))
    assert int(y[0]) == 4 - 3


def test_conv_epilogue_clamp_bounds_and_relu():
    acc = np.array([-1000, 0, 1000], np.int32)
    one = np.array([2 ** 30] * 3)
    s = np.array([31] * 3)
    z = np.zeros(3, np.int32)
    assert conv_epilogue(acc, z, one, s, 0).tolist() == [-128, 0, 127]
    # relu with zp_y = -20: the clamp floor is the zero point
    assert conv_epilogue(acc, z, one, s, -20, lo=-20, hi=127).tolist() == [-20, -20, 127]
    # clip(0, 6) with scale 0.1 and zp -128: bounds (-128, -68)
    assert conv_epilogue(acc, z, one, s, -128, lo=-128, hi=-68).tolist() == [-128, -128, -68]


def test_conv_epilogue_accumulator_wraps_at_32_bits():
    acc = np.array([2 ** 31 - 1], np.int32)
    bias = np.array([1], np.int32)
    # 2**31 wraps to -2**31: the result clamps to -128, not +127
    assert int(conv_epilogue(acc, bias, np.array([1]), np.array([1]), 0)[0]) == -128
    assert int(conv_epilogue_int32(acc, bias)[0]) == -(2 ** 31)
    assert conv_epilogue_int32(np.array([7, -9], np.int32),
                               np.array([-10, 4], np.int32)).tolist() == [-3, -5]


def test_add_int8_hand_values():
    a = np.array([10, 10, 127, -128], np.int8)
    b = np.array([-4, -3, 127, -128], np.int8)
    # (a - 2) * 0.5 + b * 0.25, zp_y = -1
    y = add_int8(a, 2, 2 ** 30, b, 0, 2 ** 29, 31, -1)
    # 4 - 1 = 3 -> 2; 4 - 0.75 = 3.25 -> 3 -> 2; 62.5 + 31.75 = 94.25 -> 94 -> 93;
    # -65 - 32 = -97 -> -98
    assert y.tolist() == [2, 2, 93, -98]
    # tie: 0.5 * 1 + 0 = 0.5 -> 1 ; -0.5 -> 0
    y = add_int8(np.array([3, 1], np.int8), 2, 2 ** 30, np.array([0, 0], np.int8), 0, 2 ** 29,
                 31, 0)
    assert y.tolist() == [1, 0]
    # activation clamp
    y = add_int8(a, 2, 2 ** 30, b, 0, 2 ** 29, 31, -1, lo=0, hi=50)
    assert y.tolist() == [2, 2, 50, 0]


def test_maxpool_pads_hold_minus_128():
    x = np.array([[-100, -90], [-80, -128]], np.int8).reshape(2, 2, 1)
    y = maxpool_int8(x, (3, 3), (1, 1), (1, 1, 1, 1))
    assert y[..., 0].tolist() == [[-80, -80], [-80, -80]]
    x = np.full((2, 2, 1), -128, np.int8)
    assert maxpool_int8(x, (2, 2), (2, 2), (0, 0, 1, 1))[..., 0].tolist() == [[-128]]
    x = np.arange(16, dtype=np.int8).reshape(4, 4, 1)
    y = maxpool_int8(x, (2, 2), (2, 2))
    assert y[..., 0].tolist() == [[5, 7], [13, 15]]


def test_avgpool_hand_values():
    m, s = quantize_multiplier(0.25)
    x = np.array([[1, 2], [3, 4]], np.int8).reshape(2, 2, 1)
    # (10 - 4*0) / 4 = 2.5 -> 3, + zp_y 5
    assert int(avgpool_int8(x, 0, (2, 2), (1, 1), (0, 0, 0, 0), m, s, 5)[0, 0, 0]) == 8
    # -2.5 -> -2 (ties up)
    assert int(avgpool_int8(-x, 0, (2, 2), (1, 1), (0, 0, 0, 0), m, s, 5)[0, 0, 0]) == 3
    # zero point subtracted per element: (10 - 4*2)/4 = 0.5 -> 1
    assert int(avgpool_int8(x, 2, (2, 2), (1, 1), (0, 0, 0, 0), m, s, 0)[0, 0, 0]) == 1
    # count_include_pad: a 3x3 window with pad 1 on a 2x2 map divides by 9: 9 * (x - zp)
    m9, s9 = quantize_multiplier(1 / 9)
    xx = np.full((2, 2, 1), 20, np.int8)
    y = avgpool_int8(xx, 2, (3, 3), (1, 1), (1, 1, 1, 1), m9, s9, 0)
    assert y[..., 0].tolist() == [[8, 8], [8, 8]]          # 4 * 18 / 9 = 8
    # clamp to int8
    big = np.full((2, 2, 1), 127, np.int8)
    assert int(avgpool_int8(big, -128, (2, 2), (1, 1), (0, 0, 0, 0), m, s, 0)[0, 0, 0]) == 127
