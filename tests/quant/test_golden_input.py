"""The golden model's own input quantization (quant/golden_input.py) gives the definition's
integers (specs/quantization.md, "Input quantization (host)": float64 ``rint(x / s) + zp``,
ties to even, clipped, NCHW -> NHWC) with and without its compiled kernel, for 1, 3 and 4
channels, int8 and int16 inputs, ties, the ends of the range and beyond, float32 and float64;
and the golden model quantizes its float input with it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tcc_compiler.numerics import jit
from tcc_compiler.quant import golden_input


def _value(scale: float, zp: int, dtype: str = "int8"):
    return SimpleNamespace(quant=SimpleNamespace(scale=scale, zero_point=zp), dtype=dtype)


def _definition(x, scale, zp, dt) -> np.ndarray:
    info = np.iinfo(dt)
    q = np.rint(x.astype(np.float64) / scale) + zp
    return np.clip(q, info.min, info.max).astype(dt)[0].transpose(1, 2, 0)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("c", [1, 3, 4])
def test_golden_input_quantization_is_the_definition(compiled, c):
    if compiled and not jit.available():
        pytest.skip("needs the compiled kernels (numba)")
    r = np.random.default_rng(c)
    old = jit.set_enabled(compiled)
    try:
        for dt, dtn, scale, zp in ((np.int8, "int8", 0.5, 3), (np.int8, "int8", 0.0173, -128),
                                   (np.int16, "int16", 0.001, 0)):
            for fdt in (np.float32, np.float64):
                x = r.normal(0, 40 if dt == np.int8 else 20, (1, c, 5, 7)).astype(fdt)
                x.flat[:6] = np.array([0.5, 1.5, 2.5, -1.5, -0.5, 1e9]) * scale   # ties, beyond
                x.flat[6] = -1e9
                got = golden_input.quantize_input(x, _value(scale, zp, dtn))
                assert got.dtype == dt and got.flags.c_contiguous
                assert np.array_equal(got, _definition(x, scale, zp, dt))
    finally:
        jit.set_enabled(old)


def test_golden_input_quantization_at_a_nan_takes_numpy():
    # no integer is defined at a NaN: the kernel declines and the numpy definition decides
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[0, 1, 1, 0] = np.nan
    with np.errstate(invalid="ignore"):
        want = _definition(x, 0.5, 1, np.int8)
        got = golden_input.quantize_input(x, _value(0.5, 1))
    assert np.array_equal(np.delete(got.reshape(-1), 1 * 2 * 3 + 1),
                          np.delete(want.reshape(-1), 1 * 2 * 3 + 1))
