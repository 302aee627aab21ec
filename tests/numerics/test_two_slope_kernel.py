"""numerics.epilogue.two_slope_epilogue against its integer definition (Python integers,
element by element; the sign of wrap32(acc + bias) chooses the multiplier) and against the
float LeakyRelu rounded once."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.numerics import quantize_multiplier
from tcc_compiler.numerics.epilogue import two_slope_epilogue


def _definition(acc, bias, m, mn, s, zp, lo, hi, acc64=False):
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        a = int(acc[idx]) + int(bias[c])
        if not acc64:
            a = (a + 2 ** 31) % 2 ** 32 - 2 ** 31
        mult = int(m[c]) if a >= 0 else int(mn[c])
        y = zp + ((a * mult + (1 << (int(s[c]) - 1))) >> int(s[c]))
        out[idx] = min(max(y, lo), hi)
    return out


@pytest.mark.parametrize("dtype,wrap", [(np.int32, False), (np.float32, False),
                                        (np.int32, True)])
def test_matches_definition(dtype, wrap):
    r = np.random.default_rng(1)
    o = 5
    acc = r.integers(-40000, 40000, (3, 4, o))
    bias = r.integers(-3000, 3000, o)
    if wrap:   # acc + bias passes 2**31 on some elements: wraps negative
        acc = np.where(r.random(acc.shape) < 0.3, 2 ** 31 - 10, acc)
        bias = np.abs(bias) + 100
    m = r.integers(2 ** 30, 2 ** 31 - 1, o)
    mn = (m * 0.1).astype(np.int64)
    s = r.integers(36, 40, o)
    got = two_slope_epilogue(acc.astype(dtype), bias.astype(np.int32), m, mn, s, -3)
    want = _definition(acc, bias, m, mn, s, -3, -128, 127)
    np.testing.assert_array_equal(got.astype(np.int64), want)
    assert got.dtype == np.int8


def test_int16_output_and_64bit_accumulator():
    r = np.random.default_rng(2)
    acc = r.integers(-2 ** 40, 2 ** 40, (2, 3, 4))
    bias = r.integers(-1000, 1000, 4).astype(np.int32)
    m = r.integers(2 ** 14, 2 ** 15 - 1, 4)
    mn = m // 5
    s = np.full(4, 40)
    got = two_slope_epilogue(acc, bias, m, mn, s, 7, -32768, 32767, np.int16, acc64=True)
    want = _definition(acc, bias, m, mn, s, 7, -32768, 32767, acc64=True)
    np.testing.assert_array_equal(got.astype(np.int64), want)


def test_one_rounding_of_the_float_leakyrelu():
    """With M = real 2**S exactly representable the result is round-half-up of the float
    LeakyRelu of the real accumulator, scaled to the output grid: within half a step."""
    real, alpha = 0.0123, 0.1
    m, s = quantize_multiplier(real)
    mn = int(round(alpha * real * 2 ** s))
    acc = np.arange(-20000, 20000, 7, dtype=np.int32).reshape(-1, 1)
    y = two_slope_epilogue(acc, np.zeros(1, np.int32), np.array([m]), np.array([mn]),
                           np.array([s]), 0, -128, 127)
    f = np.where(acc >= 0, acc, alpha * acc) * real
    inside = np.abs(f) < 127
    assert np.abs(y[inside] - f[inside]).max() <= 0.5 + 1e-6
