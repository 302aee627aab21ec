"""The int16 -> int8 lookup table of a conv's LUT epilogue (CONV_CFG flags bit3 with bit5):
257 int16 knots, linear interpolation, one rounding (numerics/lut.py build_knots /
apply_lut_wide; specs/quantization.md "int16-input lookup tables")."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.ops import LutFunc
from tcc_compiler.numerics.lut import (apply_lut_wide, build_knots, build_tables,
                                       lut_function)

ALL16 = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)


def test_knots_are_exact_and_interpolation_is_the_formula():
    """At a knot the output is the knot rounded; between knots the written formula
    (integers, half up), checked against a float64 evaluation of it on every int16."""
    k = build_knots(LutFunc.SILU, 0.0, 0.0, 8.0 / 32767, 0.05, -100)
    assert k.dtype == np.int16 and k.shape == (257,)
    y = apply_lut_wide(ALL16, k).astype(np.int64)
    u = ALL16.astype(np.int64) + 32768
    i, f = u // 256, u % 256
    ref = np.floor((k[i] * (256.0 - f) + k[i + 1].astype(np.float64) * f) / 2 ** 15 + 0.5)
    assert np.array_equal(y, np.clip(ref, -128, 127))
    at = ALL16[::256]
    assert np.array_equal(apply_lut_wide(at, k), np.clip(
        np.floor(k[:256] / 128 + 0.5), -128, 127).astype(np.int8))


@pytest.mark.parametrize("func", [LutFunc.SILU, LutFunc.SIGMOID, LutFunc.HARDSWISH,
                                  LutFunc.GELU])
def test_wide_table_error_is_the_output_rounding_only(func):
    """Against the float function on every int16 input (range +-10, the output quantized over
    the function's own range) the interpolated table is off by at most 0.5 output steps plus
    the interpolation term (at most 0.25 steps at hardswish's kinks), while the 256-entry table
    of an int8 input over the same range is off by more than a whole step more."""
    s_in = 10.0 / 32767
    x = ALL16 * s_in
    fx = lut_function(func, x)
    s_out = (fx.max() - fx.min()) / 255
    zp = int(np.rint(-128 - fx.min() / s_out))
    y = apply_lut_wide(ALL16, build_knots(func, 0.0, 0.0, s_in, s_out, zp)).astype(float)
    f = fx / s_out + zp
    inside = (f > -128) & (f < 127)
    err16 = np.abs(y - f)[inside].max()
    assert err16 <= 0.75, err16
    s8 = 20.0 / 255   # the same function through an int8 input over the same range
    q8 = np.clip(np.rint(x / s8), -128, 127).astype(np.int64)
    y8 = build_tables(func, 0.0, 0.0, s8, 0, s_out, zp)[0][q8 + 128]
    assert np.abs(y8 - f)[inside].max() > err16 + 1.0


def test_saturates_like_the_int8_table():
    k = build_knots(LutFunc.SIGMOID, 0.0, 0.0, 40.0 / 32767, 1 / 255, -128)
    y = apply_lut_wide(np.array([-32768, 0, 32767], np.int16), k)
    assert y.tolist() == [-128, 0, 127]


def test_int16_output_knots_follow_the_formula_on_every_int16_input():
    """With ``wide_out`` (CONV_CFG out_mode bit3) the knots are int16 outputs and the
    interpolation shifts by 8: the written formula (integers, half up, int16 clamp) on every
    int16 input, and exact at the knots."""
    k = build_knots(LutFunc.SILU, 0.0, 0.0, 20.0 / 32767, 20.0 / 32767, 0, wide_out=True)
    assert k.dtype == np.int16 and k.shape == (257,)
    y = apply_lut_wide(ALL16, k, wide_out=True)
    assert y.dtype == np.int16
    u = ALL16.astype(np.int64) + 32768
    i, f = u // 256, u % 256
    ref = np.floor((k[i] * (256.0 - f) + k[i + 1].astype(np.float64) * f) / 2 ** 8 + 0.5)
    assert np.array_equal(y.astype(np.int64), np.clip(ref, -32768, 32767))
    assert np.array_equal(y[::256], k[:256])


@pytest.mark.parametrize("func", [LutFunc.SILU, LutFunc.SIGMOID, LutFunc.GELU])
def test_int16_output_table_error_is_far_below_an_int8_step(func):
    """specs/quantization.md "int16 table outputs": over +-20 (s_x = 20 / 32767, s_y from the
    function's own range as the quantizer sets it) the
    int16-output table is within the interpolation bound ``max|f''| (256 s_x)**2 / 8`` plus one
    int16 step (3e-3 for GELU, 2e-3 SiLU, 4e-4 Sigmoid): under 0.1 of the int8 output step of
    the same range, whereas the int8-output table of the same int16 input is off by up to half
    that step."""
    s = 20.0 / 32767
    x = ALL16 * s
    fx = lut_function(func, x)
    sy = 2 * np.abs(fx).max() / 32767   # as quant/quantize.py activation_params_int16
    y16 = apply_lut_wide(ALL16, build_knots(func, 0.0, 0.0, s, sy, 0, True), True) * sy
    err16 = np.abs(y16 - fx).max()
    h = 256 * s
    bound = {LutFunc.SILU: 0.5, LutFunc.SIGMOID: 0.1, LutFunc.GELU: 0.8}[func] * h * h / 8 + sy
    assert err16 < bound, (err16, bound)
    s8 = (fx.max() - fx.min()) / 255
    zp = int(np.rint(-128 - fx.min() / s8))
    y8 = (apply_lut_wide(ALL16, build_knots(func, 0.0, 0.0, s, s8, zp)).astype(float) - zp) * s8
    assert err16 < 0.1 * s8 and np.abs(y8 - fx).max() > 0.4 * s8, (err16, s8)
